"""Judging one endpoint's facts against the selected rules: findings, passes, and rules not evaluated.

Pure: facts in, outcomes out. A rule whose condition is unknown (a fact it needs is absent) is
reported as not evaluated with the reason its probe gave, never as a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from smtpaudit.engine.conditions import evaluate
from smtpaudit.engine.rules import Rule
from smtpaudit.outcomes import RuleOutcome


@dataclass
class Outcome:
    rule_id: str
    status: RuleOutcome
    message: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    missing: list[str] = field(default_factory=list)


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    if value is None:
        return "unknown"
    return str(value)


def render_message(rule: Rule, facts: Mapping[str, Any]) -> str:
    if not rule.message:
        return rule.title

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("param:"):
            return _format_value(rule.params.get(name[6:]))
        return _format_value(facts.get(name))[:300]

    return re.sub(r"\{([^{}]+)\}", sub, rule.message)


def judge(
    rule: Rule,
    facts: Mapping[str, Any],
    *,
    fact_probe: Mapping[str, str],
    probe_errors: Mapping[str, str],
    probe_not_applicable: Mapping[str, str] | None = None,
) -> Outcome:
    """Evaluate one rule over one endpoint's facts.

    ``probe_not_applicable`` names probes that had nothing to observe on this endpoint (e.g. TLS
    probes when STARTTLS is not offered): a rule that lacks only their facts does not apply.
    """
    role, mode = facts.get("endpoint.role"), facts.get("endpoint.mode")
    if (role is not None and role not in rule.roles) or (mode is not None and mode not in rule.modes):
        return Outcome(rule.id, RuleOutcome.NOT_APPLICABLE, reason=f"applies to roles {list(rule.roles)} and modes {list(rule.modes)}")
    ev = evaluate(rule.when, facts, rule.params)
    if ev.value is True:
        return Outcome(rule.id, RuleOutcome.FINDING, render_message(rule, facts), evidence=dict(sorted(ev.used.items())))
    if ev.value is False:
        if ev.used and all(f.startswith("endpoint.") for f in ev.used):
            # Decided by what the endpoint is (role, port, a policy's scope), not by anything observed.
            return Outcome(rule.id, RuleOutcome.NOT_APPLICABLE, reason="out of the rule's scope for this endpoint")
        return Outcome(rule.id, RuleOutcome.PASSED, evidence=dict(sorted(ev.used.items())))
    missing_probes = {fact_probe.get(f, "?") for f in ev.missing}
    na = probe_not_applicable or {}
    if missing_probes and missing_probes <= set(na):
        return Outcome(rule.id, RuleOutcome.NOT_APPLICABLE, reason="; ".join(f"{p}: {na[p]}" for p in sorted(missing_probes)))
    reasons = []
    for probe in sorted(missing_probes):
        if probe in probe_errors:
            reasons.append(f"probe {probe} failed: {probe_errors[probe]}")
        else:
            reasons.append(f"probe {probe} did not observe it")
    return Outcome(
        rule.id,
        RuleOutcome.NOT_EVALUATED,
        reason="missing facts " + ", ".join(sorted(ev.missing)) + " (" + "; ".join(reasons) + ")",
        missing=sorted(ev.missing),
        evidence=dict(sorted(ev.used.items())),
    )


def judge_all(
    rules: Mapping[str, Rule],
    facts: Mapping[str, Any],
    *,
    fact_probe: Mapping[str, str],
    probe_errors: Mapping[str, str],
    probe_not_applicable: Mapping[str, str] | None = None,
) -> list[Outcome]:
    return [judge(r, facts, fact_probe=fact_probe, probe_errors=probe_errors, probe_not_applicable=probe_not_applicable)
            for r in rules.values()]


def check_examples(rule: Rule) -> list[str]:
    """Run a rule's own [[examples]]; return a message per example whose outcome differs."""
    problems = []
    for i, ex in enumerate(rule.examples):
        params = {**rule.params, **ex.get("params", {})}
        probe = Rule(**{**rule.__dict__, "params": params})
        facts = {**ex["facts"], **{name: None for name in ex.get("nulls", [])}}
        out = judge(probe, facts, fact_probe={}, probe_errors={})
        # Examples say "pass" for "the rule does not fire": passed or not applicable.
        got = {RuleOutcome.FINDING: "finding", RuleOutcome.PASSED: "pass", RuleOutcome.NOT_APPLICABLE: "pass"}.get(out.status, out.status.value)
        if got != ex["expect"]:
            problems.append(f"{rule.path}: examples[{i}]: expected {ex['expect']}, got {out.status}" + (f" ({out.reason})" if out.reason else ""))
    return problems
