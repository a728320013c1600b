"""Loading rule files: schema validation with errors that name the file and the key, overrides by id.

A rules directory holds one rule per ``*.toml`` file (grouped in family folders), plus two kinds
of data file the loader recognises by their top-level key: a known-vulnerable-versions table
(``[[vulnerability]]``, expanded into one tentative rule per entry by ``engine.vulntable``) and
software fingerprints (``[[fingerprint]]``, read by the probes, skipped here). ``policies/``
folders hold policies, not rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from smtpaudit.engine.conditions import ConditionError, validate
from smtpaudit.inputs import InputError, load_toml, shorten
from smtpaudit.engine.severity import CONFIDENCES, SEVERITIES, GRADES, severity_for_score

RULE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
ROLES = ("mx", "submission")  # the default of rules without applies_to.roles
ALL_ROLES = ROLES + ("domain",)  # "domain": mail-domain entries (DNS-only facts)
MODES = ("starttls", "implicit")
EXPECTS = ("finding", "pass", "not_evaluated")


class RuleError(ValueError):
    """A rule file is invalid. ``str()`` reads ``FILE: KEY: what is wrong``."""

    def __init__(self, path: str | Path, key: str, message: str) -> None:
        self.path = str(path)
        self.key = key
        self.message = message
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")


class RuleSetError(ValueError):
    """One or more invalid rule files; ``errors`` lists each."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass
