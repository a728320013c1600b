"""Render a report (or a diff) as one self-contained HTML page for auditors.

Jinja2 with autoescaping on for everything: every string that came from a server (banners,
replies, certificate names) is escaped, and the page carries a Content-Security-Policy that
allows no script, no network fetch and no external resource even if escaping were bypassed.
CSS and the SVG charts are inline; there are no fonts, images or scripts to load, so the file
opens offline and prints to PDF. This module only prepares view data; layout lives in
``templates/``.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from smtpaudit.engine.severity import SEVERITIES

TEMPLATES = Path(__file__).with_name("templates")
MAX_TRANSCRIPT_LINES = 200  # per probe in the appendix; the JSON report has them all
MAX_EXCERPT_LINES = 14  # transcript lines shown inside a finding
MAX_FACT_CHARS = 600
CERT_FACTS = ("subject", "issuer", "san", "not_before", "not_after", "days_left", "key_type", "key_bits", "key_curve",
              "signature_algorithm", "self_signed", "trusted", "verify_error", "matches_host", "sha256")
MTA_LABELS = (("postfix", "Postfix"), ("exim", "Exim"), ("opensmtpd", "OpenSMTPD"))
GRADE_CLASS = {"A+": "a", "A": "a", "B": "b", "C": "c", "D": "d", "E": "e", "F": "f"}


def visible(text: Any) -> str:
    """Control characters from servers shown as escapes, not interpreted (before HTML escaping)."""
    out = []
    for ch in str(text):
        if ch == "\t" or ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def fact_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = visible(text)
    return text if len(text) <= MAX_FACT_CHARS else text[:MAX_FACT_CHARS] + f"… ({len(text)} characters)"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its name: nothing is rendered unescaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = visible
    env.filters["fact"] = fact_value
    env.globals["SEVERITIES"] = SEVERITIES
    env.globals["grade_class"] = lambda g: GRADE_CLASS.get(g or "", "none")
    return env


def _bar_chart(counts: dict[str, int]) -> dict[str, Any]:
    """Horizontal bars, one per severity, scaled to the largest count (SVG coordinates)."""
    top = max(counts.values()) or 1
    bars = []
    for i, sev in enumerate(SEVERITIES):
        bars.append({"severity": sev, "count": counts[sev], "y": 8 + i * 26, "width": round(260 * counts[sev] / top, 1)})
    return {"bars": bars, "height": 8 + len(SEVERITIES) * 26}


def _needles(evidence: dict[str, Any]) -> list[str]:
    """Strings from the evidence facts worth finding in a transcript (banner text, mechanisms...)."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and len(v) >= 3:
            out.append(v.lower())
        elif isinstance(v, (list, tuple)):
            for item in v[:20]:
                walk(item)
        elif isinstance(v, dict):
            for item in list(v.values())[:20]:
                walk(item)

    for value in evidence.values():
        walk(value)
    return out


