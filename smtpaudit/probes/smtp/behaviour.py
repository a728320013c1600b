"""Shared plumbing for the behaviour probes (relay, submission, enumeration, limits, smuggling).

One job: open an SMTP session the way those probes need it (greeting, EHLO with HELO fallback,
optional STARTTLS), pick the addresses they use, and turn a ProbeError into a ProbeResult. The
probes themselves only decide which commands to send and which facts to record.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar, Mapping

from smtpaudit.probes.base import (
    ProbeContext,
    ProbeError,
    ProbeResult,
    ServiceUnavailable,
    SmtpProtocolError,
)
from smtpaudit.probes.smtp.client import Reply, SmtpClient, Transcript
from smtpaudit.probes.smtp.ehlo import Capabilities, parse_ehlo
from smtpaudit.targets import Endpoint, Mode

# RFC 6761 reserves .invalid: no such domain can ever resolve, so a relay test never reaches anyone.
DEFAULT_RELAY_DOMAIN = "relaytest.invalid"


@dataclass
class Session:
    """An open, greeted connection and what the server advertised on it."""

    client: SmtpClient
    greeting: Reply
    caps: Capabilities
    tls: bool
    greeting_seconds: float
    # Set by probes that pace their errors (smtp/pacing.py); ``paced()`` then times every command.
    pacer: Any = None


def random_local_part(prefix: str = "smtpaudit") -> str:
    """A local part no real mailbox has (12 random hex digits)."""
    return f"{prefix}-{secrets.token_hex(6)}"


def relay_domain(ctx: ProbeContext) -> str:
    return str(ctx.options.get("relay_domain") or DEFAULT_RELAY_DOMAIN)


def local_domain(prior: Mapping[str, Any], endpoint: Endpoint, ctx: ProbeContext) -> str | None:
    """The domain the server most likely accepts mail for: user option, else the announced name."""
    explicit = ctx.options.get("local_domain")
    if explicit:
        return str(explicit)
    rcpt = ctx.options.get("smuggling_rcpt")
    if rcpt and "@" in str(rcpt):
        return str(rcpt).rsplit("@", 1)[1]
    for fact in ("smtp.greeting.hostname", "smtp.ehlo.hostname"):
        name = prior.get(fact)
        if isinstance(name, str) and "." in name and not name.startswith("["):
            return name.rstrip(".").lower()
    return None


def own_domains(prior: Mapping[str, Any], endpoint: Endpoint, ctx: ProbeContext) -> list[tuple[str, str]]:
    """The server's own domains, most likely local first, each with where it came from.

    Where a probe needs a domain the server treats as local (a relay control, a qualified VRFY),
    every name the server or the user associates with it is a candidate: ``--local-domain``, the mail
    domain whose MX this is, the greeting and EHLO names and their parent domains, the
    certificate's DNS names, the target host name. IP addresses and single labels are skipped.
    """
    out: list[tuple[str, str]] = []

    def add(name: Any, source: str) -> None:
        if not isinstance(name, str):
            return
        name = name.strip().rstrip(".").lower()
        if name.startswith("*."):
            name, source = name[2:], f"{source} (wildcard)"
        if "." not in name or name.startswith("[") or not all(part and len(part) < 64 for part in name.split(".")):
            return
        try:
            ipaddress.ip_address(name)
            return
        except ValueError:
            pass
        if len(name) < 254 and all(ch.isalnum() or ch in "-." for ch in name) and name not in [d for d, _ in out]:
            out.append((name, source))

    add(ctx.options.get("local_domain"), "--local-domain")
    add(endpoint.domain, "scanned mail domain")
    for fact, source in (("smtp.greeting.hostname", "greeting"), ("smtp.ehlo.hostname", "EHLO")):
        name = prior.get(fact)
        add(name, source)
        if isinstance(name, str) and name.count(".") >= 2:
            add(name.split(".", 1)[1], f"parent of the {source} name")
    for name in prior.get("tls.cert.san") or []:
        add(name, "certificate")
    add(endpoint.host, "target host")
    return out


async def open_session(
    endpoint: Endpoint,
    ctx: ProbeContext,
    transcript: Transcript,
    *,
    conn: int,
    starttls: bool = False,
) -> Session:
    """Connect, read the greeting, EHLO (HELO fallback) and, when asked and offered, STARTTLS + EHLO.

    Raises ServiceUnavailable on a non-220 greeting or a 421, ProbeError when neither EHLO nor HELO
    is accepted. The caller owns the client and must close it.
    """
    t0 = time.monotonic()
    client, greeting = await SmtpClient.open_greeted(endpoint, ctx, transcript, conn=conn)
    try:
        seconds = time.monotonic() - t0
        if greeting.code != 220:
            raise ServiceUnavailable(f"{endpoint.id}: greeting {greeting.code} {greeting.text[:200]}")
        caps = await _hello(client)
        tls = endpoint.mode is Mode.IMPLICIT
        if starttls and not tls and caps.has("STARTTLS"):
            reply = await client.starttls()
            if reply.code != 220:
                raise SmtpProtocolError(f"{endpoint.id}: STARTTLS answered {reply.code} {reply.text[:200]}", reason="starttls_refused")
            caps = await _hello(client)
            tls = True
        return Session(client, greeting, caps, tls, seconds)
    except BaseException:
        await client.close()
        raise


async def _hello(client: SmtpClient) -> Capabilities:
    reply = client.not_closing("EHLO", await client.ehlo())
    if reply.code == 250:
        return parse_ehlo(reply)
    helo = await client.command(f"HELO {client.ctx.ehlo_name}")
    if helo.code != 250:
        raise ProbeError(f"{client.endpoint.id}: neither EHLO nor HELO accepted ({reply.code}, {helo.code})")
    return Capabilities(hostname=(helo.lines[0].split() or [None])[0] if helo.lines else None)


@asynccontextmanager
async def session(
    endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript, result: ProbeResult, *, starttls: bool = False
) -> AsyncIterator[Session]:
    """``open_session`` that counts the connection and always closes it (QUIT when still usable)."""
    conn = result.connections
    result.connections += 1
    s = await open_session(endpoint, ctx, transcript, conn=conn, starttls=starttls)
    result.connections += s.client.busy_retries
    try:
        yield s
    finally:
        await s.client.quit()


def short(reply: Reply | None, limit: int = 200) -> str | None:
    return None if reply is None else reply.text[:limit]


def session_failed(prior: Mapping[str, Any]) -> str | None:
    """Why the smtp.session probe found the server unusable, or None.

    Inside a scan ``prior`` always holds the endpoint facts and, once smtp.session ran, the greeting
    code; without a 220 greeting every further connection would only wait for the same timeouts.
    """
    if "endpoint.host" not in prior:
        return None  # run on its own (tests, library use): nothing to go by
    code = prior.get("smtp.greeting.code")
    if code == 220:
        return None
    return f"the smtp.session probe got no usable greeting ({code if code is not None else 'no connection'})"


async def run_guarded(
    name: str,
    ctx: ProbeContext,
    body: Callable[[ProbeResult, Transcript], Awaitable[None]],
    prior: Mapping[str, Any] | None = None,
) -> ProbeResult:
    """Run ``body`` and turn any ProbeError into an error result that keeps the facts gathered so far.

    When the session probe already found the endpoint unusable, nothing is sent and the result is
    an error ``endpoint_unusable`` (the rules then say why they were not evaluated).
    """
    result = ProbeResult(probe=name)
    why = session_failed(prior or {})
    if why:
        result.status, result.error_reason, result.error_message = "error", "endpoint_unusable", why
        return result
    transcript = Transcript(ctx.secrets)
    started = time.monotonic()
    try:
        await body(result, transcript)
    except ProbeError as exc:
        result.status = "error"
        result.error_reason = exc.reason
        result.error_message = exc.message
    finally:
        result.transcript = transcript.lines
        result.duration = time.monotonic() - started
    return result


class BehaviourProbe:
    """Base of the behaviour probes: ``run`` wraps ``_observe`` in the shared guard (greeting check,
    error-to-fact conversion, transcript, timing) so each probe only says what it observes."""

    name: ClassVar[str]
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        async def body(result: ProbeResult, transcript: Transcript) -> None:
            await self._observe(endpoint, ctx, prior, result, transcript)

        return await run_guarded(self.name, ctx, body, prior)

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any],
                       result: ProbeResult, transcript: Transcript) -> None:
        raise NotImplementedError
