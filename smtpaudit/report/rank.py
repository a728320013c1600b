"""Ranking and grouping of a report's findings, the same for every renderer (text, HTML, SARIF).

Pure functions over the JSON report model; nothing here renders. Three jobs:

* order findings by severity, then confidence (a confirmed finding, certain or firm, before a
  tentative one of the same severity), then score, then rule id, so what is proven comes first
  (the engine's ``finding_rank``, which also orders the JSON report);
* fold the version-based CVE matches of one product/version into one group (one line in the
  terminal; expanded in HTML and JSON consumers), because twenty banner-based guesses about one
  banner are one fact about the banner, not twenty;
* group "not evaluated" rules by cause (the probe and reason that left their facts missing), so a
  probe that hit the deadline is one line, not ninety.

It also reads the endpoint status in both report shapes (complete/incomplete/unreachable and the
older scanned/partial/failed), so renderers need not care which one they were given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from smtpaudit.engine.judge import finding_rank
from smtpaudit.engine.severity import SEVERITIES

SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}  # critical=0 .. info=4
# Certain and firm both count as confirmed (observed behaviour); tentative is inference.
CONFIDENCE_TIER = {"certain": 0, "firm": 0, "tentative": 1}
VERSION_TAG = "version-based"
MIN_GROUP = 2  # a single version-based match stays a plain finding

# Old and new endpoint status vocabularies mapped to the new one.
STATUS = {"scanned": "complete", "partial": "incomplete", "failed": "unreachable",
          "complete": "complete", "incomplete": "incomplete", "unreachable": "unreachable"}

# The engine's reason text: "missing facts a, b (probe P failed: REASON: MESSAGE; probe Q did not observe it)".
_PROBE_CLAUSE = re.compile(r"\(probe (?P<probe>[\w.\-]+) (?P<rest>.*)\)\s*$", re.S)
_FAILED = re.compile(r"failed: (?P<reason>[a-z][\w\-]*): ?(?P<message>.*)$", re.S)


def status(entry: dict[str, Any]) -> str:
    """complete | incomplete | unreachable, whichever vocabulary the report uses."""
    return STATUS.get(str(entry.get("status")), "incomplete")


def is_confirmed(f: dict[str, Any]) -> bool:
    return CONFIDENCE_TIER.get(f.get("confidence", "tentative"), 1) == 0


def is_version_based(f: dict[str, Any]) -> bool:
    tags = f.get("tags") or []
    return VERSION_TAG in tags or ("cve" in tags and f.get("confidence") == "tentative" and f.get("family") == "software")


def finding_key(f: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: severity, then proven before guessed (tentative last), then score, then rule id.

    The engine's own key, so the JSON report's finding order and every rendering agree; a saved
    report with missing fields still sorts (defaults: info, tentative, score 0)."""
    return finding_rank({"severity": f.get("severity", "info"), "confidence": f.get("confidence", "tentative"),
                         "score": f.get("score") or 0, "rule_id": str(f.get("rule_id", ""))})


