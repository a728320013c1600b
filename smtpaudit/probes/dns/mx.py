"""MX discovery (RFC 5321 section 5.1, RFC 7505): the MX set in priority order, the implicit MX
when there is none, the null MX, and every address of every MX host."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import dns.reversename

from smtpaudit.probes.dns.names import name_problem
from smtpaudit.probes.dns.resolver import DnsClient, Lookup

MAX_MX = 50  # more MX records than this are truncated (hostile zones)


@dataclass
class MxSet:
    domain: str
    lookup: Lookup
    records: list[dict[str, Any]] = field(default_factory=list)  # {preference, exchange}
    hosts: list[str] = field(default_factory=list)  # names to deliver to, in priority order
    null: bool = False
    implicit: bool = False
    errors: list[str] = field(default_factory=list)
    # No MX, and the implicit-MX check (A/AAAA of the domain) got no answer: hosts unknown.
    unresolved: bool = False


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


async def discover(client: DnsClient, domain: str) -> MxSet:
    """Resolve the MX set. Implicit MX: no MX but an A/AAAA at the domain (RFC 5321 5.1)."""
    lk = await client.query(domain, "MX")
    out = MxSet(domain=_norm(domain), lookup=lk)
    if lk.ok and lk.rrset is not None:
        rows = sorted(((r.preference, _norm(r.exchange.to_text())) for r in lk.rrset), key=lambda x: (x[0], x[1]))
        rows = rows[:MAX_MX]
        out.records = [{"preference": p, "exchange": e or "."} for p, e in rows]
        nulls = [r for r in rows if r[1] == ""]
        if nulls:
            out.null = True
            if len(rows) > 1:
                out.errors.append("null MX published together with other MX records (RFC 7505 section 3)")
            if any(p != 0 for p, _ in nulls):
                out.errors.append("null MX with a preference other than 0 (RFC 7505 section 3)")
        seen: set[str] = set()
        for _, host in rows:
            if host and host not in seen:
                seen.add(host)
                out.hosts.append(host)
                try:
                    ipaddress.ip_address(host)
                    out.errors.append(f"MX {host} is an IP address, not a host name (RFC 5321 5.1)")
                except ValueError:
                    problem = name_problem(host)
                    if problem:
                        out.errors.append(f"MX {host} is not a valid host name: {problem}")
    elif lk.status == "nodata":
        a, aaaa = await asyncio.gather(client.query(domain, "A"), client.query(domain, "AAAA"))
        if a.ok or aaaa.ok:
            out.implicit = True
            out.hosts = [out.domain]
        elif a.failed or aaaa.failed:
            out.unresolved = True
    return out


@dataclass
class HostAddresses:
    host: str
    ipv4: list[str]
    ipv6: list[str]
    status: str  # ok | nxdomain | nodata | servfail | ... (worst of the A/AAAA answers)
    cname: bool

    def to_json(self) -> dict[str, Any]:
        return {"ipv4": self.ipv4, "ipv6": self.ipv6, "status": self.status, "cname": self.cname}


async def addresses(client: DnsClient, host: str) -> HostAddresses:
    """A and AAAA of ``host``; an IP literal is its own address."""
    try:
        ip = ipaddress.ip_address(host)
        return HostAddresses(host, [str(ip)] if ip.version == 4 else [], [str(ip)] if ip.version == 6 else [], "ok", False)
    except ValueError:
        pass
    a, aaaa = await asyncio.gather(client.query(host, "A"), client.query(host, "AAAA"))
    v4 = [r.address for r in a.rrset] if a.ok and a.rrset is not None else []
    v6 = [r.address for r in aaaa.rrset] if aaaa.ok and aaaa.rrset is not None else []
    if v4 or v6:
        status = "ok"
    elif a.failed or aaaa.failed:
        status = a.status if a.failed else aaaa.status
    else:
        status = a.status  # nxdomain or nodata
    cname = bool(a.cnames or aaaa.cnames)
    return HostAddresses(host, v4, v6, status, cname)


def reverse_name(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text()

