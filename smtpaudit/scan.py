"""The network orchestrator: run the planned probes against each endpoint, bounded, within deadlines.

Its one job is observing: it returns one report entry per endpoint with the facts, probe outcomes
and transcripts, and judges nothing (``engine/judge.py`` does, called by ``smtpaudit.api``).
Concurrency is asyncio: a global limit on endpoints scanned at once, a per-host limit on
endpoints and on sockets (every socket takes a slot in ``probes/net.py``), and a deadline per
endpoint. One endpoint's failure is recorded in its entry and never stops the others.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from smtpaudit.catalog import Catalog
from smtpaudit.outcomes import ProbeStatus, Reason
from smtpaudit.probes.base import ProbeContext, ProbeResult, ProbeSettings, SilenceWatch, StallBudget
from smtpaudit.probes.net import HostSlots
from smtpaudit.probes.registry import DOMAIN_PROBES, PROBES
from smtpaudit.probes.runner import errored, run_probe, skipped
from smtpaudit.targets import Endpoint, Role
from smtpaudit.timeutil import now_iso

SESSION_PROBE = "smtp.session"
# Waiting on slow TLS handshakes, summed over an endpoint's connections, is bounded by this many
# command timeouts (base.StallBudget); the endpoint deadline is only the last resort.
STALL_COMMANDS = 3
# Connections silent at a step every server answers (EHLO, the command after it, the first TLS
# bytes) before the endpoint's remaining waits at that step are not made (base.SilenceWatch).
SILENT_CONNECTIONS = 3


def endpoint_facts(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "endpoint.host": endpoint.host,
        "endpoint.port": endpoint.port,
        "endpoint.mode": endpoint.mode.value,
        "endpoint.role": endpoint.role.value,
    }


def probe_dependencies() -> dict[str, tuple[str, ...]]:
    """Probe name -> probes whose facts it reads (data for the engine's planner)."""
    return {name: tuple(getattr(cls, "after", ())) for name, cls in PROBES.items()}


def intrusive_probes() -> list[str]:
    return sorted(name for name, cls in PROBES.items() if cls.intrusive)


def _unusable(result: ProbeResult) -> str | None:
    """Why the endpoint cannot be probed further after its session probe, or None."""
    if result.probe != SESSION_PROBE or result.status is ProbeStatus.OK:
        return None
    if result.facts.get("smtp.greeting.code") == 220:
        return None
    return result.error_message or str(result.error_reason)


async def scan_endpoint(endpoint: Endpoint, probe_names: list[str], settings: ProbeSettings,
                        host_slots: HostSlots, catalog: Catalog,
                        on_probe: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Run the planned probes against one endpoint within its deadline; never raises for server behaviour."""
    ctx = ProbeContext(
        ehlo_name=settings.ehlo_name,
        timeouts=settings.timeouts,
        limits=settings.limits,
        intrusive=settings.intrusive,
        options=dict(settings.probe_options),
        secrets=settings.secrets,
        # A few command timeouts of waiting on a stalling server, then reads fail fast.
        stall=StallBudget(STALL_COMMANDS * settings.timeouts.command),
        silence=SilenceWatch(SILENT_CONNECTIONS),
    )
    facts = endpoint_facts(endpoint)
    started_iso, t0 = now_iso(), time.monotonic()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeouts.endpoint
    unreachable: str | None = None
    tls_only = False
    done: dict[str, ProbeResult] = {}
    running: dict[str, asyncio.Task[ProbeResult]] = {}
    pending = list(probe_names)
    deps = {n: [d for d in getattr(PROBES.get(n), "after", ()) if d in probe_names] for n in probe_names}
    # Independent probes overlap (one waits out a timeout while another enumerates suites), never
    # more at once than the per-host budget; each of their sockets also takes a host slot.
    limit = max(1, settings.per_host)
    try:
        while pending or running:
            for name in list(pending):
                if len(running) >= limit:
                    break
                if not all(d in done for d in deps[name]):
                    continue
                pending.remove(name)
                if loop.time() >= deadline:
                    done[name] = errored(name, Reason.DEADLINE, f"not started: endpoint deadline of {settings.timeouts.endpoint:g}s reached")
                    continue
                if on_probe is not None:
                    on_probe(endpoint.id, name)
                # An implicit-TLS port whose handshake fails still answers TLS hellos: the TLS
                # probes observe why (that is the finding); only the SMTP probes are pointless.
                blocked = None if (tls_only and name.startswith("tls.")) else unreachable
                running[name] = asyncio.create_task(run_probe(
                    PROBES.get(name), name, endpoint, ctx, dict(facts), declared=catalog.facts,
                    unreachable=blocked, deadline=deadline, host=host_slots))
            if not running:
                continue
            finished, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
            for name in [n for n, task in running.items() if task in finished]:
                result = running.pop(name).result()
                done[name] = result
                facts.update(result.facts)
                if unreachable is None and (why := _unusable(result)):
                    unreachable = why
                    tls_only = endpoint.mode.value == "implicit" and result.error_reason == Reason.TLS_HANDSHAKE
    finally:
        for task in running.values():
            task.cancel()
        # Sockets a probe left open (a cancelled task, a bug) give their host slot back now.
        ctx.leases.reclaim()
    results = [done.get(n) or skipped(n, Reason.DEADLINE, "not run") for n in probe_names]
    return {
        "endpoint": endpoint.to_json(),
        "status": None,  # set by the judge from the probe outcomes
        "status_reasons": [],
        "error": unreachable,
        "started": started_iso,
        "duration": round(time.monotonic() - t0, 3),
        "facts": facts,
        "probes": [r.to_json() for r in results],
        "transcripts": {r.probe: [ln.to_json() for ln in r.transcript] for r in results if r.transcript},
        "findings": [],
        "not_evaluated": [],
        "passed": [],
        "not_applicable": [],
        "score": None,
    }


def unresolved_entry(endpoint: Endpoint, why: str) -> dict[str, Any]:
    """The entry of a target whose name does not resolve: nothing was probed, nothing is judged."""
    return {
        "endpoint": endpoint.to_json(), "status": None, "status_reasons": [], "error": why,
        "started": now_iso(), "duration": 0.0, "facts": endpoint_facts(endpoint),
        "probes": [{"probe": "target", "status": ProbeStatus.ERROR.value, "error_reason": Reason.DNS.value,
                    "error_message": why, "duration": 0.0, "connections": 0}],
        "transcripts": {}, "findings": [], "not_evaluated": [], "passed": [], "not_applicable": [], "score": None,
    }


async def run_endpoints(
    endpoints: list[Endpoint],
    probe_names: list[str],
    settings: ProbeSettings,
    catalog: Catalog,
    *,
    on_entry: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
    on_probe: Callable[[str, str], None] | None = None,
    keep: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Scan every endpoint (domains expanded to their MX endpoints first); entries in input order.

    Returns the entries and the peak number of sockets that were open at once per host. With
    ``keep=False`` the entries are only handed to ``on_entry`` (which streams them to disk) and
    the list comes back empty: memory then does not grow with the number of endpoints.
    """
    unresolved: dict[str, str] = {}
    if any(ep.role is Role.DOMAIN for ep in endpoints):
        # dnspython only for scans with mail-domain targets (expand_domains changes nothing else).
        from smtpaudit.probes.dns.expand import expand_domains

        endpoints = await expand_domains(endpoints, settings.probe_options, unresolved)
    domain_probes = [p for p in probe_names if p in DOMAIN_PROBES]
    host_probes = [p for p in probe_names if p not in DOMAIN_PROBES]
    global_slots = asyncio.Semaphore(max(1, settings.concurrency))
    host_locks: dict[str, asyncio.Semaphore] = {}
    conn_slots: dict[str, HostSlots] = {}

    async def one(ep: Endpoint) -> dict[str, Any] | None:
        key = ep.connect_host
        host_sem = host_locks.setdefault(key, asyncio.Semaphore(max(1, settings.per_host)))
        slots = conn_slots.setdefault(key, HostSlots(settings.per_host))
        if ep.role.value == "domain" and ep.host in unresolved:
            entry = unresolved_entry(ep, unresolved[ep.host])
        else:
            async with global_slots, host_sem:
                names = domain_probes if ep.role.value == "domain" else host_probes
                entry = await scan_endpoint(ep, names, settings, slots, catalog, on_probe)
        if on_entry is not None:
            maybe = on_entry(entry)
            if asyncio.iscoroutine(maybe):
                await maybe
        return entry if keep else None

    entries = [e for e in await asyncio.gather(*(one(ep) for ep in endpoints)) if e is not None]
    return entries, {host: s.peak for host, s in conn_slots.items()}

