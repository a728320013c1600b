"""Baselines: accepted findings (rule id + endpoint pattern + justification + optional expiry).

A baseline is a TOML file::

    version = 1
    [[accept]]
    rule = "software-version-disclosed"        # a rule id, or "*" for every rule
    endpoint = "mx*.example.org:25"             # glob over the endpoint id (host:port), its URL or its host
    justification = "Banner required by the upstream relay contract"
    expires = 2025-06-30                        # optional TOML date: stops suppressing after that day

Applying one marks each matching finding ``suppressed`` (it stays in every report, SARIF
``suppressions``) so it no longer counts toward the grade or the exit code. Entries past their
expiry stop suppressing and are listed (and warned about); entries that matched nothing are
listed as unused. ``create`` writes a baseline accepting every open finding of a report.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpaudit.inputs import InputError, Problem, load_toml, shorten
from smtpaudit.report.build import summarize

BASELINE_VERSION = 1
PLACEHOLDER = "TODO:"  # how `baseline create` starts a justification nobody has written yet
_KEYS = {"rule", "endpoint", "justification", "expires"}


class BaselineError(ValueError):
    """A baseline file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Entry:
    rule: str
    endpoint: str
    justification: str
    expires: dt.date | None
    index: int  # 1-based position in the file, for messages

    def matches(self, rule_id: str, endpoint: dict[str, Any]) -> bool:
        if self.rule != "*" and self.rule != rule_id:
            return False
        pattern = self.endpoint.lower()
        names = (endpoint["id"], endpoint.get("url", ""), endpoint.get("host", ""))
        # fnmatch treats [...] as a class; IPv6 ids like [::1]:25 are compared literally first.
        return any(pattern == n.lower() or fnmatch.fnmatchcase(n.lower(), pattern) for n in names if n)

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and today > self.expires

    def describe(self) -> dict[str, Any]:
        return {"entry": self.index, "rule": self.rule, "endpoint": self.endpoint,
                "expires": self.expires.isoformat() if self.expires else None}


@dataclass(frozen=True)
class Baseline:
    path: str
    entries: tuple[Entry, ...]


