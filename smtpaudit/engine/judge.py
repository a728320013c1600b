"""Judging one report entry: endpoint status from its probe outcomes, rule outcomes from its facts, the grade.

Pure: an entry (facts + probe outcomes, as plain report data) and rules in; findings, passes, rules
not evaluated or not applicable, the endpoint status and the score out. Used alike by a live scan
and by ``evaluate`` on a saved report, so a re-judged report is judged exactly as the scan was.

Fail closed, in three places:
- a probe that did not finish leaves its facts absent (the orchestrator never stores facts of a
  probe cut off by the deadline), so rules over them are *not evaluated* with its reason;
- facts a probe recorded before it failed may prove a finding, never a pass;
- only a *complete* endpoint (every planned probe finished) gets a score and a grade.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from smtpaudit.engine.evaluate import Outcome, judge
from smtpaudit.engine.rules import Rule
from smtpaudit.engine.scoring import ScoredFinding, score_endpoint
from smtpaudit.engine.severity import SEVERITIES
from smtpaudit.outcomes import NOTHING_TO_OBSERVE, EndpointStatus, ProbeStatus, Reason, RuleOutcome

SESSION_PROBE = "smtp.session"
CONFIDENCE_RANK = {"certain": 0, "firm": 1, "tentative": 2}


def finding_fingerprint(rule_id: str, endpoint_id: str) -> str:
    """Stable across runs, distinct per rule and endpoint (used by SARIF, baselines and diffs)."""
    return hashlib.sha256(f"{rule_id}|{endpoint_id}".encode()).hexdigest()[:32]


def _probe_reason(p: Mapping[str, Any]) -> Reason:
    return Reason.coerce(p.get("error_reason"))


def endpoint_status(entry: Mapping[str, Any]) -> tuple[EndpointStatus, list[dict[str, str]]]:
    """Complete only when every planned probe finished; unreachable when no SMTP session was had.

    A probe skipped because there was nothing to observe (no STARTTLS offered) counts as finished;
    one skipped for any other reason (not installed, not permitted, endpoint unreachable) does not.
    """
    reasons: list[dict[str, str]] = []
    for p in entry.get("probes", []):
        status = ProbeStatus(p["status"]) if p.get("status") in ProbeStatus._value2member_map_ else ProbeStatus.ERROR
        if status is ProbeStatus.OK:
            continue
        reason = _probe_reason(p)
        if status is ProbeStatus.SKIPPED and reason in NOTHING_TO_OBSERVE:
            continue
        reasons.append({"probe": p["probe"], "reason": reason.value, "message": p.get("error_message") or reason.value})
    facts = entry.get("facts", {})
    session = next((p for p in entry.get("probes", []) if p["probe"] == SESSION_PROBE), None)
    if session is not None and session.get("status") != ProbeStatus.OK and facts.get("smtp.greeting.code") != 220:
        tls_seen = any(p["probe"].startswith("tls.") and p.get("status") == ProbeStatus.OK for p in entry.get("probes", []))
        if _probe_reason(session) is Reason.TLS_HANDSHAKE and tls_seen:
            # Implicit TLS that no client can complete: reached, its TLS judged, its SMTP never seen.
            return EndpointStatus.INCOMPLETE, reasons
        return EndpointStatus.UNREACHABLE, reasons
    if entry.get("error") and not any(p.get("status") == ProbeStatus.OK for p in entry.get("probes", [])):
        # The orchestrator could not even start (e.g. the deadline hit before the first probe).
        return EndpointStatus.UNREACHABLE, reasons or [{"probe": "", "reason": Reason.PROTOCOL.value, "message": entry["error"]}]
    return (EndpointStatus.COMPLETE if not reasons else EndpointStatus.INCOMPLETE), reasons


def _judgeable_facts(entry: Mapping[str, Any], status: EndpointStatus, fact_probe: Mapping[str, str],
                     na_probes: Mapping[str, str]) -> dict[str, Any]:
    facts = dict(entry.get("facts", {}))
    if status is EndpointStatus.UNREACHABLE:
        # Without a usable session nothing observed on the wire is a basis for judging (a 421
        # banner is not the server's banner): only the endpoint's own and DNS facts remain.
        facts = {k: v for k, v in facts.items() if k.startswith("endpoint.") or fact_probe.get(k, "").startswith("dns.")}
    # A probe with nothing to observe may still fill its facts with nulls; judged as values they
    # would turn its rules into passes, so they count as absent (the rules do not apply).
    return {k: v for k, v in facts.items() if not (v is None and fact_probe.get(k) in na_probes)}


def judge_entry(entry: dict[str, Any], rules: Mapping[str, Rule], fact_probe: Mapping[str, str]) -> None:
    """(Re)compute status, findings, passes, not-evaluated/not-applicable rules and the score of one entry."""
    status, reasons = endpoint_status(entry)
    entry["status"] = status.value
    entry["status_reasons"] = reasons
    probe_errors: dict[str, tuple[Reason, str]] = {}
    na_probes: dict[str, str] = {}
    unfinished: set[str] = set()
    for p in entry.get("probes", []):
        reason = _probe_reason(p)
        if p.get("status") == ProbeStatus.OK:
            continue
        if p.get("status") == ProbeStatus.SKIPPED and reason in NOTHING_TO_OBSERVE:
            na_probes[p["probe"]] = p.get("error_message") or reason.value
            continue
        unfinished.add(p["probe"])
        verb = "skipped" if p.get("status") == ProbeStatus.SKIPPED else "failed"
        probe_errors[p["probe"]] = (reason, f"{verb}: {reason.value}: {p.get('error_message') or ''}".rstrip(": "))
    if status is EndpointStatus.UNREACHABLE:
        for p in entry.get("probes", []):
            if not p["probe"].startswith("dns."):
                unfinished.add(p["probe"])
                probe_errors.setdefault(p["probe"], (Reason.UNREACHABLE, f"endpoint unreachable: {entry.get('error') or ''}".rstrip(": ")))
    facts = _judgeable_facts(entry, status, fact_probe, na_probes)
    findings, not_evaluated, passed, not_applicable = [], [], [], []
    for rule in rules.values():
        out = judge(rule, facts, fact_probe=fact_probe, probe_errors={k: v[1] for k, v in probe_errors.items()},
                    probe_not_applicable=na_probes)
        out = _no_pass_from_unfinished(out, fact_probe, unfinished, probe_errors)
        if out.status is RuleOutcome.FINDING:
            findings.append(_finding(rule, out, entry, fact_probe))
        elif out.status is RuleOutcome.NOT_EVALUATED:
            not_evaluated.append({"rule_id": rule.id, "reason": out.reason, "missing": out.missing,
                                  "cause": _cause(out, fact_probe, probe_errors)})
        elif out.status is RuleOutcome.PASSED:
            passed.append(rule.id)
        else:
            not_applicable.append(rule.id)
    findings.sort(key=finding_rank)
    entry["findings"] = findings
    entry["not_evaluated"] = not_evaluated
    entry["passed"] = sorted(passed)
    entry["not_applicable"] = sorted(not_applicable)
    rescore(entry, rules)


def _no_pass_from_unfinished(out: Outcome, fact_probe: Mapping[str, str], unfinished: set[str],
                             probe_errors: Mapping[str, tuple[Reason, str]]) -> Outcome:
    """A pass needs every fact it read to come from a probe that finished."""
    if out.status is not RuleOutcome.PASSED:
        return out
    cut = sorted({fact_probe.get(f, "") for f in out.evidence} & unfinished)
    if not cut:
        return out
    why = "; ".join(f"probe {p} {probe_errors[p][1]}" for p in cut if p in probe_errors)
    return Outcome(out.rule_id, RuleOutcome.NOT_EVALUATED,
                   reason=f"facts of an unfinished probe cannot prove a pass ({why})",
                   missing=[], evidence=out.evidence)


def _cause(out: Outcome, fact_probe: Mapping[str, str], probe_errors: Mapping[str, tuple[Reason, str]]) -> dict[str, str] | None:
    probes = sorted({fact_probe.get(f, "?") for f in (out.missing or list(out.evidence))} & set(probe_errors))
    if not probes:
        return None
    first = probes[0]
    return {"probe": first, "reason": probe_errors[first][0].value}


def _finding(rule: Rule, out: Outcome, entry: Mapping[str, Any], fact_probe: Mapping[str, str]) -> dict[str, Any]:
    return {
        "rule_id": rule.id,
        "title": rule.title,
        "severity": rule.severity,
        "score": rule.score,
        "confidence": out.confidence or rule.confidence,
        "family": rule.family,
        "tags": rule.tags,
        "message": out.message,
        "evidence": {"facts": out.evidence, "probes": sorted({fact_probe.get(f, "endpoint") for f in out.evidence})},
        "fingerprint": finding_fingerprint(rule.id, entry["endpoint"]["id"]),
        "grade_cap": rule.grade_cap,
        "suppressed": None,
        # Version guesses below the quality floor are listed but do not gate (engine/quality.py).
        "detection_quality": out.detection_quality,
        "detection_method": out.detection_method,
        "gate": out.gate,
    }


def finding_rank(f: Mapping[str, Any]) -> tuple[int, int, float, str]:
    """Severity first, then proven before guessed (certain/firm before tentative), then score."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return (rank.get(f["severity"], len(rank)), CONFIDENCE_RANK.get(f.get("confidence", "firm"), 1), -float(f.get("score", 0)), f["rule_id"])


def rescore(entry: dict[str, Any], rules: Mapping[str, Rule] | None = None) -> None:
    """Score an entry from all its findings; only a complete endpoint gets a number and a grade.

    Findings accepted by a baseline (``suppressed``) still count: a baseline changes the gate,
    never the grade.
    """
    status = EndpointStatus.coerce(entry.get("status"))
    for f in entry["findings"]:
        if rules and f["rule_id"] in rules:
            f["grade_cap"] = rules[f["rule_id"]].grade_cap
    scored = [
        ScoredFinding(f["rule_id"], f["severity"], f["confidence"], f.get("grade_cap"), f["title"],
                      gate=f.get("gate", True) is not False)
        for f in entry["findings"]
    ]
    entry["score"] = score_endpoint(scored, complete=status is EndpointStatus.COMPLETE).to_json()