def rank_findings(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(findings, key=finding_key)


@dataclass
class Item:
    """One ranked row: a single finding, or a group of version-based matches of one product/version."""

    findings: list[dict[str, Any]]
    group: dict[str, Any] | None = None  # {"product", "version", "count", "ids", "max_score", "severities"}

    @property
    def lead(self) -> dict[str, Any]:
        return self.findings[0]

    @property
    def severity(self) -> str:
        return self.lead["severity"]

    @property
    def confidence(self) -> str:
        return self.lead["confidence"]

    @property
    def key(self) -> tuple[Any, ...]:
        return finding_key(self.lead)

    @property
    def rule_id(self) -> str:
        if self.group:
            return f"{self.group['product']}-{self.group['version']}-cves"
        return self.lead["rule_id"]

    @property
    def message(self) -> str:
        return group_message(self.group) if self.group else str(self.lead.get("message", ""))


def _cve_id(rule_id: str) -> str:
    return rule_id.upper() if rule_id.lower().startswith("cve-") else rule_id


def group_message(group: dict[str, Any]) -> str:
    """'exim 4.91: 21 known CVEs by version (17 high, 4 medium), highest score 8.9 (CVE-2019-10149),
    unverified: distributions backport fixes'."""
    noun = "CVE" if group["count"] == 1 else "CVEs"
    split = ", ".join(f"{n} {s}" for s, n in group["severities"].items())
    return (f"{group['product']} {group['version']}: {group['count']} known {noun} by version ({split}), highest score "
            f"{group['max_score']:.1f} ({_cve_id(group['top'])}); unverified: distributions backport fixes")


def group_items(findings: Iterable[dict[str, Any]]) -> list[Item]:
    """Ranked items for one endpoint's findings: version-based matches of one product/version folded
    into a group placed where its highest-ranked member would be."""
    ranked = rank_findings(findings)
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in ranked:
        if is_version_based(f):
            facts = (f.get("evidence") or {}).get("facts") or {}
            key = (str(facts.get("software.product") or "software"), str(facts.get("software.version") or "?"))
            buckets.setdefault(key, []).append(f)
    grouped = {id(f): key for key, members in buckets.items() if len(members) >= MIN_GROUP for f in members}
    items: list[Item] = []
    emitted: set[tuple[str, str]] = set()
    for f in ranked:
        key = grouped.get(id(f))
        if key is None:
            items.append(Item([f]))
            continue
        if key in emitted:
            continue
        emitted.add(key)
        members = buckets[key]
        sev_counts = {s: 0 for s in SEVERITIES}
        for m in members:
            sev_counts[m["severity"]] = sev_counts.get(m["severity"], 0) + 1
        top = max(members, key=lambda m: (float(m.get("score") or 0), -SEVERITY_ORDER.get(m["severity"], 9)))
        items.append(Item(members, group={
            "product": key[0], "version": key[1], "count": len(members),
            "ids": [_cve_id(m["rule_id"]) for m in members],
            "max_score": float(top.get("score") or 0), "top": top["rule_id"],
            "severities": {s: n for s, n in sev_counts.items() if n},
        }))
    return items


def open_findings(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in entry.get("findings", []) if not f.get("suppressed")]


def counts(findings: Iterable[dict[str, Any]]) -> dict[str, int]:
    out = {s: 0 for s in SEVERITIES}
    for f in findings:
        out[f["severity"]] = out.get(f["severity"], 0) + 1
    return out


def worst_confirmed(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The highest-ranked open finding that was observed, not inferred from a version."""
    confirmed = [f for f in open_findings(entry) if is_confirmed(f)]
    return rank_findings(confirmed)[0] if confirmed else None


@dataclass
class Cause:
    """Why a set of rules was not evaluated on one endpoint."""

    probe: str | None
    reason: str | None
    message: str
    rule_ids: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        who = f"probe {self.probe}" if self.probe else "missing facts"
        why = ": ".join(x for x in (self.reason, self.message) if x)
        return f"{who}: {why}" if why else who


def parse_cause(ne: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """(probe, reason, message) of a not-evaluated entry: the contract's ``cause`` when present,
    else parsed from the reason text ('missing facts x (probe P failed: REASON: MESSAGE)')."""
    cause = ne.get("cause")
    reason_text = str(ne.get("reason") or "")
    probe = reason = None
    message = ""
    m = _PROBE_CLAUSE.search(reason_text)
    if m:
        probe = m.group("probe")
        first = m.group("rest").split("; probe ", 1)[0].strip()
        fm = _FAILED.match(first)
        if fm:
            reason, message = fm.group("reason"), fm.group("message").strip()
        else:
            message = first
    if isinstance(cause, dict) and cause.get("probe"):
        if cause["probe"] != probe:
            message = ""  # the parsed text was about another probe
        return str(cause["probe"]), (str(cause["reason"]) if cause.get("reason") else reason), message
    if probe:
        return probe, reason, message
    # No probe named: group by the reason text without the per-rule list of facts.
    return None, None, re.sub(r"^missing facts? [^()]*", "missing facts", reason_text).strip() or "unknown"


def not_evaluated_causes(entry: dict[str, Any]) -> list[Cause]:
    """Not-evaluated rules of one endpoint grouped by cause, largest group first."""
    groups: dict[tuple[str | None, str | None, str], Cause] = {}
    for ne in entry.get("not_evaluated", []) or []:
        probe, reason, message = parse_cause(ne)
        # The same probe failure has one message; keep the first, group on probe + reason.
        key = (probe, reason, "" if probe else message)
        c = groups.setdefault(key, Cause(probe, reason, message))
        c.rule_ids.append(ne["rule_id"])
    return sorted(groups.values(), key=lambda c: (-len(c.rule_ids), c.probe or "", c.reason or ""))


def caps_line(entry: dict[str, Any]) -> str | None:
    """'capped at F by: plaintext-auth-accepted; D by: open-relay-unconfirmed', or None."""
    caps = ((entry.get("score") or {}).get("caps")) or []
    if not caps:
        return None
    by_cap: dict[str, list[str]] = {}
    for c in caps:
        by_cap.setdefault(str(c.get("cap")), []).append(str(c.get("rule_id")))
    order = sorted(by_cap, key=lambda g: "F E D C B A A+".split().index(g) if g in "F E D C B A A+".split() else 9)
    first, *rest = order
    parts = [f"capped at {first} by: {', '.join(by_cap[first])}"] + [f"{g} by: {', '.join(by_cap[g])}" for g in rest]
    return "; ".join(parts)


def item_view(item: Item) -> dict[str, Any]:
    """A JSON-friendly form of an item (for HTML views and machine consumers)."""
    return {
        "rule_id": item.rule_id,
        "severity": item.severity,
        "confidence": item.confidence,
        "message": item.message,
        "group": item.group,
        "findings": item.findings,
    }
