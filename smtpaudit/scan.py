"""Orchestrating a scan: plan probes for the selected rules, run them per endpoint, judge, and build the report.

The only module that ties probes and engine together. Concurrency is asyncio: a global limit on
endpoints scanned at once, a per-host limit, and an overall deadline per endpoint. One endpoint's
failure is recorded in its report entry and never stops the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from smtpaudit import __version__
from smtpaudit.catalog import Catalog
from smtpaudit.engine.evaluate import judge_all
from smtpaudit.engine.planner import probes_needed
from smtpaudit.engine.rules import Rule
from smtpaudit.engine.scoring import FORMULA, ScoredFinding, score_endpoint
from smtpaudit.engine.severity import SEVERITIES
from smtpaudit.probes.base import Limits, ProbeContext, ProbeResult, StallBudget, Timeouts
from smtpaudit.probes.dns.expand import domain_groups, expand_domains
from smtpaudit.probes.registry import DOMAIN_PROBES, PROBES
from smtpaudit.targets import Endpoint

SCHEMA_VERSION = "1.0"
# Waiting on a dripping or silent server, summed over an endpoint's connections, is bounded by this
# many command timeouts (base.StallBudget); the endpoint deadline is only the last resort.
STALL_COMMANDS = 3
# Probe errors that mean the endpoint itself could not be scanned (exit code 3).
UNREACHABLE_REASONS = {"connect", "connect_timeout", "connect_refused", "dns", "service_unavailable", "tls_handshake", "read_timeout", "connection_closed", "protocol", "reply_too_large", "deadline"}


@dataclass
class ScanOptions:
    ehlo_name: str = "smtpaudit.example.net"
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    intrusive: bool = False
    concurrency: int = 16
    per_host: int = 2
    probe_options: dict[str, Any] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


def drop_intrusive(rules: Mapping[str, Rule], catalog: Catalog) -> tuple[dict[str, Rule], list[dict[str, str]]]:
    """Without --intrusive, rules that need an intrusive probe are left out (and listed), not 'not evaluated'.

    A default scan must not look incomplete merely because the user did not opt in to bursts.
    """
    kept: dict[str, Rule] = {}
    skipped: list[dict[str, str]] = []
    for rid, rule in rules.items():
        intrusive = sorted({catalog.facts[f].probe for f in rule.facts if catalog.probes[catalog.facts[f].probe].intrusive})
        if intrusive:
            skipped.append({"rule_id": rid, "reason": f"needs intrusive probe(s) {', '.join(intrusive)}; run with --intrusive"})
        else:
            kept[rid] = rule
    return kept, skipped


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def finding_fingerprint(rule_id: str, endpoint_id: str) -> str:
    """Stable across runs, distinct per rule and endpoint (used by SARIF, baselines and diffs)."""
    return hashlib.sha256(f"{rule_id}|{endpoint_id}".encode()).hexdigest()[:32]


def endpoint_facts(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "endpoint.host": endpoint.host,
        "endpoint.port": endpoint.port,
        "endpoint.mode": endpoint.mode.value,
        "endpoint.role": endpoint.role.value,
    }


def judge_endpoint(
    entry: dict[str, Any],
    rules: Mapping[str, Rule],
    catalog: Catalog,
) -> None:
    """(Re)compute findings, not-evaluated rules and the score of one report entry from its facts."""
    facts = entry["facts"]
    fact_probe = {name: spec.probe for name, spec in catalog.facts.items()}
    probe_errors = {p["probe"]: f"{p['error_reason']}: {p['error_message']}" for p in entry["probes"] if p["status"] == "error"}
    probe_na: dict[str, str] = {}
    for p in entry["probes"]:
        if p["status"] == "skipped":
            # Skipped because there was nothing to observe (no TLS) means "does not apply";
            # skipped for lack of permission or of the probe itself means "not evaluated".
            if p["error_reason"] in ("intrusive", "unavailable"):
                probe_errors[p["probe"]] = f"skipped: {p['error_message']}"
            else:
                probe_na[p["probe"]] = p["error_message"] or p["error_reason"] or "nothing to observe"
    # A probe with nothing to observe may still fill its facts with nulls; judged as values they
    # would turn its rules into passes, so they count as absent (the rules do not apply).
    facts = {k: v for k, v in facts.items() if not (v is None and fact_probe.get(k) in probe_na)}
    findings, not_evaluated, passed, not_applicable = [], [], [], []
    for out in judge_all(rules, facts, fact_probe=fact_probe, probe_errors=probe_errors, probe_not_applicable=probe_na):
        rule = rules[out.rule_id]
        if out.status == "finding":
            probes = sorted({fact_probe.get(f, "endpoint") for f in out.evidence})
            findings.append(
                {
                    "rule_id": rule.id,
                    "title": rule.title,
                    "severity": rule.severity,
                    "score": rule.score,
                    "confidence": rule.confidence,
                    "family": rule.family,
                    "tags": rule.tags,
                    "message": out.message,
                    "evidence": {"facts": out.evidence, "probes": probes},
                    "fingerprint": finding_fingerprint(rule.id, entry["endpoint"]["id"]),
                    "suppressed": None,
                }
            )
        elif out.status == "not_evaluated":
            not_evaluated.append({"rule_id": rule.id, "reason": out.reason, "missing": out.missing})
        elif out.status == "pass":
            passed.append(rule.id)
        else:
            not_applicable.append(rule.id)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (rank[f["severity"]], -f["score"], f["rule_id"]))
    entry["findings"] = findings
    # On an endpoint that could not be scanned, the entry's error already says why every SMTP/TLS
    # rule is missing; findings from what was observed without it (DNS) are kept.
    entry["not_evaluated"] = [] if entry["status"] == "failed" else not_evaluated
    entry["passed"] = sorted(passed)
    entry["not_applicable"] = sorted(not_applicable)
    rescore(entry, rules)


def rescore(entry: dict[str, Any], rules: Mapping[str, Rule] | None = None) -> None:
    """Score an entry from its open (unsuppressed) findings."""
    if entry["status"] == "failed":
        entry["score"] = None
        return
    open_findings = [f for f in entry["findings"] if not f.get("suppressed")]
    scored = [
        ScoredFinding(
            f["rule_id"], f["severity"], f["confidence"],
            (rules[f["rule_id"]].grade_cap if rules and f["rule_id"] in rules else f.get("grade_cap")),
            f["title"],
        )
        for f in open_findings
    ]
    for f in entry["findings"]:
        if rules and f["rule_id"] in rules:
            f["grade_cap"] = rules[f["rule_id"]].grade_cap
    entry["score"] = score_endpoint(scored, complete=not entry["not_evaluated"]).to_json()


async def _run_probe(name: str, endpoint: Endpoint, ctx: ProbeContext, facts: dict[str, Any]) -> ProbeResult:
    probe_cls = PROBES.get(name)
    if probe_cls is None:
        return ProbeResult(probe=name, status="skipped", error_reason="unavailable", error_message=f"probe {name} is not installed")
    if probe_cls.intrusive and not ctx.intrusive:
        return ProbeResult(probe=name, status="skipped", error_reason="intrusive", error_message="intrusive probe; run with --intrusive to enable")
    started = time.monotonic()
    try:
        result = await probe_cls().run(endpoint, ctx, dict(facts))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug in one probe must not end the scan
        result = ProbeResult(probe=name, status="error", error_reason="bug", error_message=f"internal error in probe {name}: {type(exc).__name__}: {exc}")
    result.duration = result.duration or (time.monotonic() - started)
    return result


async def scan_endpoint(endpoint: Endpoint, probe_names: list[str], options: ScanOptions, host_slots: asyncio.Semaphore) -> dict[str, Any]:
    """Run the planned probes against one endpoint within its deadline; never raises for server behaviour."""
    ctx = ProbeContext(
        ehlo_name=options.ehlo_name,
        timeouts=options.timeouts,
        limits=options.limits,
        intrusive=options.intrusive,
        options=dict(options.probe_options),
        host_slots=host_slots,
        secrets=options.secrets,
        # A few command timeouts of waiting on a stalling server, then reads fail fast.
        stall=StallBudget(STALL_COMMANDS * options.timeouts.command),
    )
    facts = endpoint_facts(endpoint)
    started_iso, t0 = now_iso(), time.monotonic()
    unreachable: str | None = None
    done: dict[str, ProbeResult] = {}
    running: dict[str, asyncio.Task[ProbeResult]] = {}
    pending = list(probe_names)
    deps = {n: [d for d in getattr(PROBES.get(n), "after", ()) if d in probe_names] for n in probe_names}
    # Independent probes overlap (one waits out a timeout while another enumerates suites), but
    # never more at once than the per-host connection budget allows.
    limit = max(1, options.per_host)
    try:
        async with asyncio.timeout(options.timeouts.endpoint):
            while pending or running:
                for name in list(pending):
                    if len(running) >= limit:
                        break
                    if not all(d in done for d in deps[name]):
                        continue
                    pending.remove(name)
                    if unreachable is not None and not name.startswith("dns."):
                        # The session probe could not even get a greeting: hammering the port with
                        # more probes (dozens of TLS hellos) would only repeat the same failure.
                        done[name] = ProbeResult(probe=name, status="skipped", error_reason="unreachable",
                                                 error_message=f"not run: {unreachable}")
                        continue
                    running[name] = asyncio.create_task(_run_probe(name, endpoint, ctx, dict(facts)))
                if not running:
                    continue
                finished, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                for name in [n for n, task in running.items() if task in finished]:
                    result = running.pop(name).result()
                    done[name] = result
                    facts.update(result.facts)
                    if name == "smtp.session" and result.status == "error" and result.facts.get("smtp.greeting.code") != 220:
                        # No usable greeting (refused, silent, 421...): back off instead of probing on.
                        unreachable = result.error_message
    except TimeoutError:
        for task in running.values():
            task.cancel()
        for name in [*running, *pending]:
            done[name] = ProbeResult(probe=name, status="error", error_reason="deadline",
                                     error_message=f"endpoint deadline of {options.timeouts.endpoint:g}s reached")
    results = [done[n] for n in probe_names if n in done]
    status, error = "scanned", None
    # The primary probe is the first one that talks to the server (DNS probes run first by name).
    network = [r for r in results if not r.probe.startswith("dns.") and r.error_reason != "unreachable"] or results
    primary = network[0] if network else None
    if primary is not None and primary.status == "error" and primary.error_reason in UNREACHABLE_REASONS and not any(r.status == "ok" for r in results if not r.probe.startswith("dns.")):
        # DNS probes succeed without the server; they do not make an unreachable endpoint scanned.
        status, error = "failed", primary.error_message
    elif any(r.status == "error" for r in results):
        status = "partial"
    return {
        "endpoint": endpoint.to_json(),
        "status": status,
        "error": error,
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


def plan_probes(rules: Mapping[str, Rule], catalog: Catalog) -> list[str]:
    """The probes the selected rules need, dependencies first (the session probe always runs)."""
    fact_probe = {name: spec.probe for name, spec in catalog.facts.items()}
    after = {name: getattr(cls, "after", ()) for name, cls in PROBES.items()}
    return probes_needed(rules.values(), fact_probe, after, always=("smtp.session",))


async def run_scan(
    endpoints: list[Endpoint],
    rules: Mapping[str, Rule],
    catalog: Catalog,
    options: ScanOptions,
    *,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Scan every endpoint (bounded concurrency) and judge each; returns the report entries in input order."""
    probe_names = plan_probes(rules, catalog)
    # Domain targets: DNS-only probes on the domain entry, then one MX endpoint per MX host.
    endpoints = await expand_domains(endpoints, options.probe_options)
    domain_probes = [p for p in probe_names if p in DOMAIN_PROBES]
    host_probes = [p for p in probe_names if p not in DOMAIN_PROBES]
    global_slots = asyncio.Semaphore(max(1, options.concurrency))
    host_locks: dict[str, asyncio.Semaphore] = {}
    conn_slots: dict[str, asyncio.Semaphore] = {}

    async def one(ep: Endpoint) -> dict[str, Any]:
        host_sem = host_locks.setdefault(ep.host, asyncio.Semaphore(max(1, options.per_host)))
        slots = conn_slots.setdefault(ep.host, asyncio.Semaphore(max(1, options.per_host)))
        async with global_slots, host_sem:
            names = domain_probes if ep.role.value == "domain" else host_probes
            entry = await scan_endpoint(ep, names, options, slots)
        judge_endpoint(entry, rules, catalog)
        if progress:
            progress(ep.id, entry)
        return entry

    return list(await asyncio.gather(*(one(ep) for ep in endpoints)))


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {s: 0 for s in SEVERITIES}
    suppressed = 0
    for e in entries:
        for f in e["findings"]:
            if f.get("suppressed"):
                suppressed += 1
            else:
                counts[f["severity"]] += 1
    grades = [e["score"]["grade"] for e in entries if e.get("score")]
    from smtpaudit.engine.scoring import worse

    worst = None
    for g in grades:
        worst = g if worst is None else worse(worst, g)
    return {
        "endpoints": len(entries),
        "scanned": sum(1 for e in entries if e["status"] != "failed"),
        "failed": sum(1 for e in entries if e["status"] == "failed"),
        "partial": sum(1 for e in entries if e["status"] == "partial"),
        "findings": counts,
        "suppressed": suppressed,
        "worst_grade": worst,
    }


