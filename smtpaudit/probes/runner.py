"""The probe template: the one place that runs a probe and turns whatever happens into a typed result.

Every probe, DNS included, runs through ``run_probe``. It owns what each probe used to hand-roll:
skipping (probe not installed, intrusive without permission, endpoint already unreachable), the
guard (a ``ProbeError`` becomes an error result with its reason; any other exception is recorded
as an ``internal`` error, never a crash), the deadline (a probe cut off keeps *no* facts: evidence
that was not finished observing is absent, so its rules are not evaluated) and the fact contract
(an undeclared fact or a value of the wrong type is a probe bug, recorded as such and never judged).
The host slot is taken by every socket in ``probes/net.py``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, Mapping

from smtpaudit.catalog import FactSpec, value_matches_type
from smtpaudit.outcomes import ProbeStatus, Reason
from smtpaudit.probes.base import Probe, ProbeContext, ProbeError, ProbeResult
from smtpaudit.probes.net import HostSlots, Leases
from smtpaudit.targets import Endpoint


def skipped(name: str, reason: Reason, message: str) -> ProbeResult:
    return ProbeResult(probe=name, status=ProbeStatus.SKIPPED, error_reason=reason, error_message=message)


def errored(name: str, reason: Reason, message: str) -> ProbeResult:
    return ProbeResult(probe=name, status=ProbeStatus.ERROR, error_reason=reason, error_message=message)


def check_facts(result: ProbeResult, declared: Mapping[str, FactSpec]) -> None:
    """Drop facts the catalogue does not declare for this probe, or whose value has the wrong type."""
    bad: list[str] = []
    for name in list(result.facts):
        spec = declared.get(name)
        if spec is None or spec.probe != result.probe:
            bad.append(f"{name} (not declared for {result.probe})")
            del result.facts[name]
        elif not value_matches_type(result.facts[name], spec.type):
            bad.append(f"{name} (expected {spec.type}, got {type(result.facts[name]).__name__})")
            del result.facts[name]
    if bad:
        note = "probe bug: fact contract broken: " + ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        result.status = ProbeStatus.ERROR
        result.error_reason = Reason.FACT_CONTRACT
        result.error_message = note if not result.error_message else f"{result.error_message}; {note}"


def _normalise(result: ProbeResult) -> None:
    """Status and reason as enums, whatever words the probe used."""
    try:
        result.status = ProbeStatus(result.status)
    except ValueError:
        result.status = ProbeStatus.ERROR
    if result.status is ProbeStatus.OK:
        result.error_reason = None
    else:
        result.error_reason = Reason.coerce(result.error_reason)


async def run_probe(
    probe_cls: type[Probe] | None,
    name: str,
    endpoint: Endpoint,
    ctx: ProbeContext,
    prior: Mapping[str, Any],
    *,
    declared: Mapping[str, FactSpec],
    unreachable: str | None = None,
    deadline: float | None = None,
    host: HostSlots | None = None,
) -> ProbeResult:
    """Run one probe; never raises (except CancelledError of the whole scan).

    ``deadline`` is the event-loop time at which the endpoint's budget ends; ``unreachable`` says
    why the endpoint is known to be unusable (the probe is then not started at all). With
    ``host``, the probe first reserves the sockets it declares (``sockets``, default 1) from the
    host's slots and opens its connections inside that budget.
    """
    if probe_cls is None:
        return skipped(name, Reason.UNAVAILABLE, f"probe {name} is not installed")
    if probe_cls.intrusive and not ctx.intrusive:
        return skipped(name, Reason.INTRUSIVE, "intrusive probe; run with --intrusive to enable")
    if unreachable is not None and not name.startswith("dns."):
        # Hammering a port that gave no usable greeting (dozens of TLS hellos) only repeats the failure.
        return skipped(name, Reason.UNREACHABLE, f"not run: {unreachable}")
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        if deadline is not None and loop.time() >= deadline:
            raise TimeoutError
        async with asyncio.timeout_at(deadline):
            wanted = int(getattr(probe_cls, "sockets", 1))
            # sockets = 0 marks the opt-in connection burst (--intrusive): it takes the whole host
            # for itself and then opens as many sockets as its test needs, the one exception to --per-host.
            least = getattr(probe_cls, "sockets_min", None)
            budget = await host.reserve(host.limit if wanted == 0 else wanted, None if wanted == 0 else least) if host is not None else None
            try:
                # Its own leases: the sockets of this probe are reclaimed when it ends, whatever it did.
                slots = None if wanted == 0 else budget
                run_ctx = replace(ctx, host_slots=slots, leases=Leases()) if budget is not None else ctx
                result = await probe_cls().run(endpoint, run_ctx, dict(prior))
            finally:
                if budget is not None:
                    run_ctx.leases.reclaim()
                    await budget.close()
    except TimeoutError:
        result = errored(name, Reason.DEADLINE, f"endpoint deadline of {ctx.timeouts.endpoint:g}s reached while {name} was running")
    except ProbeError as exc:
        result = errored(name, Reason.coerce(exc.reason), exc.message)
    except Exception as exc:  # noqa: BLE001 - a bug in one probe must not end the scan
        result = errored(name, Reason.INTERNAL, f"internal error in probe {name}: {type(exc).__name__}: {exc}")
    result.probe = name
    _normalise(result)
    check_facts(result, declared)
    result.duration = result.duration or (time.monotonic() - started)
    return result