class Rule:
    id: str
    title: str
    severity: str
    score: float
    confidence: str
    description: str
    when: dict[str, Any]
    path: str
    family: str
    tags: list[str] = field(default_factory=list)
    message: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    roles: tuple[str, ...] = ROLES
    modes: tuple[str, ...] = MODES
    grade_cap: str | None = None
    remediation: dict[str, str] = field(default_factory=dict)
    references: list[dict[str, str]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    facts: frozenset[str] = frozenset()
    origin: str = "builtin"
    # Version-based rules (engine.vulntable): how reliable a finding is (engine.quality), what the
    # endpoint must show for the flaw to be reachable, and the active test that overrides the guess.
    detection_quality: int | None = None
    detection_method: str | None = None
    detection_note: str | None = None  # why the base quality is what it is (appended to the message)
    quality_overrides: list[dict[str, Any]] = field(default_factory=list)  # {when, quality, method, reason}; first true wins
    requires: list[dict[str, Any]] = field(default_factory=list)  # {name, description, when}; each must hold
    active: dict[str, Any] | None = None  # {test, probe, ran, when, quality, method, reported_by}

    def summary(self) -> dict[str, Any]:
        """The rule's metadata as it is recorded in reports (everything but the examples)."""
        return {
            "id": self.id,
            "title": self.title,
            "family": self.family,
            "severity": self.severity,
            "score": self.score,
            "confidence": self.confidence,
            "tags": self.tags,
            "description": self.description,
            "remediation": self.remediation,
            "references": self.references,
            "applies_to": {"roles": list(self.roles), "modes": list(self.modes)},
            "grade_cap": self.grade_cap,
            "params": self.params,
            "facts": sorted(self.facts),
            "path": self.path,
            "detection_quality": self.detection_quality,
            "requires": [r["name"] for r in self.requires],
            "active_test": self.active["test"] if self.active else None,
        }


# key -> (required, accepted types, description for messages)
_TOP_KEYS: dict[str, tuple[bool, tuple[type, ...], str]] = {
    "id": (True, (str,), "kebab-case string equal to the file name"),
    "title": (True, (str,), "string"),
    "severity": (True, (str,), f"one of {', '.join(SEVERITIES)}"),
    "score": (True, (int, float), "number 0-10"),
    "confidence": (True, (str,), f"one of {', '.join(CONFIDENCES)}"),
    "description": (True, (str,), "string"),
    "when": (True, (dict,), "condition table"),
    "remediation": (True, (dict,), "table with summary and postfix/exim/opensmtpd/generic strings"),
    "references": (True, (list,), "array of tables with title and url"),
    "examples": (True, (list,), "array of tables with expect and facts"),
    "tags": (False, (list,), "array of strings"),
    "message": (False, (str,), "string with {fact} placeholders"),
    "params": (False, (dict,), "table of parameters"),
    "applies_to": (False, (dict,), "table with roles and/or modes"),
    "grade_cap": (False, (str,), f"one of {', '.join(GRADES)}"),
}
_REMEDIATION_KEYS = ("summary", "postfix", "exim", "opensmtpd", "generic")


def _type_error(path: Path, key: str, want: str) -> RuleError:
    return RuleError(path, key, f"expected {want}")


def parse_rule(data: Mapping[str, Any], path: Path, known_facts: Mapping[str, str], *, family: str, origin: str) -> Rule:
    """Validate one rule's data; raise RuleError naming the first bad key (``all_errors``: every one)."""
    rule, errors = check_rule(data, path, known_facts, family=family, origin=origin)
    if errors:
        raise errors[0]
    assert rule is not None
    return rule


def check_rule(data: Mapping[str, Any], path: Path, known_facts: Mapping[str, str], *, family: str, origin: str) -> tuple[Rule | None, list[RuleError]]:
    """Validate one rule's data and return it, or None and every problem found (each naming file and key).

    Sections are checked independently so that one pass lists every problem of the file; a
    section whose prerequisites are broken (e.g. ``when`` when ``params`` is not a table) is skipped."""
    errs: list[RuleError] = []
    for key in data:
        if key not in _TOP_KEYS:
            errs.append(RuleError(path, key, f"unknown key (allowed: {', '.join(_TOP_KEYS)})"))
    bad_type: set[str] = set()
    for key, (required, types, want) in _TOP_KEYS.items():
        if key in data and (not isinstance(data[key], types) or isinstance(data[key], bool)):
            errs.append(_type_error(path, key, want))
            bad_type.add(key)
    for key in ("severity", "confidence"):
        allowed = SEVERITIES if key == "severity" else CONFIDENCES
        if key in data and key not in bad_type and data[key] not in allowed:
            errs.append(_type_error(path, key, _TOP_KEYS[key][2]))
            bad_type.add(key)
    for key, (required, types, want) in _TOP_KEYS.items():
        if required and key not in data:
            errs.append(RuleError(path, key, f"missing required key ({want})"))
            bad_type.add(key)
    ok = lambda *keys: not any(k in bad_type for k in keys)  # noqa: E731
    rid = data.get("id") if ok("id") else None
    if rid is not None:
        if not RULE_ID.match(rid):
            errs.append(RuleError(path, "id", f"{shorten(rid)} is not kebab-case (a-z, 0-9, single hyphens)"))
        elif path.suffix == ".toml" and path.stem != rid and origin != "generated":
            errs.append(RuleError(path, "id", f"{shorten(rid)} must equal the file name {path.stem!r}"))
    score = float(data["score"]) if ok("score") else 0.0
    if ok("score", "severity") and severity_for_score(score) != data["severity"]:
        errs.append(RuleError(path, "score", f"{score} is outside the {data['severity']} band (critical 9.1-10, high 7.0-8.9, medium 4.0-6.9, low 0.1-3.9, info 0)"))
    if "grade_cap" in data and ok("grade_cap") and data["grade_cap"] not in GRADES:
        errs.append(_type_error(path, "grade_cap", _TOP_KEYS["grade_cap"][2]))
    tags = data.get("tags", []) if ok("tags") else []
    if not all(isinstance(t, str) for t in tags):
        errs.append(_type_error(path, "tags", "array of strings"))
    rem = data["remediation"] if ok("remediation") else {}
    for k, v in rem.items():
        if k not in _REMEDIATION_KEYS:
            errs.append(RuleError(path, f"remediation.{k}", f"unknown key (allowed: {', '.join(_REMEDIATION_KEYS)})"))
        elif not isinstance(v, str):
            errs.append(_type_error(path, f"remediation.{k}", "string"))
    if ok("remediation") and "summary" not in rem:
        errs.append(RuleError(path, "remediation.summary", "missing required key (string)"))
    refs = data["references"] if ok("references") else []
    if ok("references") and not refs:
        errs.append(RuleError(path, "references", "at least one reference is required"))
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict) or set(ref) - {"title", "url"} or not isinstance(ref.get("title"), str):
            errs.append(RuleError(path, f"references[{i}]", "expected a table with title (string) and optional url (string)"))
        elif "url" in ref and not (isinstance(ref["url"], str) and ref["url"].startswith(("https://", "http://"))):
            errs.append(RuleError(path, f"references[{i}].url", "expected an http(s) URL"))
    applies = data.get("applies_to", {}) if ok("applies_to") else {}
    for k, v in applies.items():
        allowed = {"roles": ALL_ROLES, "modes": MODES}.get(k)
        if allowed is None:
            errs.append(RuleError(path, f"applies_to.{k}", "unknown key (allowed: roles, modes)"))
        elif not isinstance(v, list) or not v or any(x not in allowed for x in v):
            errs.append(RuleError(path, f"applies_to.{k}", f"expected a non-empty array of {', '.join(allowed)}"))
    params = dict(data.get("params", {})) if ok("params") else {}
    facts: set[str] = set()
    if ok("when", "params"):
        cond_errors: list[ConditionError] = []
        facts = validate(data["when"], "when", known_facts, params, sink=cond_errors)
        errs.extend(RuleError(path, exc.path, exc.message) for exc in cond_errors)
    message = data.get("message") if ok("message") else None
    if message:
        for name in re.findall(r"\{([^{}]+)\}", message):
            if name.startswith("param:"):
                if name[6:] not in params:
                    errs.append(RuleError(path, "message", f"placeholder {{{shorten(name)[1:-1]}}} names no parameter"))
            elif name not in known_facts:
                errs.append(RuleError(path, "message", f"placeholder {{{shorten(name)[1:-1]}}} names no known fact"))
    examples = data["examples"] if ok("examples") else []
    good_examples = True
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or set(ex) - {"expect", "facts", "nulls", "params", "note"}:
            errs.append(RuleError(path, f"examples[{i}]", "expected a table with expect, facts and optional nulls, params, note"))
            good_examples = False
            continue
        if ex.get("expect") not in EXPECTS:
            errs.append(RuleError(path, f"examples[{i}].expect", f"expected one of {', '.join(EXPECTS)}"))
            good_examples = False
        if not isinstance(ex.get("facts"), dict):
            errs.append(RuleError(path, f"examples[{i}].facts", "expected a table of fact values"))
            good_examples = False
            continue
        if "params" in ex and not isinstance(ex["params"], dict):
            errs.append(RuleError(path, f"examples[{i}].params", "expected a table of parameter values"))
            good_examples = False
        nulls = ex.get("nulls", [])
        if not isinstance(nulls, list) or not all(isinstance(n, str) for n in nulls):
            errs.append(RuleError(path, f"examples[{i}].nulls", "expected an array of fact names whose value is null (TOML has no null)"))
            good_examples = False
            nulls = []
        for name in [*ex["facts"], *nulls]:
            if name not in known_facts:
                errs.append(RuleError(path, f"examples[{i}].facts.{name}", "unknown fact"))
    if good_examples and ok("examples"):
        expects = {ex["expect"] for ex in examples}
        if origin != "generated" and not {"finding", "pass"} <= expects:
            errs.append(RuleError(path, "examples", "needs at least one example with expect = \"finding\" and one with expect = \"pass\""))
    if errs:
        return None, errs
    return Rule(
        id=rid,
        title=data["title"],
        severity=data["severity"],
        score=score,
        confidence=data["confidence"],
        description=data["description"].strip(),
        when=data["when"],
        path=str(path),
        family=family,
        tags=list(tags),
        message=message,
        params=params,
        roles=tuple(applies.get("roles", ROLES)),
        modes=tuple(applies.get("modes", MODES)),
        grade_cap=data.get("grade_cap"),
        remediation={k: v.strip() for k, v in rem.items()},
        references=refs,
        examples=examples,
        facts=frozenset(facts),
        origin=origin,
    ), []