def build_report(
    entries: list[dict[str, Any]],
    *,
    rules: Mapping[str, Rule],
    rule_dirs: list[str],
    policy: dict[str, Any],
    started: str,
    finished: str,
    duration: float,
    argv: list[str],
    options: dict[str, Any],
    probes_run: list[str],
    catalog: Catalog,
    skipped_rules: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    digest = hashlib.sha256()
    for rid in sorted(rules):
        digest.update(repr((rid, rules[rid].severity, rules[rid].score, rules[rid].params, rules[rid].when)).encode())
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "smtpaudit", "version": __version__},
        "started": started,
        "finished": finished,
        "duration": round(duration, 3),
        "invocation": {"argv": argv, "options": options},
        "ruleset": {
            "directories": rule_dirs,
            "count": len(rules),
            "digest": digest.hexdigest()[:16],
            "policy": policy,
            "rules": {rid: rules[rid].summary() for rid in sorted(rules)},
            "skipped_rules": skipped_rules or [],
        },
        "probes": {
            name: {"intrusive": catalog.probes[name].intrusive if name in catalog.probes else False,
                   "description": catalog.probes[name].description if name in catalog.probes else ""}
            for name in probes_run
        },
        "scoring": {"formula": FORMULA},
        "summary": summarize(entries),
        "domains": domain_groups(entries),
        "endpoints": entries,
    }
