"""Policies: named, versioned parameter sets that tune rules without editing them.

A policy file (``rules/policies/<name>.toml`` or any path given to ``--policy``)::

    id = "mozilla-intermediate"
    version = "6.0-1"
    title = "Mozilla intermediate (guidelines 6.0)"
    description = "..."
    skip = ["tls-13-required"]              # rules this policy switches off
    [params."tls-legacy-protocols"]         # parameter overrides per rule id
    minimum = "TLSv1.2"
    [severity]                              # severity overrides per rule id (the score moves
    "tls-anonymous-suites-mx" = "info"      # into that band: the rule's own if it fits, else a default)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from smtpaudit.engine.conditions import ConditionError, validate
from smtpaudit.engine.rules import Rule, RuleError, RuleSetError
from smtpaudit.engine.severity import severity_for_score
from smtpaudit.inputs import InputError, load_toml, shorten

_KEYS = {"id", "version", "title", "description", "skip", "params", "severity"}
# Score given to a rule whose severity a policy moves into a band its own score is not in.
BAND_SCORE = {"critical": 9.5, "high": 7.5, "medium": 5.0, "low": 3.0, "info": 0.0}


@dataclass(frozen=True)
class Policy:
    id: str
    version: str
    title: str
    description: str = ""
    skip: tuple[str, ...] = ()
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: str = ""
    severity: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "title": self.title, "skip": list(self.skip), "params": self.params,
                "severity": self.severity, "path": self.path}


DEFAULT_POLICY = Policy(id="default", version="1", title="smtpaudit defaults (each rule's own parameters)")


def find_policy(name_or_path: str, rule_dirs: list[Path]) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    for d in reversed(rule_dirs):
        p = d / "policies" / f"{name_or_path}.toml"
        if p.is_file():
            return p
    available = sorted({p.stem for d in rule_dirs for p in (d / "policies").glob("*.toml")})
    raise RuleSetError([RuleError(name_or_path, "--policy", f"no such policy; available: {', '.join(available) or 'none'}")])


def load_policy(path: Path) -> Policy:
    try:
        data = load_toml(path, what="policy", cached=True)
    except InputError as exc:
        raise RuleSetError([RuleError(path, p.where, p.message) for p in exc.problems]) from None
    for key in data:
        if key not in _KEYS:
            raise RuleSetError([RuleError(path, key, f"unknown key (allowed: {', '.join(sorted(_KEYS))})")])
    for key in ("id", "version", "title"):
        if not isinstance(data.get(key), str):
            raise RuleSetError([RuleError(path, key, "missing or not a string")])
    skip = data.get("skip", [])
    params = data.get("params", {})
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise RuleSetError([RuleError(path, "skip", "expected an array of rule ids")])
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise RuleSetError([RuleError(path, "params", "expected tables of parameters per rule id")])
    severity = data.get("severity", {})
    if not isinstance(severity, dict) or not all(v in BAND_SCORE for v in severity.values()):
        raise RuleSetError([RuleError(path, "severity", f"expected rule id = one of {', '.join(BAND_SCORE)}")])
    return Policy(
        id=data["id"], version=data["version"], title=data["title"], description=data.get("description", ""),
        skip=tuple(skip), params=params, path=str(path), severity=dict(severity),
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


def param_type_error(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace a rule parameter whose declared default is ``default``, or None.

    A value of another type would not fail loudly: ``legacy = 12`` where the rule compares a
    list of protocol names makes every comparison false and silently switches the rule off."""
    want, got = _kind(default), _kind(value)
    if want != got:
        return f"expected {'an' if want[0] in 'aeiou' else 'a'} {want} like the rule's default {shorten(default)}, got {got} {shorten(value)}"
    if isinstance(default, list) and default:
        item_kinds = {_kind(x) for x in default}
        bad = [x for x in value if _kind(x) not in item_kinds]
        if bad:
            return f"expected an array of {' or '.join(sorted(item_kinds))} values like the rule's default {shorten(default)}, got {shorten(bad[0])}"
    return None


def apply_policy(policy: Policy, rules: Mapping[str, Rule], known_facts: Mapping[str, str]) -> dict[str, Rule]:
    """Return the rules with the policy's parameters applied and its skipped rules removed."""
    errors: list[RuleError] = []
    for rid in [*policy.skip, *policy.params, *policy.severity]:
        if rid not in rules:
            errors.append(RuleError(policy.path or policy.id, rid, "policy names a rule that is not loaded"))
    out: dict[str, Rule] = {}
    for rid, rule in rules.items():
        if rid in policy.skip:
            continue
        overrides = policy.params.get(rid)
        if overrides:
            unknown = set(overrides) - set(rule.params)
            if unknown:
                errors.append(RuleError(policy.path or policy.id, f"params.{rid}.{sorted(unknown)[0]}", "the rule has no such parameter"))
                continue
            wrong = [(k, msg) for k, v in overrides.items() if (msg := param_type_error(rule.params[k], v))]
            if wrong:
                errors.extend(RuleError(policy.path or policy.id, f"params.{rid}.{k}", msg) for k, msg in wrong)
                continue
            params = {**rule.params, **overrides}
            try:
                validate(rule.when, "when", known_facts, params)
            except ConditionError as exc:
                errors.append(RuleError(policy.path or policy.id, f"params.{rid}", f"makes the rule invalid: {exc}"))
                continue
            rule = replace(rule, params=params)
        new_severity = policy.severity.get(rid)
        if new_severity and new_severity != rule.severity:
            score = rule.score if severity_for_score(rule.score) == new_severity else BAND_SCORE[new_severity]
            rule = replace(rule, severity=new_severity, score=score)
        out[rid] = rule
    if errors:
        raise RuleSetError(errors)
    return out