def load_directory(directory: Path, known_facts: Mapping[str, str], *, origin: str) -> tuple[list[Rule], list[RuleError]]:
    """Load every rule under ``directory``; collect errors instead of stopping at the first."""
    from smtpaudit.engine.vulntable import expand_table  # local: vulntable builds Rules

    rules: list[Rule] = []
    errors: list[RuleError] = []
    if not directory.is_dir():
        return [], [RuleError(directory, "", "is not a directory")]
    seen: dict[str, str] = {}
    for path in sorted(directory.rglob("*.toml")):
        rel = path.relative_to(directory)
        if "policies" in rel.parts[:-1] or any(part.startswith(".") for part in rel.parts):
            continue
        family = rel.parts[0] if len(rel.parts) > 1 else "general"
        try:
            data = load_toml(path, what="rule file", cached=True)
        except InputError as exc:
            errors.extend(RuleError(path, p.where, p.message) for p in exc.problems)
            continue
        try:
            if "vulnerability" in data:
                loaded = expand_table(data, path, known_facts)
            elif "fingerprint" in data:
                continue
            else:
                rule, problems = check_rule(data, path, known_facts, family=family, origin=origin)
                errors.extend(problems)
                loaded = [rule] if rule is not None else []
        except RuleError as exc:
            errors.append(exc)
            continue
        for rule in loaded:
            if rule.id in seen:
                errors.append(RuleError(path, "id", f"duplicate rule id {rule.id!r} (also in {seen[rule.id]})"))
                continue
            seen[rule.id] = str(path)
            rule.origin = origin if rule.origin != "generated" else "generated"
            rules.append(rule)
    return rules, errors


def load_rules(directories: list[Path], known_facts: Mapping[str, str]) -> dict[str, Rule]:
    """Load the built-in directory then each extra one; a later rule with the same id replaces the earlier."""
    merged: dict[str, Rule] = {}
    all_errors: list[RuleError] = []
    for i, directory in enumerate(directories):
        rules, errors = load_directory(directory, known_facts, origin="builtin" if i == 0 else str(directory))
        all_errors.extend(errors)
        for rule in rules:
            merged[rule.id] = rule
    if all_errors:
        raise RuleSetError(all_errors)
    return merged


@dataclass(frozen=True)
class Selection:
    """Which rules to run: explicit ids, skipped ids, required tags, skipped tags."""

    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()

    def apply(self, rules: Mapping[str, Rule]) -> dict[str, Rule]:
        unknown = [r for r in (*self.only, *self.skip) if r not in rules]
        if unknown:
            raise RuleSetError([RuleError("--rule/--skip-rule", "", f"unknown rule id {u!r}") for u in unknown])
        chosen = {}
        for rid, rule in rules.items():
            if self.only and rid not in self.only:
                continue
            if rid in self.skip:
                continue
            if self.tags and not set(self.tags) & set(rule.tags) and rule.family not in self.tags:
                continue
            if set(self.skip_tags) & (set(rule.tags) | {rule.family}):
                continue
            chosen[rid] = rule
        return chosen
