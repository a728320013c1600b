"""Fleets: deterministic sharding, one report file per endpoint, merging shard reports, terminal progress.

``--shard I/N`` puts an endpoint in shard ``1 + (sha256(endpoint id) mod N)``: independent of the
order of the targets file and of which machine runs it, so N cron hosts, a CI matrix or
Kubernetes indexed jobs can each take one shard of the same list and together cover it exactly
once. Adding a target never moves the others between shards.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from smtpaudit import atomic
from smtpaudit.outcomes import EndpointStatus
from smtpaudit.report.build import refresh
from smtpaudit.targets import Endpoint


class FleetError(ValueError):
    """Bad --shard or --output-dir usage, or reports that cannot be merged."""


# Set by Kubernetes for every pod of an Indexed Job: 0 .. completions-1.
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``I/N`` with 1 <= I <= N, or ``index/N``: I is the Kubernetes Indexed Job's
    ``JOB_COMPLETION_INDEX`` (0-based) plus one, so N pods of one Job cover the fleet once."""
    environ = os.environ if environ is None else environ
    m = re.fullmatch(r"\s*(\d+|index)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise FleetError(f"--shard {text!r}: expected I/N, e.g. 2/8 (or index/N in a Kubernetes Indexed Job)")
    if m.group(1) == "index":
        raw = environ.get(INDEX_VARIABLE, "")
        if not raw.strip().isdigit():
            raise FleetError(f"--shard {text!r}: {INDEX_VARIABLE} is {'not set' if not raw else repr(raw)}; "
                             "index/N is for the pods of a Kubernetes Indexed Job (completionMode: Indexed)")
        i, n = int(raw) + 1, int(m.group(2))
    else:
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
    peaks = (report.get("invocation") or {}).get("peak_sockets_per_host")
    if isinstance(peaks, dict):
        # The fleet's per-host peaks would make every endpoint's file grow with the fleet: keep its own.
        ep = entry["endpoint"]
        hosts = {ep.get("address"), ep.get("host")}
        one["invocation"] = {**report["invocation"], "peak_sockets_per_host": {h: n for h, n in peaks.items() if h in hosts}}
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


# Up to this many endpoints the HTML report is the full single page (every finding and transcript,
# built in memory); above it, an overview page streamed row by row, with one page per endpoint.
HTML_FULL_LIMIT = 100


def _unique_names(ids: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    used: set[str] = set()
    for eid in ids:
        name = slug(eid)
        if name in used:  # two ids that slug alike keep distinct files
            name = f"{name}-{hashlib.sha256(eid.encode()).hexdigest()[:8]}"
        used.add(name)
        names[eid] = name
    return names


def write_streamed(report: dict[str, Any], spool: Any, fmt: str, out: TextIO, *, sarif_artifact: str | None = None,
                   files: dict[str, str] | None = None, link_ext: str | None = None,
                   style: Any = None, verdicts_only: bool = False) -> None:
    """Write ``report`` (endpoints = the spool's skeletons) in ``fmt`` to ``out`` with the spooled
    entries read one at a time (report/stream.py): memory stays flat in the number of endpoints."""
    # Renderers are imported only when used: jinja2 alone costs a CLI run ~0.08 s.
    ids = [e["endpoint"]["id"] for e in report["endpoints"]]
    entries = spool.ordered(ids)
    if fmt == "json":
        from smtpaudit.report import stream

        stream.write_json(report, entries(), out)
    elif fmt == "sarif":
        from smtpaudit.report import sarif

        artifact = sarif.Artifact.parse(sarif_artifact) if sarif_artifact else None
        sarif.write_stream(report, entries(), out, artifact=artifact)
    elif fmt == "html":
        from smtpaudit.report import html

        if len(ids) <= HTML_FULL_LIMIT:
            out.write(html.render({**report, "endpoints": list(entries())}))
        else:
            html.write_fleet_index(report, out, files=files, link_ext=link_ext)
    else:
        from smtpaudit.report import text

        if verdicts_only:
            # One line per endpoint, streamed: a fleet's verdicts never need all entries at once.
            text.render_verdicts({**report, "endpoints": entries()}, out, style)
        else:
            text.render({**report, "endpoints": list(entries())}, out, style)


def write_output_dir_streamed(report: dict[str, Any], spool: Any, directory: str | Path, *, formats: list[str],
                              stem: str = "report", sarif_artifact: str | None = None) -> dict[str, Any]:
    """``write_output_dir`` for a streamed scan: ``<dir>/<stem>.<ext>`` written by streaming and
    ``<dir>/endpoints/<slug>.<ext>`` one endpoint at a time, in one pass over the spool. Each
    entry is encoded as JSON once, for both the combined report and its own file."""
    import json

    from smtpaudit.atomic import open_text, write_text
    from smtpaudit.report import stream
    from smtpaudit.workflows import EXTENSIONS, renderer

    root = Path(directory)
    per = root / "endpoints"
    per.mkdir(parents=True, exist_ok=True)
    ids = [e["endpoint"]["id"] for e in report["endpoints"]]
    names = _unique_names(ids)
    written: dict[str, Any] = {"combined": [], "endpoints": {}}
    others = {fmt: renderer(fmt, sarif_artifact=sarif_artifact) for fmt in formats if fmt != "json"}
    ruleset_text = json.dumps(report.get("ruleset"), indent=2, ensure_ascii=False)

    def entries_as_text() -> Any:
        for entry in spool.ordered(ids)():
            eid = entry["endpoint"]["id"]
            text = stream.entry_text(entry)
            one = single_endpoint_report(report, entry)
            files = []
            path = per / f"{names[eid]}.json"
            write_text(path, stream.dumps_single(one, text, ruleset_text))
            files.append(str(path))
            for fmt, render in others.items():
                path = per / f"{names[eid]}.{EXTENSIONS[fmt]}"
                write_text(path, render(one))
                files.append(str(path))
            written["endpoints"][eid] = files
            yield text

    combined = root / f"{stem}.json"
    head = dict(report)
    head["endpoints"] = [stream.MARKER]
    with open_text(combined) as fh:
        stream.splice(json.dumps(head, indent=2, ensure_ascii=False) + "\n", entries_as_text(), fh, dump=lambda t: t)
    written["combined"].append(str(combined))
    link = "html" if "html" in formats else "json"
    for fmt in others:
        path = root / f"{stem}.{EXTENSIONS[fmt]}"
        with open_text(path) as fh:
            write_streamed(report, spool, fmt, fh, sarif_artifact=sarif_artifact, files=names, link_ext=link)
        written["combined"].append(str(path))
    return written


def merge_streamed(paths: list[str], *, mark: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], Any]:
    """``merge_reports`` without loading the reports: entries go through a spool one at a time
    (``mark`` sees each, e.g. a baseline), the merged report holds skeletons (report/stream.py).
    Returns (report, spool); the caller writes with ``write_streamed`` and cleans the spool up."""
    from smtpaudit.inputs import InputError, schema_problems
    from smtpaudit.report import stream

    spool = stream.EntrySpool()
    heads: list[dict[str, Any]] = []
    seen: set[str] = set()
    order: list[str] = []
    try:
        for path in paths:
            try:
                head, entries = stream.read_report(path)
                if not isinstance(head, dict) or not isinstance(head.get("tool"), dict) or head["tool"].get("name") != "smtpaudit":
                    raise InputError(path, "not an smtpaudit report (no tool.name \"smtpaudit\")", where="/tool")
                # The JSON Schema, as model.load checks it, one entry at a time: each entry with a
                # light head (no rule metadata), then the head once its tail (the gate) is read.
                light = {**head, "ruleset": {**(head.get("ruleset") or {}), "rules": {}}}
                for i, entry in enumerate(entries):
                    problems = [pr for pr in schema_problems({**light, "endpoints": [entry]}) if pr.where.startswith("/endpoints")]
                    if problems:
                        raise InputError(path, [type(pr)(pr.where.replace("/endpoints/0", f"/endpoints/{i}", 1), pr.message)
                                                for pr in problems])
                    eid = entry["endpoint"]["id"]
                    if eid in seen:
                        continue
                    seen.add(eid)
                    order.append(eid)
                    if mark is not None:
                        mark(entry)
                    spool.add(entry)
            except InputError:
                raise
            except OSError as exc:
                raise InputError(path, f"cannot read report: {exc.strerror or exc}") from None
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(path, f"not valid JSON: {str(exc)[:200]}") from None
            problems = schema_problems({**head, "endpoints": []})
            if problems:
                raise InputError(path, problems)
            heads.append(head)
    except BaseException:
        spool.cleanup()
        raise
    spool.close()
    digests = {h["ruleset"]["digest"] for h in heads}
    if len(digests) > 1:
        spool.cleanup()
        raise FleetError(f"cannot merge reports made with different rule sets ({', '.join(sorted(digests))}); re-judge them with `smtpaudit evaluate` first")
    by_id = {sk["endpoint"]["id"]: sk for sk in spool.skeletons}
    # Same key order as a report built in memory (build_report): the endpoints come before the
    # gate and whatever was added after it, so both paths write the same bytes.
    merged: dict[str, Any] = {}
    for key, value in heads[0].items():
        if key in ("gate", "baseline", "interrupted") and "endpoints" not in merged:
            merged["endpoints"] = []
        merged[key] = value
    merged["endpoints"] = [by_id[eid] for eid in order]
    if len(heads) > 1:
        merged["started"] = min(h["started"] for h in heads)
        merged["finished"] = max(h["finished"] for h in heads)
        merged["duration"] = round(sum(h.get("duration", 0) for h in heads), 3)
        merged["probes"] = {k: v for h in heads for k, v in h.get("probes", {}).items()}
        groups: dict[str, list[str]] = {}
        for h in heads:
            for d, ids in (h.get("domains") or {}).items():
                groups.setdefault(d, []).extend(i for i in ids if i not in groups.get(d, []))
        merged["domains"] = groups
    fail_on = (heads[0].get("gate") or {}).get("fail_on", heads[0].get("invocation", {}).get("options", {}).get("fail_on"))
    refresh(merged, fail_on)
    return merged, spool
