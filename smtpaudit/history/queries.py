"""What a month of nights answers, computed from the history database (plain JSON data out).

A finding is identified across nights by its ``fingerprint`` (rule id + endpoint id). Walking an
endpoint's observations in time order, a finding is *opened* the first time it is seen,
*fixed* when a later scan judged its rule on that endpoint and did not report it, and *reopened*
when it comes back after a fix. A scan that could not judge the rule (endpoint unreachable,
rule not evaluated or not in the rule set) changes nothing: absence of evidence is not a fix.

"Now" is the newest recorded scan, not the wall clock, so answers are reproducible.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from smtpaudit.history import shape
from smtpaudit.history.store import HistoryError, HistoryStore

SEVERITIES = ("critical", "high", "medium", "low", "info")
GRADES = ("A+", "A", "B", "C", "D", "E", "F")


@dataclass
class Finding:
    fingerprint: str
    rule_id: str
    severity: str
    suppressed: bool
    title: str | None
    message: str | None


@dataclass
class Obs:
    id: int
    scan_id: int
    endpoint_id: str
    started: str
    night: str
    status: str
    grade: str | None
    score: int | None
    software: str | None
    cert_sha256: str | None
    cert_not_after: str | None
    judged: frozenset[str]
    findings: dict[str, Finding] = field(default_factory=dict)

    def open_counts(self) -> dict[str, int]:
        counts = {s: 0 for s in SEVERITIES}
        for f in self.findings.values():
            if not f.suppressed and f.severity in counts:
                counts[f.severity] += 1
        return counts

    def accepted(self) -> int:
        return sum(1 for f in self.findings.values() if f.suppressed)


@dataclass
class Lifecycle:
    fingerprint: str
    endpoint_id: str
    rule_id: str
    severity: str
    title: str | None
    message: str | None
    suppressed: bool
    first_seen: str
    last_seen: str
    opened_at: str  # start of the current (or last) open streak
    state: str = "open"  # open | fixed
    fixed_at: str | None = None
    nights: set[str] = field(default_factory=set)
    unverified_nights: set[str] = field(default_factory=set)  # open, but that night's scan could not look
    events: list[dict[str, str]] = field(default_factory=list)
    fixes: list[tuple[str, str]] = field(default_factory=list)  # (opened_at, fixed_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint, "endpoint": self.endpoint_id, "rule_id": self.rule_id,
            "severity": self.severity, "title": self.title, "message": self.message, "suppressed": self.suppressed,
            "state": self.state, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "open_since": self.opened_at if self.state == "open" else None, "fixed_at": self.fixed_at,
            "nights_open": len(self.nights), "reopened": sum(1 for e in self.events if e["event"] == "reopened"),
            "events": self.events,
        }


@dataclass
class History:
    observations: list[Obs]
    now: str | None

    @property
    def nights(self) -> list[str]:
        return sorted({o.night for o in self.observations})


def days_between(a: str, b: str) -> float:
    return round((shape.parse_time(b) - shape.parse_time(a)).total_seconds() / 86400, 3)


def load(store: HistoryStore, *, endpoint: str | None = None) -> History:
    """Observations (with their findings) in time order; one endpoint's when given."""
    with store.errors("reading the history"):
        c = store.conn
        where, args = ("WHERE o.endpoint_id = ?", (endpoint,)) if endpoint else ("", ())
        rows = c.execute(
            "SELECT o.id, o.scan_id, o.endpoint_id, o.started, o.night, o.status, o.grade, o.score, o.software, "
            f"o.cert_sha256, o.cert_not_after, o.judged FROM observation o {where} ORDER BY o.started, o.scan_id, o.position", args).fetchall()
        judged: dict[str, frozenset[str]] = {}
        obs: dict[int, Obs] = {}
        for r in rows:
            if r[11] not in judged:
                judged[r[11]] = frozenset(store.blob(r[11]))
            obs[r[0]] = Obs(*r[:11], judged=judged[r[11]])
        fq = ("SELECT f.observation_id, k.fingerprint, k.rule_id, f.severity, f.suppressed, k.title, k.message "
              "FROM finding f JOIN finding_key k ON k.id = f.key" + (" WHERE k.endpoint_id = ?" if endpoint else ""))
        for oid, fp, rule, sev, sup, title, msg in c.execute(fq, args):
            if oid in obs:
                obs[oid].findings[fp] = Finding(fp, rule, sev, bool(sup), title, msg)
        now = c.execute("SELECT max(started) FROM scan").fetchone()[0]
    return History(list(obs.values()), now)


