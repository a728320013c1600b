"""The terminal summary of a report: one verdict line per endpoint first, then ranked findings.

Order and grouping come from ``rank`` (the same as HTML and SARIF): confirmed findings before
tentative ones of the same severity, version-based CVE matches of one product/version as one
line, grade caps as one line, not-evaluated rules as one line per cause.

Plain output is byte-stable (pipes, CI logs): no colour, no wrapping unless a width is given.
Colour (ANSI SGR only) and wrapping are opt-in through ``Style``; ``style_for`` decides them
from ``--color``, ``NO_COLOR``, ``TERM`` and whether the stream is a terminal.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from dataclasses import dataclass
from typing import Any, TextIO

from smtpaudit.engine.severity import SEVERITIES
from smtpaudit.report import rank

_SGR = {
    "critical": "1;37;41", "high": "1;31", "medium": "33", "low": "36", "info": "2",
    "A+": "1;32", "A": "1;32", "B": "32", "C": "33", "D": "33", "E": "31", "F": "1;31", "none": "2",
    "bold": "1", "dim": "2", "warn": "1;33",
}
MIN_WIDTH = 40


@dataclass(frozen=True)
class Style:
    color: bool = False
    width: int | None = None  # None: never wrap

    def paint(self, text: str, kind: str) -> str:
        code = _SGR.get(kind)
        return f"\033[{code}m{text}\033[0m" if self.color and code else text


def use_color(mode: str, stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """--color always/never win; auto means a terminal, NO_COLOR unset or empty, TERM not dumb."""
    env = os.environ if environ is None else environ
    if mode == "always":
        return True
    if mode == "never":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


def style_for(stream: TextIO, mode: str = "auto", environ: dict[str, str] | None = None) -> Style:
    """Wrap to the terminal's width on a terminal, or to $COLUMNS when set; otherwise never."""
    env = os.environ if environ is None else environ
    width: int | None = None
    isatty = getattr(stream, "isatty", None)
    if env.get("COLUMNS", "").isdigit():
        width = int(env["COLUMNS"])
    elif isatty and isatty():
        width = shutil.get_terminal_size((100, 24)).columns
    if width is not None:
        width = max(width, MIN_WIDTH)
    return Style(color=use_color(mode, stream, env), width=width)


def _clean(text: Any) -> str:
    # Server-supplied text must not drive the terminal (escape sequences).
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def emit(out: TextIO, style: Style, text: str, *, indent: str = "", hang: str = "", painted: tuple[str, str] | None = None) -> None:
    """Write one logical line, wrapped with a hanging indent when a width is set. ``painted`` =
    (prefix, kind): the prefix (already in ``text``) is coloured after wrapping."""
    lines = [indent + text]
    if style.width and len(lines[0]) > style.width:
        lines = textwrap.wrap(text, width=style.width, initial_indent=indent, subsequent_indent=indent + hang,
                              break_on_hyphens=False, break_long_words=True) or [indent]
    if painted and style.color:
        prefix, kind = painted
        lines[0] = lines[0].replace(prefix, style.paint(prefix, kind), 1)
    out.write("\n".join(lines) + "\n")


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {sev}" for sev, n in counts.items() if n) or "no findings"


def _software(entry: dict[str, Any]) -> str:
    facts = entry.get("facts") or {}
    product, version = facts.get("software.product"), facts.get("software.version")
    if not product:
        return ""
    return _clean(product) + (f" {_clean(version)}" if version else "")


def _grade(entry: dict[str, Any]) -> str:
    return str(((entry.get("score") or {}).get("grade")) or "-")


def verdict_line(entry: dict[str, Any]) -> tuple[str, str]:
    """(text, grade key for colour): 'smtp://h:25  grade F 0/100  1 critical, 3 high  worst: x  [exim 4.91]'."""
    ep = entry["endpoint"]
    st = rank.status(entry)
    if st == "unreachable":
        why = entry.get("error") or "; ".join(r.get("message") or r.get("reason", "") for r in entry.get("status_reasons") or []) or "no usable reply"
        return f"{_clean(ep['url'])}  UNREACHABLE: {_clean(why)}", "F"
    sc = entry.get("score") or {}
    grade = sc.get("grade")
    opened = rank.open_findings(entry)
    parts = [_clean(ep["url"])]
    if st == "incomplete" or grade is None:
        reasons = entry.get("status_reasons") or []
        why = f" ({_clean(reasons[0].get('probe'))}: {_clean(reasons[0].get('reason'))})" if reasons else ""
        parts.append(f"INCOMPLETE (no grade){why}: {len(entry.get('not_evaluated') or [])} rule(s) not evaluated")
    else:
        parts.append(f"grade {grade} {sc.get('score')}/100")
    parts.append(_counts_text(rank.counts(opened)))
    worst = rank.worst_confirmed(entry)
    if worst:
        parts.append(f"worst: {worst['rule_id']}")
    sw = _software(entry)
    if sw:
        parts.append(f"[{sw}]")
    return "  ".join(parts), (grade if st == "complete" and grade else "none")