def load(path: str | Path) -> Baseline:
    """Read and check a baseline file; every problem names the file and the entry (TOML key)."""
    p = Path(path)
    data = load_toml(p, what="baseline")  # InputError: file and place of the problem
    problems: list[Problem] = []
    version = data.get("version", BASELINE_VERSION)
    if version != BASELINE_VERSION or isinstance(version, bool):
        problems.append(Problem("version", f"baseline version {shorten(version)} is not supported (expected {BASELINE_VERSION})"))
    for key in sorted(set(data) - {"version", "accept"}):
        problems.append(Problem(key, "unknown key; expected version and [[accept]] tables"))
    raw = data.get("accept", [])
    if not isinstance(raw, list):
        problems.append(Problem("accept", "must be an array of tables ([[accept]])"))
        raw = []
    entries = []
    for i, item in enumerate(raw, start=1):
        where = f"accept[{i}]"
        if not isinstance(item, dict):
            problems.append(Problem(where, "must be a table"))
            continue
        bad = len(problems)
        for key in sorted(set(item) - _KEYS):
            problems.append(Problem(f"{where}.{key}", f"unknown key; allowed: {', '.join(sorted(_KEYS))}"))
        for key in ("rule", "endpoint", "justification"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                problems.append(Problem(f"{where}.{key}", "required, a non-empty string"))
        expires = item.get("expires")
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                problems.append(Problem(f"{where}.expires", f"{shorten(expires)} is not a date (YYYY-MM-DD)"))
        elif isinstance(expires, dt.datetime):
            expires = expires.date()
        elif expires is not None and not isinstance(expires, dt.date):
            problems.append(Problem(f"{where}.expires", "must be a date (YYYY-MM-DD)"))
        if len(problems) == bad:
            entries.append(Entry(item["rule"].strip(), item["endpoint"].strip(), item["justification"].strip(), expires, i))
    if problems:
        raise InputError(p, problems)
    return Baseline(str(path), tuple(entries))


def apply(report: dict[str, Any], baseline: Baseline | None, *, today: dt.date | None = None) -> list[str]:
    """Mark the findings a baseline accepts (replacing earlier marks) and record the baseline in
    ``report['baseline']``. Grades and scores are left alone: a baseline changes the gate, never
    what the endpoint is. Returns the warnings to show (expired entries, unjustified entries)."""
    applier = Applier(baseline, today=today)
    for entry in report["endpoints"]:
        applier.mark(entry)
    return applier.finish(report)


class Applier:
    """``apply`` one entry at a time (a streamed fleet scan marks each entry as it finishes), then
    ``finish`` the report (summary, the baseline record, warnings)."""

    def __init__(self, baseline: Baseline | None, *, today: dt.date | None = None) -> None:
        self.baseline = baseline
        self.today = today or dt.datetime.now(dt.timezone.utc).date()
        self.used: set[int] = set()
        self.expired_hits: dict[int, Entry] = {}

    def mark(self, entry: dict[str, Any]) -> None:
        baseline, today = self.baseline, self.today
        for f in entry["findings"]:
            f["suppressed"] = None
            if baseline is None:
                continue
            for b in baseline.entries:
                if not b.matches(f["rule_id"], entry["endpoint"]):
                    continue
                if b.expired(today):
                    self.expired_hits[b.index] = b
                    continue
                self.used.add(b.index)
                f["suppressed"] = {
                    "justification": b.justification,
                    "source": baseline.path,
                    "entry": b.index,
                    "pattern": b.endpoint,
                    "expires": b.expires.isoformat() if b.expires else None,
                }
                break

    def finish(self, report: dict[str, Any]) -> list[str]:
        return _finish(report, self.baseline, self.today, self.used, self.expired_hits)


def _finish(report: dict[str, Any], baseline: Baseline | None, today: dt.date, used: set[int],
            expired_hits: dict[int, Entry]) -> list[str]:
    report["summary"] = summarize(report["endpoints"])
    if baseline is None:
        report["baseline"] = None
        return []
    expired = [b for b in baseline.entries if b.expired(today)]
    report["baseline"] = {
        "path": baseline.path,
        "entries": len(baseline.entries),
        "applied_on": today.isoformat(),
        "suppressed": report["summary"]["suppressed"],
        "expired": [b.describe() for b in expired],
        "unused": [b.describe() for b in baseline.entries if b.index not in used and not b.expired(today)],
    }
    warnings = []
    unjustified = [b for b in baseline.entries if b.justification.startswith(PLACEHOLDER) and b.index in used]
    report["baseline"]["unjustified"] = [b.describe() for b in unjustified]
    if unjustified:
        warnings.append(f"baseline {baseline.path}: {len(unjustified)} entr{'y' if len(unjustified) == 1 else 'ies'} still "
                        f"carr{'ies' if len(unjustified) == 1 else 'y'} the placeholder justification (first: entry {unjustified[0].index}, "
                        f"{unjustified[0].rule} on {unjustified[0].endpoint}); accepted anyway, but an auditor will ask why")
    for b in expired:
        hit = " and no longer suppresses a finding" if b.index in expired_hits else ""
        warnings.append(f"baseline {baseline.path}: entry {b.index} ({b.rule} on {b.endpoint}) expired on {b.expires.isoformat()}{hit}")
    return warnings


def _toml_str(text: str) -> str:
    # A TOML basic string: escape backslash, quote and control characters.
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def create(report: dict[str, Any], *, justification: str | None = None, expires: dt.date | None = None, source: str = "") -> str:
    """A baseline (TOML text) accepting every open finding of a report, one entry per rule and endpoint."""
    lines = [
        "# smtpaudit baseline: findings accepted on purpose. Each entry needs a real justification;",
        "# set 'expires' so accepted risks are reviewed. Fields: rule (id or \"*\"), endpoint (glob over",
        "# host:port, URL or host), justification, expires (YYYY-MM-DD, optional).",
        f"# Created from {source or 'a report'} (scan of {report.get('started', '?')}).",
        f"version = {BASELINE_VERSION}",
    ]
    seen: set[tuple[str, str]] = set()
    for entry in report["endpoints"]:
        for f in entry["findings"]:
            key = (f["rule_id"], entry["endpoint"]["id"])
            if f.get("suppressed") or key in seen:
                continue
            seen.add(key)
            lines += [
                "",
                "[[accept]]",
                f"rule = {_toml_str(f['rule_id'])}",
                f"endpoint = {_toml_str(entry['endpoint']['id'])}",
                f"justification = {_toml_str(justification or PLACEHOLDER + ' say why this finding is accepted (' + f['title'] + ')')}",
            ]
            if expires:
                lines.append(f"expires = {expires.isoformat()}")
    return "\n".join(lines) + "\n"