def lifecycles(history: History) -> dict[str, Lifecycle]:
    """Every finding ever seen, with its opened / fixed / reopened events."""
    out: dict[str, Lifecycle] = {}
    by_endpoint: dict[str, list[Obs]] = {}
    for o in history.observations:
        by_endpoint.setdefault(o.endpoint_id, []).append(o)
    for eid, observations in by_endpoint.items():
        mine: dict[str, Lifecycle] = {}
        for o in observations:
            for fp, f in o.findings.items():
                lc = mine.get(fp)
                if lc is None:
                    lc = mine[fp] = Lifecycle(fp, eid, f.rule_id, f.severity, f.title, f.message, f.suppressed,
                                              first_seen=o.started, last_seen=o.started, opened_at=o.started)
                    lc.events.append({"event": "opened", "at": o.started, "night": o.night})
                elif lc.state == "fixed":
                    lc.state, lc.opened_at, lc.fixed_at = "open", o.started, None
                    lc.events.append({"event": "reopened", "at": o.started, "night": o.night})
                lc.last_seen = o.started
                lc.nights.add(o.night)
                lc.severity, lc.title, lc.message, lc.suppressed = f.severity, f.title, f.message, f.suppressed
            for fp, lc in mine.items():
                if lc.state != "open" or fp in o.findings:
                    continue
                if lc.rule_id in o.judged:
                    lc.state, lc.fixed_at = "fixed", o.started
                    lc.fixes.append((lc.opened_at, o.started))
                    lc.events.append({"event": "fixed", "at": o.started, "night": o.night})
                else:
                    lc.unverified_nights.add(o.night)
        out.update(mine)
    return out


def _latest_per_endpoint(observations: list[Obs]) -> dict[str, Obs]:
    latest: dict[str, Obs] = {}
    for o in observations:  # time order: later ones win
        latest[o.endpoint_id] = o
    return latest


def trend(history: History, *, nights: int | None = None) -> dict[str, Any]:
    """Per night: endpoints scanned, statuses, grades, open findings by severity, new/fixed/reopened
    findings; and per endpoint: grade, score and open findings per night."""
    all_nights = history.nights
    shown = all_nights[-nights:] if nights else all_nights
    by_night: dict[str, list[Obs]] = {}
    for o in history.observations:
        by_night.setdefault(o.night, []).append(o)
    events: dict[str, dict[str, dict[str, int]]] = {n: {k: {s: 0 for s in SEVERITIES} for k in ("opened", "fixed", "reopened")} for n in all_nights}
    unverified = {n: 0 for n in all_nights}
    for lc in lifecycles(history).values():
        for e in lc.events:
            if lc.severity in SEVERITIES:
                events[e["night"]][e["event"]][lc.severity] += 1
        for n in lc.unverified_nights - lc.nights:  # a later observation that night may have seen it
            if not lc.suppressed:
                unverified[n] += 1
    fleet, per_endpoint = [], {}
    for n in shown:
        latest = _latest_per_endpoint(by_night[n])
        status = {"complete": 0, "incomplete": 0, "unreachable": 0}
        grades: dict[str, int] = {}
        open_counts = {s: 0 for s in SEVERITIES}
        accepted = 0
        scores = []
        for eid, o in latest.items():
            status[o.status] = status.get(o.status, 0) + 1
            if o.grade:
                grades[o.grade] = grades.get(o.grade, 0) + 1
            if o.score is not None:
                scores.append(o.score)
            for s, k in o.open_counts().items():
                open_counts[s] += k
            accepted += o.accepted()
            per_endpoint.setdefault(eid, []).append({"night": n, "status": o.status, "grade": o.grade, "score": o.score,
                                                     "open": o.open_counts()})
        fleet.append({
            "night": n, "scans": len({o.scan_id for o in by_night[n]}), "endpoints": len(latest), "status": status,
            "grades": {g: grades[g] for g in sorted(grades, key=lambda g: GRADES.index(g) if g in GRADES else 99)},
            "mean_score": round(statistics.fmean(scores), 1) if scores else None,
            "open": open_counts, "open_total": sum(open_counts.values()), "accepted": accepted,
            # open findings the night's scan could not re-check (endpoint down, rule not evaluated):
            # not in "open" (not seen), not fixed either
            "unverified": unverified[n],
            "new": sum(events[n]["opened"].values()), "fixed": sum(events[n]["fixed"].values()),
            "reopened": sum(events[n]["reopened"].values()),
        })
    return {"now": history.now, "nights": fleet, "endpoints": per_endpoint}


