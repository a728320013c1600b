"""A small DNS client that turns every outcome into data: an answer, NODATA, NXDOMAIN, SERVFAIL,
REFUSED or a timeout. It always asks with the DO bit (so RRSIGs come back for our own DNSSEC
validation) and the CD bit (so a validating resolver hands us bogus data to judge instead of a
bare SERVFAIL). It works against a recursive resolver or, in the lab, an authoritative server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from smtpaudit.probes.dns.spec import ResolverSpecError, configured_nameservers, parse_resolver

__all__ = ["DnsClient", "Lookup", "ResolverSpecError", "parse_resolver", "system_nameservers"]

# Statuses a Lookup may have; rules and facts use these exact words.
STATUSES = ("ok", "nodata", "nxdomain", "servfail", "refused", "timeout", "error")

MAX_CNAME_CHAIN = 8


def system_nameservers() -> list[tuple[str, int]]:
    """Nameservers from /etc/resolv.conf (empty list when there is none)."""
    try:
        res = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration:
        return []
    return [(ns, res.port) for ns in res.nameservers if isinstance(ns, str)]


@dataclass
class Lookup:
    """One question and what came back. ``rrset``/``rrsigs`` are set only when status is ``ok``."""

    name: str
    rdtype: str
    status: str
    rrset: dns.rrset.RRset | None = None
    rrsigs: dns.rrset.RRset | None = None
    # CNAMEs followed to reach the answer (owner, target), with their signatures for validation.
    cnames: list[tuple[dns.rrset.RRset, dns.rrset.RRset | None]] = field(default_factory=list)
    response: dns.message.Message | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def exists(self) -> bool:
        """The name exists (answer or NODATA)."""
        return self.status in ("ok", "nodata")

    @property
    def failed(self) -> bool:
        """The lookup did not give a usable answer either way (SERVFAIL, timeout, ...)."""
        return self.status not in ("ok", "nodata", "nxdomain")

    def texts(self) -> list[str]:
        return [r.to_text() for r in self.rrset] if self.rrset is not None else []

    def txt_strings(self) -> list[str]:
        """TXT records as strings: the character-strings of each record joined (RFC 7208 3.3)."""
        if self.rrset is None:
            return []
        out = []
        for r in self.rrset:
            out.append(b"".join(r.strings).decode("utf-8", "replace"))
        return out

    def describe(self) -> str:
        """One line for transcripts and error messages."""
        if self.ok:
            return f"{self.name} {self.rdtype}: " + "; ".join(self.texts())[:500]
        return f"{self.name} {self.rdtype}: {self.status}" + (f" ({self.error})" if self.error else "")


def _to_name(name: str | dns.name.Name) -> dns.name.Name:
    return name if isinstance(name, dns.name.Name) else dns.name.from_text(name)


class DnsClient:
    """Asks the configured nameservers, in order, and caches answers for one scan.

    ``nameservers`` is a list of (ip, port). With none, questions fail with status ``error``.
    """

    def __init__(self, nameservers: list[tuple[str, int]], *, timeout: float = 3.0, attempts: int = 2) -> None:
        self.nameservers = list(nameservers)
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self._cache: dict[tuple[dns.name.Name, int], Lookup] = {}
        self._inflight: dict[tuple[dns.name.Name, int], asyncio.Future[Lookup]] = {}
        self.log: list[str] = []  # one line per wire question, for transcripts
        self.queries = 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "DnsClient":
        """Build from probe options: ``resolver`` ("IP[:PORT]" or a list), ``dns_timeout``."""
        servers = configured_nameservers(options)
        if servers is None:
            servers = system_nameservers()
        return cls(servers, timeout=float(options.get("dns_timeout", 3.0)))

    async def query(self, name: str | dns.name.Name, rdtype: str) -> Lookup:
        try:
            qname = _to_name(name)
        except (dns.exception.DNSException, ValueError) as exc:
            # A name no DNS question can carry (empty or over-long label): the callers validate
            # names from records first; this keeps any that slip through from raising.
            return Lookup(str(name), rdtype, "error", error=f"invalid name: {type(exc).__name__}: {exc}")
        key = (qname, dns.rdatatype.from_text(rdtype))
        if key in self._cache:
            return self._cache[key]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        fut: asyncio.Future[Lookup] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self._resolve(qname, rdtype)
        except Exception as exc:  # a dnspython parse error on hostile input is data too
            result = Lookup(qname.to_text(), rdtype, "error", error=f"{type(exc).__name__}: {exc}")
        self._cache[key] = result
        del self._inflight[key]
        fut.set_result(result)
        return result

    async def raw(self, qname: dns.name.Name, rdtype: str) -> tuple[dns.message.Message | None, str, str | None]:
        """One question on the wire; returns (response, status-if-failed, error text)."""
        if not self.nameservers:
            return None, "error", "no resolver configured"
        last_status, last_error = "timeout", "no answer"
        for _ in range(self.attempts):
            for ip, port in self.nameservers:
                q = dns.message.make_query(qname, rdtype, want_dnssec=True, payload=1232)
                q.flags |= dns.flags.CD
                self.queries += 1
                try:
                    resp, _tcp = await dns.asyncquery.udp_with_fallback(q, ip, timeout=self.timeout, port=port)
                except dns.exception.Timeout:
                    last_status, last_error = "timeout", f"no answer from {ip}:{port} within {self.timeout}s"
                    self.log.append(f"{qname} {rdtype} @{ip}:{port} -> timeout")
                    continue
                except (OSError, dns.exception.DNSException) as exc:
                    last_status, last_error = "error", f"{ip}:{port}: {type(exc).__name__}: {exc}"
                    self.log.append(f"{qname} {rdtype} @{ip}:{port} -> {last_error}")
                    continue
                rcode = resp.rcode()
                self.log.append(f"{qname} {rdtype} @{ip}:{port} -> {dns.rcode.to_text(rcode)}")
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return resp, "ok", None
                last_status = "refused" if rcode == dns.rcode.REFUSED else "servfail"
                last_error = f"{ip}:{port} answered {dns.rcode.to_text(rcode)}"
        return None, last_status, last_error

    async def _resolve(self, qname: dns.name.Name, rdtype: str) -> Lookup:
        rdt = dns.rdatatype.from_text(rdtype)
        cnames: list[tuple[dns.rrset.RRset, dns.rrset.RRset | None]] = []
        current = qname
        for _ in range(MAX_CNAME_CHAIN):
            resp, status, error = await self.raw(current, rdtype)
            if resp is None:
                return Lookup(qname.to_text(), rdtype, status, error=error, cnames=cnames)
            # Walk the CNAME chain inside this response (a recursive resolver includes it).
            while True:
                rrset = _find(resp, current, rdt)
                if rrset is not None:
                    return Lookup(
                        qname.to_text(), rdtype, "ok", rrset=rrset,
                        rrsigs=_find(resp, current, dns.rdatatype.RRSIG, covers=rdt),
                        cnames=cnames, response=resp,
                    )
                cname = _find(resp, current, dns.rdatatype.CNAME) if rdt != dns.rdatatype.CNAME else None
                if cname is None:
                    break
                cnames.append((cname, _find(resp, current, dns.rdatatype.RRSIG, covers=dns.rdatatype.CNAME)))
                current = cname[0].target
                if len(cnames) > MAX_CNAME_CHAIN:
                    return Lookup(qname.to_text(), rdtype, "error", error="CNAME chain too long", cnames=cnames)
            if cnames and cnames[-1][0][0].target == current and _find(resp, current, rdt) is None \
                    and resp.rcode() == dns.rcode.NOERROR and not _has_soa(resp) and current != qname:
                # The server stopped at the CNAME (authoritative-only): ask for the target ourselves.
                continue
            status = "nxdomain" if resp.rcode() == dns.rcode.NXDOMAIN else "nodata"
            return Lookup(qname.to_text(), rdtype, status, cnames=cnames, response=resp)
        return Lookup(qname.to_text(), rdtype, "error", error="CNAME chain too long", cnames=cnames)


def _find(resp: dns.message.Message, name: dns.name.Name, rdtype: int, covers: int = 0) -> dns.rrset.RRset | None:
    try:
        return resp.find_rrset(resp.answer, name, dns.rdataclass.IN, rdtype, covers)
    except KeyError:
        return None


def _has_soa(resp: dns.message.Message) -> bool:
    return any(r.rdtype == dns.rdatatype.SOA for r in resp.authority)
