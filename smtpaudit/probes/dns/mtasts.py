"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record, the HTTPS policy fetch, and MX pattern matching.

The fetch follows section 3.3: ``https://mta-sts.<domain>/.well-known/mta-sts.txt``, a PKIX-valid
certificate for that name, HTTP 200, ``text/plain``, no redirects. It connects to the address the
configured DNS gives for the policy host (so a lab resolver works) and caps time and size.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from smtpaudit.probes.dns.names import name_problem

MAX_POLICY = 64 * 1024  # RFC 8461 sets no limit; real policies are a few hundred bytes
MAX_HEADERS = 16 * 1024
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: max_age is at most one year
POLICY_PATH = "/.well-known/mta-sts.txt"


_EXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")  # sts-ext-name / sts-policy-ext-name
_EXT_VALUE = re.compile(r"^[\x21-\x3a\x3c\x3e-\x7e]+$")  # sts-ext-value: no ';', '=' or space
MODES = ("enforce", "testing", "none")


def is_sts_txt(txt: str) -> bool:
    """RFC 8461 3.1: records that do not begin with ``v=STSv1;`` are discarded (a bare
    ``v=STSv1`` is not a record, and the version is case-sensitive)."""
    return txt.startswith("v=STSv1;")


def parse_txt(record: str) -> tuple[str | None, list[str]]:
    """Return (id, errors) for one ``v=STSv1; id=...`` record (RFC 8461 3.1 ABNF)."""
    errors: list[str] = []
    fields = [f.strip(" \t") for f in record[:4096].split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # one trailing delimiter is allowed
    tags: dict[str, str] = {}
    for f in fields[1:]:
        name, sep, value = f.partition("=")
        if not sep or not name:
            errors.append(f"{f!r} is not name=value")
            continue
        if name in tags:
            errors.append(f"field {name} appears more than once")
            continue
        tags[name] = value
        if name != "id" and not (_EXT_NAME.match(name) and _EXT_VALUE.match(value)):
            errors.append(f"extension field {f!r} is not valid (name: 1-32 letters, digits, _ - .; value: visible characters)")
    ident = tags.get("id")
    if ident is None:
        errors.append("required field id is missing")
    elif not re.fullmatch(r"[A-Za-z0-9]{1,32}", ident):
        errors.append(f"id {ident!r} must be 1-32 letters or digits")
    return ident, errors


def mx_pattern_problem(pattern: str) -> str | None:
    """RFC 8461 3.2 ``sts-policy-mx-value = ["*."] Domain``: a host name, optionally with one
    ``*`` as its whole leftmost label."""
    problem = name_problem(pattern, wildcard=True)
    return f"mx {pattern!r} is not a valid pattern: {problem}" if problem else None


@dataclass
class Policy:
    version: str | None = None
    mode: str | None = None
    mx: list[str] = field(default_factory=list)
    max_age: int | None = None
    errors: list[str] = field(default_factory=list)


def parse_policy(text: str) -> Policy:
    """Parse the policy body: ``key: value`` lines (CRLF or LF), section 3.2."""
    pol = Policy()
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep:
            pol.errors.append(f"line {n}: {line[:80]!r} is not key: value")
            continue
        if key in seen and key != "mx":
            pol.errors.append(f"line {n}: {key} appears more than once")
            continue
        seen.add(key)
        if key == "version":
            pol.version = value
        elif key == "mode":
            pol.mode = value
        elif key == "mx":
            problem = mx_pattern_problem(value)
            if problem:
                pol.errors.append(f"line {n}: {problem}")
            pol.mx.append(value.lower().rstrip("."))
        elif key == "max_age":
            if re.fullmatch(r"[0-9]{1,10}", value):
                pol.max_age = int(value)
            else:
                pol.errors.append(f"line {n}: max_age {value!r} is not a number")
        # Unknown keys are allowed (extensions) and ignored.
    if pol.version != "STSv1":
        pol.errors.append(f"version is {pol.version!r}, expected STSv1")
    if pol.mode not in MODES:
        pol.errors.append(f"mode is {pol.mode!r}, expected enforce, testing or none")
    if pol.max_age is None:
        if "max_age" not in seen:
            pol.errors.append("max_age is missing")
    elif pol.max_age > MAX_AGE_LIMIT:
        pol.errors.append(f"max_age {pol.max_age} exceeds {MAX_AGE_LIMIT} (one year)")
    if not pol.mx and pol.mode in ("enforce", "testing"):
        pol.errors.append("no mx patterns")
    return pol


def mx_matches(pattern: str, host: str) -> bool:
    """Section 4.1: exact match, or ``*.`` matching exactly one leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def uncovered(patterns: list[str], hosts: list[str], mode: str | None = "enforce") -> list[str]:
    """MX hosts no pattern matches. Under ``mode: none`` (or an unknown mode) senders apply no
    policy at all (RFC 8461 5), so no host is left uncovered."""
    if mode not in ("enforce", "testing"):
        return []
    return [h for h in hosts if not any(mx_matches(p, h) for p in patterns)]


@dataclass
class Fetch:
    url: str
    address: str | None = None
    status: int | None = None
    content_type: str | None = None
    body: str | None = None
    error: str | None = None  # short token: dns tls_verify tls connect timeout http_status content_type too_large redirect protocol
    message: str | None = None


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def fetch_policy(host: str, addresses: list[str], *, port: int = 443, ca_file: str | None = None,
                       timeout: float = 10.0) -> Fetch:
    """GET the policy from the first reachable address of ``host`` with certificate validation."""
    url = f"https://{host}{'' if port == 443 else f':{port}'}{POLICY_PATH}"
    res = Fetch(url=url)
    if not addresses:
        res.error, res.message = "dns", f"{host} has no address"
        return res
    ctx = _ssl_context(ca_file)
    last: Fetch | None = None
    for addr in addresses:
        res = Fetch(url=url, address=addr)
        try:
            await asyncio.wait_for(_get(res, addr, host, port, ctx), timeout)
        except asyncio.TimeoutError:
            res.error, res.message = "timeout", f"no complete answer from {addr} within {timeout}s"
        if res.error not in ("connect", "timeout"):
            return res
        last = res
    return last or res


async def _get(res: Fetch, addr: str, host: str, port: int, ctx: ssl.SSLContext) -> None:
    try:
        reader, writer = await asyncio.open_connection(addr, port, ssl=ctx, server_hostname=host,
                                                       limit=MAX_HEADERS)
    except ssl.SSLCertVerificationError as exc:
        res.error, res.message = "tls_verify", f"certificate of {host} not valid: {exc.verify_message}"
        return
    except ssl.SSLError as exc:
        res.error, res.message = "tls", f"TLS with {host} failed: {exc.reason or exc}"
        return
    except OSError as exc:
        res.error, res.message = "connect", f"cannot connect to {addr}:{port}: {exc.strerror or exc}"
        return
    try:
        # HTTP/1.0 so the server closes the connection and never uses chunked encoding.
        req = (f"GET {POLICY_PATH} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: smtpaudit\r\n"
               "Accept: text/plain\r\nConnection: close\r\n\r\n")
        writer.write(req.encode("ascii"))
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            res.error, res.message = "too_large", "HTTP headers larger than 16 KiB"
            return
        except asyncio.IncompleteReadError:
            res.error, res.message = "protocol", "connection closed before the HTTP headers ended"
            return
        lines = head.decode("iso-8859-1").split("\r\n")
        m = re.match(r"^HTTP/\d\.\d (\d{3})", lines[0])
        if not m:
            res.error, res.message = "protocol", f"not an HTTP response: {lines[0][:80]!r}"
            return
        res.status = int(m.group(1))
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        res.content_type = headers.get("content-type")
        if 300 <= res.status < 400:
            res.error = "redirect"
            res.message = f"HTTP {res.status} redirect to {headers.get('location', '?')[:200]} (RFC 8461 3.3: not followed)"
            return
        if res.status != 200:
            res.error, res.message = "http_status", f"HTTP {res.status}"
            return
        body = await reader.read(MAX_POLICY + 1)
        while len(body) <= MAX_POLICY:
            chunk = await reader.read(MAX_POLICY + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_POLICY:
            res.error, res.message = "too_large", f"policy larger than {MAX_POLICY} bytes"
            return
        res.body = body.decode("utf-8", "replace")
        media = (res.content_type or "").split(";")[0].strip().lower()
        if media != "text/plain":
            res.error, res.message = "content_type", f"Content-Type {res.content_type!r}, expected text/plain"
    except (OSError, ssl.SSLError) as exc:
        res.error, res.message = "protocol", f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


def policy_facts(fetch: Fetch | None) -> dict[str, Any]:
    """Facts common to every outcome of a fetch (used by the probe)."""
    if fetch is None:
        return {}
    return {
        "mta_sts.policy.url": fetch.url,
        "mta_sts.policy.fetched": fetch.error is None,
        "mta_sts.policy.fetch_error": fetch.error,
        "mta_sts.policy.fetch_message": fetch.message,
        "mta_sts.policy.http_status": fetch.status,
        "mta_sts.policy.content_type": fetch.content_type,
    }
