"""Fleets: deterministic sharding, one report file per endpoint, merging shard reports, terminal progress.

``--shard I/N`` puts an endpoint in shard ``1 + (sha256(endpoint id) mod N)``: independent of the
order of the targets file and of which machine runs it, so N cron hosts, a CI matrix or
Kubernetes indexed jobs can each take one shard of the same list and together cover it exactly
once. Adding a target never moves the others between shards.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from smtpaudit import atomic
from smtpaudit.outcomes import EndpointStatus
from smtpaudit.report.build import refresh
from smtpaudit.targets import Endpoint


class FleetError(ValueError):
    """Bad --shard or --output-dir usage, or reports that cannot be merged."""


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` with 1 <= I <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise FleetError(f"--shard {text!r}: expected I/N, e.g. 2/8")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise FleetError(f"--shard {text!r}: I must be between 1 and N (N >= 1)")
    return i, n


def shard_of(key: str, n: int) -> int:
    """The 1-based shard a key belongs to."""
    return 1 + int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % n


def shard_key(endpoint: Endpoint) -> str:
    # Domain targets keep their MX endpoints together: they expand after sharding.
    return endpoint.id


def select_shard(endpoints: list[Endpoint], index: int, count: int) -> list[Endpoint]:
    """The endpoints of shard ``index`` of ``count``, in their original order."""
    return [ep for ep in endpoints if shard_of(shard_key(ep), count) == index]


def slug(endpoint_id: str) -> str:
    """A file-name-safe form of an endpoint id (``mx.example.org_25``, ``domain_example.org``)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", endpoint_id).strip("_") or "endpoint"