def _transcript_excerpt(entry: dict[str, Any], probes: list[str], evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """The transcript lines that show the evidence (each with the client line before it); the
    full transcripts are in the endpoint's appendix, linked from every finding."""
    needles = _needles(evidence)
    blocks = []
    for probe in probes:
        lines = entry.get("transcripts", {}).get(probe) or []
        picked: list[int] = []
        for i, ln in enumerate(lines):
            text = str(ln.get("text", "")).lower()
            if ln.get("dir") == "S" and any(n in text for n in needles):
                j = i
                while j > 0 and lines[j - 1].get("dir") == "S":
                    j -= 1  # back to the start of a multi-line reply
                if j > 0 and lines[j - 1].get("dir") == "C":
                    j -= 1
                picked.extend(range(j, i + 1))
        keep = sorted(set(picked))[:MAX_EXCERPT_LINES]
        blocks.append({"probe": probe, "lines": [lines[i] for i in keep], "total": len(lines)})
    return [b for b in blocks if b["total"]]


def _appendix(entry: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for probe, lines in sorted((entry.get("transcripts") or {}).items()):
        out.append({"probe": probe, "lines": lines[:MAX_TRANSCRIPT_LINES], "omitted": max(0, len(lines) - MAX_TRANSCRIPT_LINES),
                    "anchor": _anchor(entry, probe)})
    return out


def _anchor(entry: dict[str, Any], probe: str) -> str:
    digest = hashlib.sha256(f"{entry['endpoint']['id']}|{probe}".encode()).hexdigest()[:12]
    return f"t-{digest}"


def _cert(entry: dict[str, Any]) -> list[tuple[str, Any]]:
    facts = entry.get("facts", {})
    return [(k, facts[f"tls.cert.{k}"]) for k in CERT_FACTS if facts.get(f"tls.cert.{k}") is not None]


def _finding_view(entry: dict[str, Any], f: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    rem = rule.get("remediation") or {}
    evidence_facts = f["evidence"]["facts"]
    show_cert = f.get("family") == "tls" or any(k.startswith("tls.cert.") for k in evidence_facts)
    return {
        "f": f,
        "endpoint": entry["endpoint"],
        "anchor": f"f-{f['fingerprint']}",
        "description": rule.get("description", ""),
        "remediation_summary": rem.get("summary"),
        "remediation": [(label, rem[key]) for key, label in MTA_LABELS if rem.get(key)],
        "references": rule.get("references", []),
        "facts": sorted(evidence_facts.items()),
        "transcripts": [dict(b, anchor=_anchor(entry, b["probe"])) for b in _transcript_excerpt(entry, f["evidence"]["probes"], evidence_facts)],
        "cert": _cert(entry) if show_cert else [],
    }


def report_view(report: dict[str, Any]) -> dict[str, Any]:
    """Everything the report template shows, precomputed (the template only lays it out)."""
    rules = report.get("ruleset", {}).get("rules", {})
    by_sev: dict[str, list[dict[str, Any]]] = {s: [] for s in SEVERITIES}
    suppressed = []
    overview = []
    for entry in report["endpoints"]:
        counts = {s: 0 for s in SEVERITIES}
        for f in entry["findings"]:
            view = _finding_view(entry, f, rules.get(f["rule_id"], {}))
            if f.get("suppressed"):
                suppressed.append(view)
            else:
                counts[f["severity"]] += 1
                by_sev[f["severity"]].append(view)
        facts = entry.get("facts", {})
        overview.append({
            "entry": entry,
            "counts": counts,
            "software": " ".join(str(x) for x in (facts.get("software.product"), facts.get("software.version")) if x),
            "banner": facts.get("smtp.greeting.text") or facts.get("smtp.banner"),
            "suppressed": sum(1 for f in entry["findings"] if f.get("suppressed")),
            "appendix": _appendix(entry),
        })
    grades = [{"id": o["entry"]["endpoint"]["id"], "grade": (o["entry"].get("score") or {}).get("grade")} for o in overview]
    probes = [{"name": n, **meta} for n, meta in sorted(report.get("probes", {}).items())]
    targets_files = report.get("invocation", {}).get("options", {}).get("targets_files") or []
    return {
        "r": report,
        "summary": report["summary"],
        "chart": _bar_chart(report["summary"]["findings"]),
        "grades": grades,
        "grade_chart_height": 8 + 22 * len(grades),
        "overview": overview,
        "by_severity": [(s, by_sev[s]) for s in SEVERITIES if by_sev[s]],
        "suppressed": suppressed,
        "not_scanned": [e for e in report["endpoints"] if e["status"] in ("failed", "unreachable", "incomplete")],
        "not_evaluated": [(e["endpoint"]["id"], ne) for e in report["endpoints"] for ne in e.get("not_evaluated", [])],
        "probes": probes,
        "intrusive_run": [p["name"] for p in probes if p.get("intrusive")],
        "targets_files": targets_files,
        "policy": report.get("ruleset", {}).get("policy", {}),
        "baseline": report.get("baseline"),
        "skipped_rules": report.get("ruleset", {}).get("skipped_rules", []),
    }


def render(report: dict[str, Any], history: dict[str, Any] | None = None) -> str:
    """The HTML page of a scan report; ``history`` is the view data of the history section
    (built by smtpaudit.history.render from the history database), drawn by _history.html.j2."""
    return environment().get_template("report.html.j2").render(**report_view(report), history=history)


def write_fleet_index(skeleton: dict[str, Any], out: Any, *, files: dict[str, str] | None = None, link_ext: str | None = None) -> None:
    """The overview page of a fleet too large for ``render`` (report/stream.py): one row per endpoint
    from the skeleton report (status, grade, counts), written as Jinja streams it. ``files`` maps
    endpoint ids to their per-endpoint file names (without extension) under ``endpoints/``."""
    files = files or {}

    def rows() -> Any:
        for e in skeleton["endpoints"]:
            counts = {s: 0 for s in SEVERITIES}
            for f in e["findings"]:
                if not f.get("suppressed"):
                    counts[f["severity"]] += 1
            reasons = e.get("status_reasons") or []
            why = e.get("error") or "; ".join(f"{r.get('probe')}: {r.get('message')}" for r in reasons[:2])
            yield {"url": e["endpoint"].get("url") or e["endpoint"]["id"], "status": e.get("status"),
                   "grade": (e.get("score") or {}).get("grade"), "counts": counts, "why": (why or "")[:300],
                   "file": files.get(e["endpoint"]["id"], "")}

    template = environment().get_template("fleet.html.j2")
    for chunk in template.generate(r=skeleton, summary=skeleton["summary"], rows=rows(), link_ext=link_ext if files else None):
        out.write(chunk)


def render_diff(diff: dict[str, Any]) -> str:
    """The HTML page of a diff between two scans."""
    changed = [e for e in diff["endpoints"] if e["new"] or e["fixed"] or e["unverified"]
               or e["grade"]["old"] != e["grade"]["new"] or e["change"] != "compared"]
    return environment().get_template("diff.html.j2").render(d=diff, changed=changed, unchanged_count=len(diff["endpoints"]) - len(changed))
