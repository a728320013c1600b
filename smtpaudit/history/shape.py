"""Read the parts of a report entry history needs, from both report contracts.

Older reports say ``scanned | partial | failed``; the current contract says ``complete |
incomplete | unreachable`` and gives a grade only to complete endpoints. History stores the new
vocabulary and, for old reports, keeps a grade only where the new contract would have one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

STATUS = {
    "complete": "complete", "incomplete": "incomplete", "unreachable": "unreachable",
    "scanned": "complete", "partial": "incomplete", "failed": "unreachable",
}


def status(entry: dict[str, Any]) -> str:
    # An unknown status is not a success: it counts as incomplete (never graded, never "fixed").
    return STATUS.get(str(entry.get("status")), "incomplete")


def grade_and_score(entry: dict[str, Any]) -> tuple[str | None, int | None]:
    score = entry.get("score") if isinstance(entry.get("score"), dict) else None
    if score is None or status(entry) != "complete":
        return None, None
    return score.get("grade"), score.get("score")


def judged_rules(entry: dict[str, Any], ruleset_rules: Any) -> list[str]:
    """Rules this scan actually judged on this endpoint (finding, pass or not applicable).

    A finding missing from a later scan is only *fixed* when that scan judged its rule: an
    unreachable endpoint, a rule not evaluated or not in the rule set leaves it unverified."""
    if status(entry) == "unreachable":
        return []
    ids = set(entry.get("passed") or []) | set(entry.get("not_applicable") or [])
    ids |= {f.get("rule_id") for f in entry.get("findings") or [] if isinstance(f, dict)}
    if isinstance(ruleset_rules, dict) and ruleset_rules:
        ids &= set(ruleset_rules)
    return sorted(i for i in ids if isinstance(i, str))


def software(facts: dict[str, Any]) -> str | None:
    parts = [str(facts[k]) for k in ("software.product", "software.version") if facts.get(k)]
    return " ".join(parts) or None


def parse_time(text: str) -> datetime:
    """A report timestamp (``2026-11-28T14:09:42Z``) as an aware UTC datetime."""
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def night(started: str) -> str:
    return parse_time(started).date().isoformat()
