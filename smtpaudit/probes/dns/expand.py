"""Domain targets to endpoints: each ``domain:`` target is followed by one MX endpoint per MX
host (priority order), tagged with the domain so reports group them. Runs before the scan.

A name with no MX record but an address is its own implicit MX (RFC 5321 section 5.1), also when
only the system resolver knows it (``/etc/hosts``). A name that does not exist at all is a target
error: ``unresolved`` says why, and the domain's entry is reported unreachable (exit code 3)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

from smtpaudit.probes.dns import mx
from smtpaudit.probes.dns.resolver import DnsClient
from smtpaudit.targets import Endpoint, Mode, Role

MAX_MX_ENDPOINTS = 20  # per domain; more MX hosts than this are not scanned


async def _system_addresses(host: str) -> list[str]:
    """Addresses the system resolver gives (``/etc/hosts`` included); empty when it knows none."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


async def expand_domains(endpoints: list[Endpoint], options: dict[str, Any],
                         unresolved: dict[str, str] | None = None) -> list[Endpoint]:
    """Insert the MX endpoints of every domain target right after it. ``options['mx_port']``
    overrides port 25 (labs run their mail servers on other ports). Domains that do not resolve
    at all are recorded in ``unresolved`` (domain -> why) and get no MX endpoint."""
    domains = [ep for ep in endpoints if ep.role is Role.DOMAIN]
    if not domains:
        return endpoints
    client = DnsClient.from_options(options)
    port = int(options.get("mx_port", 25))
    sets = await asyncio.gather(*(mx.discover(client, ep.host) for ep in domains))
    by_domain = {ep.host: s for ep, s in zip(domains, sets)}
    out: list[Endpoint] = []
    for ep in endpoints:
        out.append(ep)
        if ep.role is not Role.DOMAIN:
            continue
        found = by_domain[ep.host]
        hosts = found.hosts[:MAX_MX_ENDPOINTS]
        if not hosts and not found.null and found.lookup.status in ("nxdomain", "nodata"):
            system = await _system_addresses(ep.host)
            if system:
                # Known to the system resolver only: still the implicit MX of RFC 5321 5.1.
                for ip in system[:MAX_MX_ENDPOINTS]:
                    out.append(replace(ep, host=ep.host, port=port, mode=Mode.STARTTLS, role=Role.MX,
                                       spec=f"{ep.spec} (implicit MX)", domain=ep.host, address=ip))
                continue
            if unresolved is not None:
                unresolved[ep.host] = (f"{ep.host}: the name does not exist (NXDOMAIN)" if found.lookup.status == "nxdomain"
                                       else f"{ep.host}: no MX and no address record")
            continue
        if not hosts and found.lookup.failed and unresolved is not None:
            unresolved[ep.host] = f"{ep.host}: MX lookup failed ({found.lookup.status})"
            continue
        # Every address of every MX (IPv4 and IPv6) is its own endpoint, resolved through the
        # same resolver as the DNS checks, so --resolver also decides where we connect.
        resolved = await asyncio.gather(*(mx.addresses(client, h) for h in hosts))
        count = 0
        for host, addrs in zip(hosts, resolved):
            ips = (addrs.ipv4 + addrs.ipv6) or [None]
            for ip in ips:
                if count >= MAX_MX_ENDPOINTS:
                    break
                count += 1
                out.append(replace(ep, host=host, port=port, mode=Mode.STARTTLS, role=Role.MX,
                                   spec=f"{ep.spec} (MX {host})", domain=ep.host, address=ip))
    return out

