"""Loading rule files: schema validation with errors that name the file and the key, overrides by id.

A rules directory holds one rule per ``*.toml`` file (grouped in family folders), plus two kinds
of data file the loader recognises by their top-level key: a known-vulnerable-versions table
(``[[vulnerability]]``, expanded into one tentative rule per entry by ``engine.vulntable``) and
software fingerprints (``[[fingerprint]]``, read by the probes, skipped here). ``policies/``
folders hold policies, not rules.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from smtpaudit import tomlcache
from smtpaudit.engine.conditions import ConditionError, validate
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
    """Validate one rule's data; raise RuleError naming the first bad key."""
    for key in data:
        if key not in _TOP_KEYS:
            raise RuleError(path, key, f"unknown key (allowed: {', '.join(_TOP_KEYS)})")
    # Wrong values of keys that are present say more than keys that are missing: report them first.
    for key, (required, types, want) in _TOP_KEYS.items():
        if key in data and (not isinstance(data[key], types) or isinstance(data[key], bool)):
            raise _type_error(path, key, want)
    if data.get("severity", SEVERITIES[0]) not in SEVERITIES:
        raise _type_error(path, "severity", _TOP_KEYS["severity"][2])
    if data.get("confidence", CONFIDENCES[0]) not in CONFIDENCES:
        raise _type_error(path, "confidence", _TOP_KEYS["confidence"][2])
    for key, (required, types, want) in _TOP_KEYS.items():
        if required and key not in data:
            raise RuleError(path, key, f"missing required key ({want})")
    rid = data["id"]
    if not RULE_ID.match(rid):
        raise RuleError(path, "id", f"{rid!r} is not kebab-case (a-z, 0-9, single hyphens)")
    if path.suffix == ".toml" and path.stem != rid and origin != "generated":
        raise RuleError(path, "id", f"{rid!r} must equal the file name {path.stem!r}")
    if data["severity"] not in SEVERITIES:
        raise _type_error(path, "severity", _TOP_KEYS["severity"][2])
    if data["confidence"] not in CONFIDENCES:
        raise _type_error(path, "confidence", _TOP_KEYS["confidence"][2])
    score = float(data["score"])
    if severity_for_score(score) != data["severity"]:
        raise RuleError(path, "score", f"{score} is outside the {data['severity']} band (critical 9.1-10, high 7.0-8.9, medium 4.0-6.9, low 0.1-3.9, info 0)")
    if "grade_cap" in data and data["grade_cap"] not in GRADES:
        raise _type_error(path, "grade_cap", _TOP_KEYS["grade_cap"][2])
    tags = data.get("tags", [])
    if not all(isinstance(t, str) for t in tags):
        raise _type_error(path, "tags", "array of strings")
    rem = data["remediation"]
    for k, v in rem.items():
        if k not in _REMEDIATION_KEYS:
            raise RuleError(path, f"remediation.{k}", f"unknown key (allowed: {', '.join(_REMEDIATION_KEYS)})")
        if not isinstance(v, str):
            raise _type_error(path, f"remediation.{k}", "string")
    if "summary" not in rem:
        raise RuleError(path, "remediation.summary", "missing required key (string)")
    refs = data["references"]
    if not refs:
        raise RuleError(path, "references", "at least one reference is required")
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict) or set(ref) - {"title", "url"} or not isinstance(ref.get("title"), str):
            raise RuleError(path, f"references[{i}]", "expected a table with title (string) and optional url (string)")
        if "url" in ref and not (isinstance(ref["url"], str) and ref["url"].startswith(("https://", "http://"))):
            raise RuleError(path, f"references[{i}].url", "expected an http(s) URL")
    applies = data.get("applies_to", {})
    for k, v in applies.items():
        allowed = {"roles": ALL_ROLES, "modes": MODES}.get(k)
        if allowed is None:
            raise RuleError(path, f"applies_to.{k}", "unknown key (allowed: roles, modes)")
        if not isinstance(v, list) or not v or any(x not in allowed for x in v):
            raise RuleError(path, f"applies_to.{k}", f"expected a non-empty array of {', '.join(allowed)}")
    params = dict(data.get("params", {}))
    try:
        facts = validate(data["when"], "when", known_facts, params)
    except ConditionError as exc:
        raise RuleError(path, exc.path, exc.message) from None
    message = data.get("message")
    if message:
        for name in re.findall(r"\{([^{}]+)\}", message):
            if name.startswith("param:"):
                if name[6:] not in params:
                    raise RuleError(path, "message", f"placeholder {{{name}}} names no parameter")
            elif name not in known_facts:
                raise RuleError(path, "message", f"placeholder {{{name}}} names no known fact")
    examples = data["examples"]
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or set(ex) - {"expect", "facts", "nulls", "params", "note"}:
            raise RuleError(path, f"examples[{i}]", "expected a table with expect, facts and optional nulls, params, note")
        if ex.get("expect") not in EXPECTS:
            raise RuleError(path, f"examples[{i}].expect", f"expected one of {', '.join(EXPECTS)}")
        if not isinstance(ex.get("facts"), dict):
            raise RuleError(path, f"examples[{i}].facts", "expected a table of fact values")
        nulls = ex.get("nulls", [])
        if not isinstance(nulls, list) or not all(isinstance(n, str) for n in nulls):
            raise RuleError(path, f"examples[{i}].nulls", "expected an array of fact names whose value is null (TOML has no null)")
        for name in [*ex["facts"], *nulls]:
            if name not in known_facts:
                raise RuleError(path, f"examples[{i}].facts.{name}", "unknown fact")
    expects = {ex["expect"] for ex in examples}
    if origin != "generated" and not {"finding", "pass"} <= expects:
        raise RuleError(path, "examples", "needs at least one example with expect = \"finding\" and one with expect = \"pass\"")
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
    )


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
            data = tomlcache.load(path)
        except tomllib.TOMLDecodeError as exc:
            errors.append(RuleError(path, "", f"not valid TOML: {exc}"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(RuleError(path, "", f"cannot read: {exc}"))
            continue
        try:
            if "vulnerability" in data:
                loaded = expand_table(data, path, known_facts)
            elif "fingerprint" in data:
                continue
            else:
                loaded = [parse_rule(data, path, known_facts, family=family, origin=origin)]
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