def findings(history: History, *, include_fixed: bool = False) -> dict[str, Any]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    items = [lc for lc in lifecycles(history).values() if include_fixed or lc.state == "open"]
    items.sort(key=lambda lc: (lc.state != "open", rank.get(lc.severity, 9), lc.first_seen, lc.endpoint_id, lc.rule_id))
    return {"now": history.now, "findings": [lc.to_json() for lc in items],
            "open": sum(1 for lc in items if lc.state == "open"), "fixed": sum(1 for lc in items if lc.state == "fixed")}


def mttr(history: History, *, days: int = 90) -> dict[str, Any]:
    """Time to fix per severity for fixes within the window (days before the newest scan), and
    the age of what is still open."""
    if history.now is None:
        return {"now": None, "window_days": days, "since": None, "severities": {}}
    now = shape.parse_time(history.now)
    since = shape.iso(now - timedelta(days=days))
    out: dict[str, Any] = {}
    lcs = lifecycles(history).values()
    for sev in SEVERITIES:
        durations = [days_between(a, b) for lc in lcs if lc.severity == sev for a, b in lc.fixes if b >= since]
        still_open = [days_between(lc.opened_at, history.now) for lc in lcs if lc.severity == sev and lc.state == "open" and not lc.suppressed]
        out[sev] = {
            "fixed": len(durations),
            "mean_days": round(statistics.fmean(durations), 3) if durations else None,
            "median_days": round(statistics.median(durations), 3) if durations else None,
            "max_days": max(durations) if durations else None,
            "open": len(still_open),
            "oldest_open_days": max(still_open) if still_open else None,
        }
    return {"now": history.now, "window_days": days, "since": since, "severities": out}


def endpoint_timeline(history: History, endpoint_id: str) -> dict[str, Any]:
    """One endpoint night by night, and what changed: status, grade, software, certificate, findings."""
    observations = [o for o in history.observations if o.endpoint_id == endpoint_id]
    if not observations:
        raise HistoryError(f"no endpoint {endpoint_id!r} in the history (ids look like mx.example.org:25; see 'history DB trend')")
    rows, events = [], []
    prev: Obs | None = None
    for o in observations:
        days_left = None
        if o.cert_not_after:
            try:
                days_left = (shape.parse_time(o.cert_not_after) - shape.parse_time(o.started)).days
            except ValueError:
                days_left = None
        rows.append({"at": o.started, "night": o.night, "status": o.status, "grade": o.grade, "score": o.score,
                     "open": o.open_counts(), "accepted": o.accepted(), "software": o.software,
                     "cert_sha256": o.cert_sha256, "cert_not_after": o.cert_not_after, "cert_days_left": days_left})
        if prev is None:
            events.append({"at": o.started, "event": "first_scan", "detail": f"status {o.status}, grade {o.grade or '-'}"})
        else:
            if o.status != prev.status:
                events.append({"at": o.started, "event": "status", "from": prev.status, "to": o.status})
            if o.grade != prev.grade:
                events.append({"at": o.started, "event": "grade", "from": prev.grade, "to": o.grade})
            if o.software and prev.software and o.software != prev.software:
                events.append({"at": o.started, "event": "software", "from": prev.software, "to": o.software})
            if o.cert_sha256 and prev.cert_sha256 and o.cert_sha256 != prev.cert_sha256:
                events.append({"at": o.started, "event": "certificate", "from": prev.cert_not_after, "to": o.cert_not_after,
                               "detail": "certificate replaced"})
        prev = o
    for lc in lifecycles(History(observations, history.now)).values():
        for e in lc.events:
            events.append({"at": e["at"], "event": f"finding_{e['event']}", "rule_id": lc.rule_id, "severity": lc.severity,
                           "fingerprint": lc.fingerprint})
    order = {"first_scan": 0, "status": 1, "grade": 2, "software": 3, "certificate": 4}
    events.sort(key=lambda e: (e["at"], order.get(e["event"], 5), e.get("rule_id", "")))
    last = rows[-1]
    return {"endpoint": endpoint_id, "now": history.now, "observations": rows, "events": events,
            "current": {"status": last["status"], "grade": last["grade"], "software": last["software"],
                        "cert_not_after": last["cert_not_after"], "cert_days_left": last["cert_days_left"]}}
