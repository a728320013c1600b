"""Domain targets to endpoints: each ``domain:`` target is followed by one MX endpoint per MX
host (priority order), tagged with the domain so reports group them. Runs before the scan; DNS
failures leave the domain entry alone (its dns.domain facts then say what went wrong)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from smtpaudit.probes.dns import mx
from smtpaudit.probes.dns.resolver import DnsClient
from smtpaudit.targets import Endpoint, Mode, Role

MAX_MX_ENDPOINTS = 20  # per domain; more MX hosts than this are not scanned


async def expand_domains(endpoints: list[Endpoint], options: dict[str, Any]) -> list[Endpoint]:
    """Insert the MX endpoints of every domain target right after it. ``options['mx_port']``
    overrides port 25 (labs run their mail servers on other ports)."""
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
        hosts = by_domain[ep.host].hosts[:MAX_MX_ENDPOINTS]
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


def domain_groups(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Report helper: domain -> ids of its entries (the domain entry first)."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        d = e["endpoint"].get("domain")
        if d:
            groups.setdefault(d, []).append(e["endpoint"]["id"])
    return groups
