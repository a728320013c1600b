"""Compare two reports of the same targets: new, fixed and unchanged findings and grade changes per endpoint.

Findings are matched by their fingerprint (rule id + endpoint id), so a changed message (another
version number, another reply text) is still the same finding. A finding is only *fixed* when
the new scan looked and did not see it: if the endpoint could not be scanned, or the rule was not
evaluated, or was not in the new rule set, the finding is *unverified*, never fixed. The nightly
job alerts on ``new`` findings (open, i.e. not suppressed) at or above ``--fail-on``.
"""

from __future__ import annotations

from typing import Any, TextIO

from smtpaudit.engine.severity import SEVERITIES, at_or_above

DIFF_VERSION = "1.0"


def _brief(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule_id": f["rule_id"],
        "title": f["title"],
        "severity": f["severity"],
        "confidence": f["confidence"],
        "message": f["message"],
        "fingerprint": f["fingerprint"],
        "suppressed": bool(f.get("suppressed")),
        # false: an unreliable version guess (engine/quality.py), listed but never an alert
        "gate": f.get("gate", True) is not False,
    }


def _grade(entry: dict[str, Any] | None) -> str | None:
    if entry is None or not entry.get("score"):
        return None
    return entry["score"]["grade"]


def _checked(entry: dict[str, Any], rule_id: str, rules: dict[str, Any]) -> bool:
    """Did this scan actually judge rule_id on this endpoint?"""
    if entry["status"] in ("failed", "unreachable") or rule_id not in rules:
        return False
    return rule_id in entry.get("passed", []) or rule_id in entry.get("not_applicable", []) or any(
        f["rule_id"] == rule_id for f in entry["findings"]
    )


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The diff model (plain JSON data), endpoints in the new report's order, then removed ones."""
    old_by = {e["endpoint"]["id"]: e for e in old["endpoints"]}
    new_by = {e["endpoint"]["id"]: e for e in new["endpoints"]}
    new_rules = new.get("ruleset", {}).get("rules", {})
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    order = [*new_by, *(i for i in old_by if i not in new_by)]
    endpoints = []
    totals = {"new": 0, "fixed": 0, "unchanged": 0, "unverified": 0}
    new_by_sev = {s: 0 for s in SEVERITIES}
    for eid in order:
        o, n = old_by.get(eid), new_by.get(eid)
        of = {f["fingerprint"]: f for f in (o["findings"] if o else [])}
        nf = {f["fingerprint"]: f for f in (n["findings"] if n else [])}
        added = [_brief(nf[k]) for k in nf if k not in of]
        unchanged = [_brief(nf[k]) for k in nf if k in of]
        fixed, unverified = [], []
        for k, f in of.items():
            if k in nf:
                continue
            if n is not None and _checked(n, f["rule_id"], new_rules):
                fixed.append(_brief(f))
            else:
                unverified.append(_brief(f))
        for group in (added, unchanged, fixed, unverified):
            group.sort(key=lambda f: (rank[f["severity"]], f["rule_id"]))
        for f in added:
            if not f["suppressed"] and f["gate"]:
                new_by_sev[f["severity"]] += 1
        status = "added" if o is None else "removed" if n is None else "compared"
        endpoints.append({
            "endpoint": eid,
            "url": (n or o)["endpoint"]["url"],
            "change": status,
            "status": {"old": o["status"] if o else None, "new": n["status"] if n else None},
            "error": n.get("error") if n else None,
            "grade": {"old": _grade(o), "new": _grade(n)},
            "score": {"old": (o.get("score") or {}).get("score") if o else None,
                      "new": (n.get("score") or {}).get("score") if n else None},
            "new": added,
            "fixed": fixed,
            "unchanged": unchanged,
            "unverified": unverified,
        })
        totals["new"] += len(added)
        totals["fixed"] += len(fixed)
        totals["unchanged"] += len(unchanged)
        totals["unverified"] += len(unverified)
    return {
        "diff_version": DIFF_VERSION,
        "old": {"started": old.get("started"), "ruleset": old.get("ruleset", {}).get("digest"), "tool": old["tool"]["version"]},
        "new": {"started": new.get("started"), "ruleset": new.get("ruleset", {}).get("digest"), "tool": new["tool"]["version"]},
        "totals": totals,
        "new_open_by_severity": new_by_sev,
        "grade_changes": sum(1 for e in endpoints if e["grade"]["old"] != e["grade"]["new"]),
        "endpoints": endpoints,
    }


def has_new_at_or_above(diff: dict[str, Any], threshold: str) -> bool:
    """True when an open (unsuppressed) new finding reaches the threshold: the nightly alert."""
    return any(count and at_or_above(sev, threshold) for sev, count in diff["new_open_by_severity"].items())


def _clean(text: Any) -> str:
    # Server-supplied text must not drive the terminal (escape sequences).
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def render_text(diff: dict[str, Any], out: TextIO) -> None:
    """A short terminal summary: only endpoints where something changed, then the totals."""
    t = diff["totals"]
    out.write(f"smtpaudit diff: {diff['old']['started']} -> {diff['new']['started']}\n")
    if diff["old"]["ruleset"] != diff["new"]["ruleset"]:
        out.write("note: the two scans used different rule sets; some changes may come from the rules, not the servers\n")
    for e in diff["endpoints"]:
        g_old, g_new = e["grade"]["old"] or "-", e["grade"]["new"] or "-"
        changed = e["new"] or e["fixed"] or e["unverified"] or g_old != g_new or e["change"] != "compared"
        if not changed:
            continue
        label = {"added": " (new endpoint)", "removed": " (no longer scanned)"}.get(e["change"], "")
        if e["status"]["new"] in ("failed", "unreachable", "incomplete"):
            label += f" ({e['status']['new']}, not graded: {_clean(e['error'] or 'a planned probe did not finish')})"
        out.write(f"\n{e['url']}{label}  grade {g_old} -> {g_new}\n")
        for f in e["new"]:
            sup = " [suppressed]" if f["suppressed"] else ""
            out.write(f"  + NEW     {f['severity'].upper():8} {f['rule_id']}: {_clean(f['message'])}{sup}\n")
        for f in e["fixed"]:
            out.write(f"  - FIXED   {f['severity'].upper():8} {f['rule_id']}\n")
        for f in e["unverified"]:
            out.write(f"  ? UNVERIFIED {f['severity'].upper():8} {f['rule_id']} (not re-checked)\n")
    out.write(f"\nnew: {t['new']}, fixed: {t['fixed']}, unchanged: {t['unchanged']}, unverified: {t['unverified']}, "
              f"grade changes: {diff['grade_changes']}\n")
