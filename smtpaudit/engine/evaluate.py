"""Judging one endpoint's facts against the selected rules: findings, passes, and rules not evaluated.

Pure: facts in, outcomes out. A rule whose condition is unknown (a fact it needs is absent) is
reported as not evaluated with the reason its probe gave, never as a pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from smtpaudit.engine.conditions import evaluate
from smtpaudit.engine.quality import gates
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
    # Set for version-based rules (engine.quality); None = the rule's own confidence / no quality.
    confidence: str | None = None
    detection_quality: int | None = None
    detection_method: str | None = None
    gate: bool = True


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    if value is None:
        return "unknown"
    return str(value)


def render_message(rule: Rule, facts: Mapping[str, Any], template: str | None = None) -> str:
    """The rule's message (or ``template``) with {fact} and {param:x} placeholders filled in."""
    template = template or rule.message
    if not template:
        return rule.title

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("param:"):
            return _format_value(rule.params.get(name[6:]))
        return _format_value(facts.get(name))[:300]

    return re.sub(r"\{([^{}]+)\}", sub, template)


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
    if rule.active:
        decided = _judge_active(rule, facts)
        if decided is not None:
            return decided
    ev = evaluate(rule.when, facts, rule.params)
    used = dict(ev.used)
    missing = set(ev.missing)
    if ev.value is True:
        # A true condition may have had unknown branches (an ``any`` with one true child): only the
        # preconditions' unknowns can stop a finding here.
        missing = set()
        for req in rule.requires:
            r = evaluate(req["when"], facts, rule.params)
            used.update(r.used)
            if r.value is False:
                # What the endpoint showed rules the flaw out, whatever the version says.
                return Outcome(rule.id, RuleOutcome.NOT_APPLICABLE, reason=f"precondition not met: {req['description']}",
                               evidence=dict(sorted(used.items())))
            if r.value is None:
                missing |= r.missing
        if not missing:
            return _finding(rule, facts, used)
    if ev.value is False:
        if ev.used and all(f.startswith("endpoint.") for f in ev.used):
            # Decided by what the endpoint is (role, port, a policy's scope), not by anything observed.
            return Outcome(rule.id, RuleOutcome.NOT_APPLICABLE, reason="out of the rule's scope for this endpoint")
        return Outcome(rule.id, RuleOutcome.PASSED, evidence=dict(sorted(used.items())))
    if ev.errors and not missing:
        return Outcome(rule.id, RuleOutcome.NOT_EVALUATED, reason="; ".join(ev.errors), evidence=dict(sorted(used.items())))
    missing_probes = {fact_probe.get(f, "?") for f in missing}
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
        reason="missing facts " + ", ".join(sorted(missing)) + " (" + "; ".join(reasons) + ")" + "".join(f"; {e}" for e in ev.errors),
        missing=sorted(missing),
        evidence=dict(sorted(used.items())),
    )


def _finding(rule: Rule, facts: Mapping[str, Any], used: dict[str, Any]) -> Outcome:
    """A finding, with the detection quality the first matching override (or the rule) gives it."""
    quality, method, note = rule.detection_quality, rule.detection_method, rule.detection_note
    for override in rule.quality_overrides:
        r = evaluate(override["when"], facts, rule.params)
        if r.value is True:
            quality, method, note = override["quality"], override["method"], override.get("reason")
            used.update(r.used)
            break
    message = render_message(rule, facts)
    if note:
        message = f"{message}; {render_message(rule, facts, note)}"
    if not gates(quality):
        message += f" [detection quality {quality}: listed, not counted in grade or exit code]"
    return Outcome(rule.id, RuleOutcome.FINDING, message, evidence=dict(sorted(used.items())), detection_quality=quality,
                   detection_method=method, gate=gates(quality))


def _judge_active(rule: Rule, facts: Mapping[str, Any]) -> Outcome | None:
    """The outcome an active test decides (it ran and its result is known), else None for the version path."""
    active = rule.active or {}
    ran = evaluate(active["ran"], facts, rule.params)
    if ran.value is not True:
        return None
    ev = evaluate(active["when"], facts, rule.params)
    used = dict(sorted({**ran.used, **ev.used}.items()))
    if ev.value is True:
        quality = active["quality"]
        message = render_message(rule, facts, active.get("message"))
        return Outcome(rule.id, RuleOutcome.FINDING, message, evidence=used, confidence="firm", detection_quality=quality,
                       detection_method=active["method"], gate=gates(quality))
    if ev.value is False:
        return Outcome(rule.id, RuleOutcome.PASSED, evidence=used,
                       reason=f"the active test {active['test']} ran and did not show the flaw; it overrides the version-based match")
    return None


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