def _header(report: dict[str, Any]) -> str:
    s = report["summary"]
    rs = report.get("ruleset") or {}
    n = s.get("endpoints", len(report["endpoints"]))
    states = {k: 0 for k in ("complete", "incomplete", "unreachable")}
    for e in report["endpoints"]:
        states[rank.status(e)] += 1
    state_text = ", ".join(f"{v} {k}" for k, v in states.items() if v) or "nothing scanned"
    skipped = len(rs.get("skipped_rules") or [])
    rules = f"{rs.get('count', '?')} rules"
    if skipped:
        rules += f" ({skipped} more need --intrusive)"
    policy = (rs.get("policy") or {}).get("id")
    return f"smtpaudit {report['tool']['version']}: {n} endpoint(s): {state_text}; {rules}; policy {policy}"


def render_verdicts(report: dict[str, Any], out: TextIO, style: Style | None = None) -> None:
    """The short form: one verdict line per endpoint (what stdout gets next to ``-o FILE``)."""
    style = style or Style()
    for entry in report["endpoints"]:
        line, gkey = verdict_line(entry)
        grade_text = line.split("  ", 2)[1] if "  " in line else ""
        emit(out, style, line, hang="    ", painted=(grade_text, gkey) if grade_text else None)


def _endpoint_details(entry: dict[str, Any], out: TextIO, style: Style) -> None:
    ep = entry["endpoint"]
    st = rank.status(entry)
    head = _clean(ep["url"])
    sw = _software(entry)
    out.write("\n")
    emit(out, style, head + (f"  [{sw}]" if sw else ""), painted=(head, "bold"))
    if st == "unreachable":
        emit(out, style, f"not scanned: {_clean(entry.get('error') or 'no usable reply')}", indent="  ", hang="    ")
    caps = rank.caps_line(entry)
    if caps:
        emit(out, style, caps, indent="  ", hang="    ")
    items = rank.group_items(rank.open_findings(entry))
    if not items and st != "unreachable":
        emit(out, style, "no open findings", indent="  ")
    for item in items:
        sev = f"{item.severity.upper():8}"
        tent = " (tentative)" if item.confidence == "tentative" and not item.group else ""
        body = f"{item.rule_id}: {_clean(item.message)}{tent}" if not item.group else f"{_clean(item.message)}; list in the report"
        emit(out, style, f"{sev} {body}", indent="  ", hang=" " * 9,
              painted=(sev.rstrip(), item.severity))
    suppressed = [f for f in entry.get("findings", []) if f.get("suppressed")]
    if suppressed:
        ids = ", ".join(f["rule_id"] for f in rank.rank_findings(suppressed))
        emit(out, style, f"suppressed by baseline ({len(suppressed)}): {ids}", indent="  ", hang="    ", painted=("suppressed", "dim"))
    for cause in rank.not_evaluated_causes(entry):
        n = len(cause.rule_ids)
        emit(out, style, f"not evaluated: {n} rule{'s' if n != 1 else ''}: {_clean(cause.label)}", indent="  ", hang="    ",
              painted=("not evaluated", "warn"))


def render(report: dict[str, Any], out: TextIO, style: Style | None = None, *, verdicts_only: bool = False) -> None:
    """The terminal summary. Without ``style``: plain, unwrapped, byte-stable."""
    style = style or Style()
    emit(out, style, _header(report), hang="    ")
    stop = report.get("interrupted")
    if stop:
        emit(out, style, f"INTERRUPTED by {_clean(stop['signal'])}: {stop['endpoints_finished']} endpoint(s) finished, "
                         f"{len(stop['not_finished'])} target(s) not scanned", hang="    ", painted=("INTERRUPTED", "warn"))
    render_verdicts(report, out, style)
    if verdicts_only:
        return
    for entry in report["endpoints"]:
        _endpoint_details(entry, out, style)
    s = report["summary"]
    totals = {sev: s["findings"].get(sev, 0) for sev in SEVERITIES}
    out.write("\n")
    emit(out, style, f"findings: {_counts_text(totals)}; worst grade: {s.get('worst_grade') or '-'}", hang="    ")
    gate = report.get("gate")
    if gate:
        accepted = f"; {gate['accepted']} finding(s) accepted by the baseline" if gate.get("accepted") else ""
        verdict = "passed" if gate["passed"] else f"failed (exit {gate['exit_code']})"
        emit(out, style, f"gate: {verdict}{accepted}", hang="    ")