def single_endpoint_report(report: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The report restricted to one endpoint (same scan metadata, its own summary)."""
    one = {k: v for k, v in report.items() if k not in ("endpoints", "summary", "domains")}
    one["endpoints"] = [entry]
    gate = report.get("gate") or {}
    refresh(one, gate.get("fail_on"), allow_incomplete=bool(gate.get("allow_incomplete")))
    if "domains" in report:
        d = entry["endpoint"].get("domain")
        one["domains"] = {d: [entry["endpoint"]["id"]]} if d else {}
    one["endpoints"] = [entry]
    return one


def write_output_dir(
    report: dict[str, Any],
    directory: str | Path,
    *,
    renderers: dict[str, Callable[[dict[str, Any]], str]],
    stem: str = "report",
) -> dict[str, Any]:
    """Write ``<dir>/<stem>.<ext>`` for the whole report and ``<dir>/endpoints/<slug>.<ext>`` per
    endpoint, for each renderer (extension -> function). Returns the index of what was written."""
    root = Path(directory)
    per = root / "endpoints"
    per.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"combined": [], "endpoints": {}}
    for ext, render in renderers.items():
        path = root / f"{stem}.{ext}"
        atomic.write_text(path, render(report))
        written["combined"].append(str(path))
    used: set[str] = set()
    for entry in report["endpoints"]:
        eid = entry["endpoint"]["id"]
        name = slug(eid)
        if name in used:  # two ids that slug alike keep distinct files
            name = f"{name}-{hashlib.sha256(eid.encode()).hexdigest()[:8]}"
        used.add(name)
        one = single_endpoint_report(report, entry)
        files = []
        for ext, render in renderers.items():
            path = per / f"{name}.{ext}"
            atomic.write_text(path, render(one))
            files.append(str(path))
        written["endpoints"][eid] = files
    return written


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several (e.g. the shards of one fleet run): endpoints concatenated,
    summary recomputed, time span widened. The rule sets must be the same."""
    if not reports:
        raise FleetError("nothing to merge")
    if len(reports) == 1:
        return reports[0]
    digests = {r["ruleset"]["digest"] for r in reports}
    if len(digests) > 1:
        raise FleetError(f"cannot merge reports made with different rule sets ({', '.join(sorted(digests))}); re-judge them with `smtpaudit evaluate` first")
    merged = dict(reports[0])
    seen: set[str] = set()
    entries = []
    for r in reports:
        for e in r["endpoints"]:
            if e["endpoint"]["id"] not in seen:
                seen.add(e["endpoint"]["id"])
                entries.append(e)
    merged["endpoints"] = entries
    merged["started"] = min(r["started"] for r in reports)
    merged["finished"] = max(r["finished"] for r in reports)
    merged["duration"] = round(sum(r.get("duration", 0) for r in reports), 3)
    merged["probes"] = {k: v for r in reports for k, v in r.get("probes", {}).items()}
    fail_on = (reports[0].get("gate") or {}).get("fail_on", reports[0].get("invocation", {}).get("options", {}).get("fail_on"))
    refresh(merged, fail_on)
    if any("domains" in r for r in reports):
        groups: dict[str, list[str]] = {}
        for r in reports:
            for d, ids in (r.get("domains") or {}).items():
                groups.setdefault(d, []).extend(i for i in ids if i not in groups.get(d, []))
        merged["domains"] = groups
    return merged


class Progress:
    """Live progress on a terminal (stderr), one line redrawn in place; silent when not a terminal or quiet.

    Shows done/total endpoints with a rate and an ETA, the count of endpoints not complete and open findings so
    far (endpoints not complete: incomplete or unreachable), and for the endpoints still running the probe running now and how long it has run. A
    small ticker thread redraws twice a second, so a probe waiting out a 20 s timeout is seen to
    wait. Endpoint ids come from targets (untrusted when expanded from DNS): control characters
    are replaced before they reach the terminal.
    """

    TICK = 0.5

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.failed = 0
        self.findings = 0
        self.clock = clock
        self.t0 = clock()
        self.running: dict[str, dict[str, float]] = {}  # endpoint id -> {probe: start}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- events (called from the scan's event loop) -----------------------------------------
    def probe_event(self, endpoint_id: str, probe: str, state: str = "start") -> None:
        """A probe started (the scanner's ``on_probe`` hook) or, when told, ended on an endpoint."""
        with self._lock:
            probes = self.running.setdefault(endpoint_id, {})
            if state == "start":
                probes[probe] = self.clock()
            else:
                probes.pop(probe, None)
        self._ensure_ticker()

    def __call__(self, endpoint_id: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self.done += 1
            self.failed += EndpointStatus.coerce(entry.get("status")) is not EndpointStatus.COMPLETE
            self.findings += sum(1 for f in entry["findings"] if not f.get("suppressed"))
            self.running.pop(endpoint_id, None)
            # The total can grow when domain targets expand into MX endpoints.
            self.total = max(self.total, self.done)
        self.draw()

    # -- display ------------------------------------------------------------------------------
    def line(self, width: int = 100) -> str:
        """The status line as it would be drawn now (no control sequences)."""
        now = self.clock()
        with self._lock:
            elapsed = now - self.t0
            parts = [f"[{self.done}/{self.total}] {elapsed:5.1f}s"]
            if self.total > 1 and self.done:
                rate = self.done / elapsed if elapsed > 0 else 0.0
                left = self.total - self.done
                eta = f"{left / rate:.0f}s" if rate > 0 else "?"
                parts.append(f"{rate:.2f}/s ETA {eta}")
            parts.append(f"not complete {self.failed}  findings {self.findings}")
            # Per endpoint: when it started (its first probe) and its latest probe, which is the
            # one running now (later probes wait for it or for a connection slot).
            active = [(min(p.values()), eid, max(p.items(), key=lambda kv: kv[1])) for eid, p in self.running.items() if p]
        active.sort()
        for since_ep, eid, (probe, since) in active[:1]:
            parts.append(f"{_shown(eid)} {probe} {now - since:.0f}s (endpoint {now - since_ep:.0f}s)")
        if len(active) > 1:
            parts.append(f"+{len(active) - 1} running")
        text = "  ".join(parts)
        return text if len(text) <= width else text[: max(0, width - 1)] + "…"

    def draw(self) -> None:
        if not self.enabled:
            return
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        self.stream.write("\r" + self.line(width) + "\033[K")
        self.stream.flush()

    def _ensure_ticker(self) -> None:
        if not self.enabled or self._ticker is not None:
            return
        self._ticker = threading.Thread(target=self._tick, name="smtpaudit-progress", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.TICK):
            self.draw()

    def finish(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(2)
        if self.enabled and self.done:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


def _shown(endpoint_id: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in endpoint_id)[:48]
