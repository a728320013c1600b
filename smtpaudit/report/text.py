"""A short human summary of a report for the terminal (stdout when no output file is given)."""

from __future__ import annotations

from typing import Any, TextIO

from smtpaudit.engine.severity import SEVERITIES


def _clean(text: str) -> str:
    # Server-supplied text must not drive the terminal (escape sequences).
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def render(report: dict[str, Any], out: TextIO) -> None:
    s = report["summary"]
    out.write(f"smtpaudit {report['tool']['version']}: {s['endpoints']} endpoint(s), {s['failed']} not scanned, "
              f"rules: {report['ruleset']['count']} (policy {report['ruleset']['policy'].get('id')})\n")
    for entry in report["endpoints"]:
        ep = entry["endpoint"]
        out.write("\n")
        if entry["status"] == "failed":
            out.write(f"{ep['url']}  NOT SCANNED: {_clean(entry['error'])}\n")
            continue
        sc = entry["score"]
        inc = "" if sc["complete"] else f" (incomplete: {len(entry['not_evaluated'])} rule(s) not evaluated)"
        software = entry["facts"].get("software.product")
        version = entry["facts"].get("software.version")
        sw = f"  [{_clean(software)}{' ' + _clean(version) if version else ''}]" if software else ""
        out.write(f"{ep['url']}  grade {sc['grade']}  score {sc['score']}/100{inc}{sw}\n")
        for cap in sc["caps"]:
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
