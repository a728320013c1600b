"""A short human summary of a report for the terminal (stdout when no output file is given)."""

from __future__ import annotations

from typing import Any, TextIO

from smtpaudit.engine.severity import SEVERITIES
from smtpaudit.outcomes import EndpointStatus


def _clean(text: str) -> str:
    # Server-supplied text must not drive the terminal (escape sequences).
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def render(report: dict[str, Any], out: TextIO) -> None:
    s = report["summary"]
    not_complete = s.get("incomplete", s.get("partial", 0)) + s.get("unreachable", s.get("failed", 0))
    out.write(f"smtpaudit {report['tool']['version']}: {s['endpoints']} endpoint(s), {not_complete} not fully scanned, "
              f"rules: {report['ruleset']['count']} (policy {report['ruleset']['policy'].get('id')})\n")
    stop = report.get("interrupted")
    if stop:
        out.write(f"INTERRUPTED by {stop['signal']}: {stop['endpoints_finished']} endpoint(s) finished, "
                  f"{len(stop['not_finished'])} target(s) not scanned\n")
    for entry in report["endpoints"]:
        ep = entry["endpoint"]
        out.write("\n")
        status = EndpointStatus.coerce(entry.get("status"))
        if status is EndpointStatus.UNREACHABLE:
            out.write(f"{ep['url']}  NOT SCANNED, no grade: {_clean(entry.get('error') or 'unreachable')}\n")
            continue
        sc = entry["score"] or {}
        if status is EndpointStatus.INCOMPLETE:
            why = "; ".join(f"{r['probe']}: {r['message']}" for r in (entry.get("status_reasons") or [])[:2])
            out.write(f"{ep['url']}  INCOMPLETE, no grade ({len(entry['not_evaluated'])} rule(s) not evaluated): {_clean(why)[:200]}\n")
        grade_text = f"grade {sc.get('grade')}  score {sc.get('score')}/100" if status is EndpointStatus.COMPLETE else ""
        inc = ""
        software = entry["facts"].get("software.product")
        version = entry["facts"].get("software.version")
        sw = f"  [{_clean(software)}{' ' + _clean(version) if version else ''}]" if software else ""
        if grade_text:
            out.write(f"{ep['url']}  {grade_text}{inc}{sw}\n")
        elif sw:
            out.write(f"  software:{sw}\n")
        for cap in sc.get("caps", []):
            out.write(f"  cap: {_clean(cap['reason'])}\n")
        open_f = [f for f in entry["findings"] if not f.get("suppressed")]
        if not open_f:
            out.write("  no findings\n")
        for f in open_f:
            tent = " (tentative)" if f["confidence"] == "tentative" else ""
            out.write(f"  {f['severity'].upper():8} {f['rule_id']}: {_clean(f['message'])}{tent}\n")
        for f in entry["findings"]:
            if f.get("suppressed"):
                out.write(f"  suppressed {f['rule_id']}: {_clean(f['suppressed'].get('justification', ''))}\n")
        for ne in entry["not_evaluated"]:
            out.write(f"  not evaluated {ne['rule_id']}: {_clean(ne['reason'])}\n")
    counts = ", ".join(f"{s['findings'][sev]} {sev}" for sev in SEVERITIES if s["findings"][sev])
    out.write(f"\nfindings: {counts or 'none'}; worst grade: {s['worst_grade'] or '-'}\n")
    gate = report.get("gate")
    if gate:
        accepted = f"; {gate['accepted']} finding(s) accepted by the baseline" if gate.get("accepted") else ""
        verdict = "passed" if gate["passed"] else f"failed (exit {gate['exit_code']})"
        out.write(f"gate: {verdict}{accepted}\n")
