"""History answers as text for the terminal, and the view data of the HTML report's history
section (sparklines and the findings-over-time chart as SVG geometry; the template draws it)."""

from __future__ import annotations

from typing import Any, TextIO

from smtpaudit.history.queries import GRADES, SEVERITIES

SPARK_W, SPARK_H = 150, 30
CHART_W, CHART_H, CHART_PAD = 720, 200, 34
MAX_CHART_NIGHTS = 60


def clean(text: Any) -> str:
    """Server-supplied text must not drive the terminal (escape sequences)."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text))


def _sev_cells(counts: dict[str, int]) -> str:
    return " ".join(f"{counts.get(s, 0):>4}" for s in SEVERITIES)


def trend_text(data: dict[str, Any], out: TextIO) -> None:
    if not data["nights"]:
        out.write("no scans recorded\n")
        return
    out.write(f"{'night':10} {'scans':>5} {'endp':>5} {'compl':>5} {'inc':>4} {'unr':>4}  {'crit':>4} {'high':>4} {' med':>4} {' low':>4} {'info':>4}"
              f" {'acc':>4} {'unvf':>4} {'new':>4} {'fixd':>4} {'reop':>4}  grades\n")
    for n in data["nights"]:
        st = n["status"]
        grades = " ".join(f"{g}:{c}" for g, c in n["grades"].items()) or "-"
        out.write(f"{n['night']:10} {n['scans']:>5} {n['endpoints']:>5} {st['complete']:>5} {st['incomplete']:>4} {st['unreachable']:>4}  "
                  f"{_sev_cells(n['open'])} {n['accepted']:>4} {n['unverified']:>4} {n['new']:>4} {n['fixed']:>4} {n['reopened']:>4}  {grades}\n")
    out.write("\nper endpoint (grade per night, oldest first; '-' = no grade, '.' = not scanned that night):\n")
    nights = [n["night"] for n in data["nights"]]
    for eid, rows in sorted(data["endpoints"].items()):
        by_night = {r["night"]: r for r in rows}
        cells = []
        for night in nights:
            r = by_night.get(night)
            cells.append("." if r is None else (r["grade"] or "-"))
        last = rows[-1]
        out.write(f"  {clean(eid):40} {' '.join(f'{c:>2}' for c in cells)}   open now {sum(last['open'].values())}\n")


def findings_text(data: dict[str, Any], out: TextIO) -> None:
    out.write(f"{'severity':8} {'state':6} {'first seen':20} {'last seen':20} {'nights':>6} {'reop':>4}  endpoint / rule\n")
    for f in data["findings"]:
        acc = " [accepted]" if f["suppressed"] else ""
        state = f["state"] if f["state"] == "open" else f"fixed {f['fixed_at']}"
        out.write(f"{f['severity'].upper():8} {f['state']:6} {f['first_seen']:20} {f['last_seen']:20} {f['nights_open']:>6} {f['reopened']:>4}  "
                  f"{clean(f['endpoint'])} {f['rule_id']}{acc}\n")
        if f["state"] != "open":
            out.write(f"{'':8} {state}\n")
    out.write(f"{data['open']} open, {data['fixed']} fixed (as of {data['now']})\n")


def mttr_text(data: dict[str, Any], out: TextIO) -> None:
    out.write(f"time to fix, fixes since {data['since']} ({data['window_days']} days before {data['now']}):\n")
    out.write(f"{'severity':8} {'fixed':>5} {'mean d':>8} {'median d':>8} {'max d':>8}   {'open':>4} {'oldest open d':>13}\n")

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:g}"

    for sev, s in data["severities"].items():
        out.write(f"{sev:8} {s['fixed']:>5} {num(s['mean_days']):>8} {num(s['median_days']):>8} {num(s['max_days']):>8}   "
                  f"{s['open']:>4} {num(s['oldest_open_days']):>13}\n")


def endpoint_text(data: dict[str, Any], out: TextIO) -> None:
    cur = data["current"]
    out.write(f"{clean(data['endpoint'])}: now {cur['status']}, grade {cur['grade'] or '-'}")
    if cur["software"]:
        out.write(f", {clean(cur['software'])}")
    if cur["cert_not_after"]:
        out.write(f", certificate expires {clean(cur['cert_not_after'])} ({cur['cert_days_left']} days left at the last scan)")
    out.write("\n\n")
    for e in data["events"]:
        kind = e["event"]
        if kind.startswith("finding_"):
            text = f"{kind[8:]:8} {e['severity'].upper():8} {e['rule_id']}"
        elif kind == "first_scan":
            text = f"first scan: {clean(e['detail'])}"
        elif kind == "certificate":
            text = f"certificate replaced (expiry {clean(e['from'])} -> {clean(e['to'])})"
        else:
            text = f"{kind} {clean(e['from'] or '-')} -> {clean(e['to'] or '-')}"
        out.write(f"{e['at']}  {text}\n")
    out.write("\nnight       status      grade score " + " ".join(f"{s[:4]:>4}" for s in SEVERITIES) + "  cert days left\n")
    for r in data["observations"]:
        days = "-" if r["cert_days_left"] is None else str(r["cert_days_left"])
        out.write(f"{r['night']:11} {r['status']:11} {r['grade'] or '-':5} {'-' if r['score'] is None else r['score']:>5} "
                  f"{_sev_cells(r['open'])}  {days}\n")


# ---------------------------------------------------------------------- HTML view data

def _grade_y(grade: str | None) -> float | None:
    if grade not in GRADES:
        return None
    return round(3 + (SPARK_H - 6) * GRADES.index(grade) / (len(GRADES) - 1), 1)


def sparkline(rows: list[dict[str, Any]], nights: list[str]) -> dict[str, Any]:
    """Polyline segments of the grade per night (A+ on top, F at the bottom); nights without a
    grade break the line, so an unreachable night is visible as a gap, never as a good grade."""
    step = (SPARK_W - 6) / max(1, len(nights) - 1)
    by_night = {r["night"]: r for r in rows}
    segments: list[list[str]] = []
    current: list[str] = []
    dots = []
    for i, night in enumerate(nights):
        r = by_night.get(night)
        y = _grade_y(r["grade"]) if r else None
        if y is None:
            if current:
                segments.append(current)
            current = []
            continue
        x = round(3 + i * step, 1)
        current.append(f"{x},{y}")
        dots.append({"x": x, "y": y, "grade": r["grade"], "night": night})
    if current:
        segments.append(current)
    return {"segments": [" ".join(s) for s in segments], "dots": dots, "width": SPARK_W, "height": SPARK_H}


def fleet_chart(nights: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacked bars: open findings per night by severity."""
    nights = nights[-MAX_CHART_NIGHTS:]
    top = max([sum(n["open"].values()) for n in nights] + [1])
    inner_w, inner_h = CHART_W - CHART_PAD - 8, CHART_H - 36
    step = inner_w / max(1, len(nights))
    bars = []
    for i, n in enumerate(nights):
        x = round(CHART_PAD + i * step + step * 0.15, 1)
        y = 8 + inner_h
        for sev in reversed(SEVERITIES):  # critical on top of the stack
            count = n["open"].get(sev, 0)
            if not count:
                continue
            h = round(inner_h * count / top, 1)
            y = round(y - h, 1)
            bars.append({"x": x, "y": y, "w": round(step * 0.7, 1), "h": h, "severity": sev, "count": count, "night": n["night"]})
    labels = [{"x": round(CHART_PAD + i * step + step / 2, 1), "text": n["night"][5:]} for i, n in enumerate(nights)
              if i == 0 or i == len(nights) - 1 or i % max(1, len(nights) // 6) == 0]
    return {"bars": bars, "labels": labels, "top": top, "width": CHART_W, "height": CHART_H, "base": 8 + inner_h,
            "pad": CHART_PAD, "nights": len(nights)}


def html_view(trend_data: dict[str, Any], diff: dict[str, Any] | None, previous_night: str | None) -> dict[str, Any]:
    nights = [n["night"] for n in trend_data["nights"]][-MAX_CHART_NIGHTS:]
    endpoints = []
    for eid, rows in sorted(trend_data["endpoints"].items()):
        rows = [r for r in rows if r["night"] in set(nights)]
        if not rows:
            continue
        graded = [r["grade"] for r in rows if r["grade"]]
        endpoints.append({"id": eid, "spark": sparkline(rows, nights), "grade": rows[-1]["grade"],
                          "first": graded[0] if graded else None, "nights": len(rows)})
    new, fixed = [], []
    if diff is not None:
        for e in diff["endpoints"]:
            new.extend({"endpoint": e["endpoint"], **f} for f in e["new"])
            fixed.extend({"endpoint": e["endpoint"], **f} for f in e["fixed"])
    return {
        "nights": len(trend_data["nights"]), "first_night": nights[0] if nights else None, "last_night": nights[-1] if nights else None,
        "chart": fleet_chart(trend_data["nights"]), "endpoints": endpoints,
        "previous_night": previous_night, "new": new, "fixed": fixed, "compared": diff is not None,
        "severities": SEVERITIES,
    }
