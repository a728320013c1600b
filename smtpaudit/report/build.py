"""Assembling the canonical report: judged entries + rule-set and scan metadata -> one JSON document.

Pure data in, data out: no network, no rules engine. Also the summary (counts, worst grade of
complete endpoints only) and the gate (the exit code a report implies), so ``scan``, ``report``,
``evaluate`` and merged shards all decide the exit code the same way.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from smtpaudit import __version__
from smtpaudit.outcomes import EndpointStatus

SCHEMA_VERSION = "1.0"
SEVERITIES = ("critical", "high", "medium", "low", "info")
GRADES = ("A+", "A", "B", "C", "D", "E", "F")
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_UNSCANNED = 0, 1, 2, 3


def _worse(a: str, b: str) -> str:
    return a if GRADES.index(a) >= GRADES.index(b) else b


def _status(entry: Mapping[str, Any]) -> EndpointStatus:
    return EndpointStatus.coerce(entry.get("status"))


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status and severity; the worst grade is taken over complete (graded) endpoints only."""
    counts = {s: 0 for s in SEVERITIES}
    suppressed = 0
    for e in entries:
        for f in e["findings"]:
            if f.get("suppressed"):
                suppressed += 1
            else:
                counts[f["severity"]] += 1
    worst = None
    for e in entries:
        grade = (e.get("score") or {}).get("grade")
        if grade and _status(e) is EndpointStatus.COMPLETE:
            worst = grade if worst is None else _worse(worst, grade)
    by_status = {s.value: sum(1 for e in entries if _status(e) is s) for s in EndpointStatus}
    return {
        "endpoints": len(entries),
        **by_status,
        # The older names, kept for readers of schema 1.0 reports.
        "scanned": by_status["complete"] + by_status["incomplete"],
        "failed": by_status["unreachable"],
        "partial": by_status["incomplete"],
        "findings": counts,
        "suppressed": suppressed,
        "worst_grade": worst,
    }


def at_or_above(severity: str, threshold: str) -> bool:
    return SEVERITIES.index(severity) <= SEVERITIES.index(threshold)


def gate(report: Mapping[str, Any], fail_on: str | None, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """The deployment gate a report implies: exit 3 when any endpoint was not fully scanned (unless
    ``allow_incomplete``), else 1 when an open finding that counts toward the gate reaches
    ``fail_on``, else 0. Findings accepted by a baseline, or marked ``gate: false`` (unreliable
    version guesses), never fail the gate; they still count toward the grade."""
    entries = report["endpoints"]
    not_complete = [e["endpoint"]["id"] for e in entries if _status(e) is not EndpointStatus.COMPLETE]
    failing = accepted = 0
    for e in entries:
        for f in e["findings"]:
            if f.get("suppressed"):
                accepted += 1
            elif fail_on and f.get("gate", True) is not False and at_or_above(f["severity"], fail_on):
                failing += 1
    if not_complete and not allow_incomplete:
        code = EXIT_UNSCANNED
    elif failing:
        code = EXIT_FINDINGS
    else:
        code = EXIT_OK
    return {
        "fail_on": fail_on,
        "allow_incomplete": allow_incomplete,
        "passed": code == EXIT_OK,
        "exit_code": code,
        "open_at_or_above": failing,
        "accepted": accepted,
        "incomplete": len(not_complete),
        "not_complete_endpoints": not_complete[:50],
    }


def domain_groups(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Mail domain -> ids of its entries (the domain entry first)."""
    groups: dict[str, list[str]] = {}
    for e in entries:
        d = e["endpoint"].get("domain")
        if d:
            groups.setdefault(d, []).append(e["endpoint"]["id"])
    return groups


def ruleset_digest(rule_summaries: Mapping[str, Mapping[str, Any]], when: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    for rid in sorted(rule_summaries):
        r = rule_summaries[rid]
        digest.update(repr((rid, r["severity"], r["score"], r.get("params"), when.get(rid))).encode())
    return digest.hexdigest()[:16]


def build_report(
    entries: list[dict[str, Any]],
    *,
    rules: Mapping[str, Mapping[str, Any]],
    rules_digest: str,
    rule_dirs: list[str],
    policy: dict[str, Any],
    started: str,
    finished: str,
    duration: float,
    argv: list[str],
    options: dict[str, Any],
    probes: Mapping[str, Mapping[str, Any]],
    skipped_rules: list[dict[str, str]] | None = None,
    scoring: Mapping[str, Any] | None = None,
    fail_on: str | None = "high",
    allow_incomplete: bool = False,
) -> dict[str, Any]:
    """The report document. ``rules`` are the rules' summaries (metadata as recorded in reports)."""
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "smtpaudit", "version": __version__},
        "started": started,
        "finished": finished,
        "duration": round(duration, 3),
        "invocation": {"argv": argv, "options": options},
        "ruleset": {
            "directories": rule_dirs,
            "count": len(rules),
            "digest": rules_digest,
            "policy": policy,
            "rules": {rid: dict(rules[rid]) for rid in sorted(rules)},
            "skipped_rules": skipped_rules or [],
        },
        "probes": {name: dict(p) for name, p in probes.items()},
        "scoring": dict(scoring or {}),
        "summary": summarize(entries),
        "domains": domain_groups(entries),
        "endpoints": entries,
    }
    report["gate"] = gate(report, fail_on, allow_incomplete=allow_incomplete)
    return report


def refresh(report: dict[str, Any], fail_on: str | None, *, allow_incomplete: bool = False) -> None:
    """Recompute summary and gate after entries changed (baseline applied, shards merged)."""
    report["summary"] = summarize(report["endpoints"])
    report["gate"] = gate(report, fail_on, allow_incomplete=allow_incomplete)
