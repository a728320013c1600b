"""Fleet-sized reports at flat memory: finished entries are spooled to disk, reports are written from the spool.

One job: keep a scan's memory independent of the number of endpoints. Each judged entry (facts,
transcripts, findings: ~100 KB of JSON on a real server) is appended to a JSON Lines file the
moment it is finished and dropped from memory; only a *skeleton* stays (endpoint, status, score and
one shared small dict per distinct finding kind), which is all the summary, the gate, the domain
groups and the SARIF rule list need. The combined JSON and SARIF are then written by splicing the
spooled entries (or their SARIF results) one at a time into a document rendered from the skeletons,
byte for byte what the in-memory writers produce.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

MARKER = "@@smtpaudit-stream-marker@@"
RULESET_MARKER = "@@smtpaudit-ruleset-marker@@"
# Finding fields a skeleton keeps: what summary, gate and SARIF rule descriptors read.
_FINDING_KEYS = ("rule_id", "severity", "score", "title", "confidence", "family", "gate")
_ENTRY_KEYS = ("endpoint", "status", "status_reasons", "error", "score", "started")


class EntrySpool:
    """Judged entries on disk as JSON Lines (one entry per line), skeletons in memory."""

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            fd, name = tempfile.mkstemp(prefix="smtpaudit-", suffix=".jsonl")
            os.close(fd)
            self.path, self.temporary = Path(name), True
        else:
            self.path, self.temporary = Path(path), False
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO | None = self.path.open("w", encoding="utf-8")
        self.skeletons: list[dict[str, Any]] = []
        self._kinds: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(self, entry: dict[str, Any]) -> None:
        assert self._fh is not None, "spool already closed"
        self._fh.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.skeletons.append(self.skeleton(entry))

    def skeleton(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry without facts, transcripts and finding details; findings are shared dicts."""
        sk = {k: entry.get(k) for k in _ENTRY_KEYS}
        sk["status_reasons"] = (entry.get("status_reasons") or [])[:5]
        sk["findings"] = [self._kind(f) for f in entry.get("findings", [])]
        sk["not_evaluated"] = []  # the count is in the entry on disk; summaries do not use it
        sk["probes"] = [p for p in entry.get("probes", []) if p.get("status") == "error"]
        return sk

    def _kind(self, f: dict[str, Any]) -> dict[str, Any]:
        key = tuple(_hashable(f.get(k)) for k in _FINDING_KEYS) + (bool(f.get("suppressed")), _hashable(f.get("tags")))
        kind = self._kinds.get(key)
        if kind is None:
            kind = {k: f.get(k) for k in _FINDING_KEYS if k in f}
            kind["tags"] = f.get("tags", [])
            kind["suppressed"] = {"skeleton": True} if f.get("suppressed") else None
            self._kinds[key] = kind
        return kind

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def entries(self) -> Iterator[dict[str, Any]]:
        """The spooled entries, in the order they finished, read back one at a time."""
        if self._fh is not None:
            self._fh.flush()
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def ordered(self, ids: list[str]) -> Callable[[], Iterator[dict[str, Any]]]:
        """A factory of iterators over the entries in the order of ``ids`` (the targets' order).

        Keeps only byte offsets in memory (one int per entry), never the entries themselves.
        """
        if self._fh is not None:
            self._fh.flush()
        offsets: dict[str, int] = {}
        with self.path.open("rb") as fh:
            while True:
                pos = fh.tell()
                line = fh.readline()
                if not line:
                    break
                if line.strip():
                    # The id is the first key of the entry's endpoint object: parse just enough.
                    offsets.setdefault(json.loads(line)["endpoint"]["id"], pos)

        def iterate() -> Iterator[dict[str, Any]]:
            with self.path.open("rb") as fh:
                for eid in ids:
                    pos = offsets.get(eid)
                    if pos is None:
                        continue
                    fh.seek(pos)
                    yield json.loads(fh.readline())

        return iterate

    def cleanup(self, *, remove: bool | None = None) -> None:
        """Close; remove the file if it is a temporary one (or ``remove`` says so)."""
        self.close()
        if self.temporary if remove is None else remove:
            try:
                self.path.unlink()
            except OSError:
                pass


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def splice(document: str, items: Iterable[Any], out: TextIO, *, dump: Callable[[Any], str] | None = None) -> None:
    """Write ``document`` (indented JSON holding one list ``["MARKER"]``) with the list's element
    replaced by ``items``, each indented like the marker: the same text ``json.dumps`` of the full
    document would give, without ever holding the full document."""
    dump = dump or (lambda item: json.dumps(item, indent=2, ensure_ascii=False))
    quoted = json.dumps(MARKER)
    at = document.index(quoted)
    line_start = document.rindex("\n", 0, at) + 1
    indent = document[line_start:at]
    head, tail = document[:line_start], document[at + len(quoted):]
    out.write(head)
    first = True
    for item in items:
        if not first:
            out.write(",\n")
        first = False
        text = dump(item)
        out.write(indent + text.replace("\n", "\n" + indent))
    # (An empty list comes out as "[\n\n  ]": valid JSON, only not on one line as json.dumps writes it.)
    out.write(tail)


def write_json(report: dict[str, Any], entries: Iterable[dict[str, Any]], out: TextIO) -> None:
    """The report JSON (``model.dumps`` layout) with ``entries`` streamed in place of report["endpoints"]."""
    head = dict(report)
    head["endpoints"] = [MARKER]
    document = json.dumps(head, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    splice(document, entries, out)


def entry_text(entry: dict[str, Any]) -> str:
    """One entry as ``model.dumps`` lays it out (indent 2), before the indentation of its place.

    Encoded once per endpoint and reused for the combined report and the endpoint's own file:
    indented JSON goes through Python's pure-Python encoder, the bulk of a fleet's CPU time."""
    return json.dumps(entry, indent=2, ensure_ascii=False)


def dumps_single(report: dict[str, Any], text: str, ruleset_text: str) -> str:
    """``model.dumps(report)`` for a one-endpoint report whose entry is already encoded (``text``,
    from ``entry_text``) and whose rule-set section is shared by every endpoint (``ruleset_text``:
    ``json.dumps(report["ruleset"], indent=2)``, encoded once for the whole fleet)."""
    head = dict(report)
    head["ruleset"] = RULESET_MARKER
    head["endpoints"] = [MARKER]
    document = json.dumps(head, indent=2, ensure_ascii=False) + "\n"
    # Positions are taken in the head alone, before any server text is put in.
    r_at = document.index(json.dumps(RULESET_MARKER))
    e_at = document.index(json.dumps(MARKER))
    e_line = document.rindex("\n", 0, e_at) + 1
    e_indent = document[e_line:e_at]
    return (document[:r_at] + ruleset_text.replace("\n", "\n  ") + document[r_at + len(json.dumps(RULESET_MARKER)):e_at]
            + text.replace("\n", "\n" + e_indent) + document[e_at + len(json.dumps(MARKER)):])


_ENDPOINTS_KEY = '\n  "endpoints": ['
_CHUNK = 1 << 20


def read_report(path: str | Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """A saved report as (everything but its endpoints, its endpoints one at a time).

    Reports smtpaudit writes (``model.dumps`` layout: the top-level ``"endpoints"`` key at the start
    of a line, indented by two spaces, which no JSON string can contain) are read incrementally, one
    entry in memory at a time. Anything else is loaded whole. Raises OSError / ValueError.
    """
    p = Path(path)
    with p.open(encoding="utf-8", newline="") as fh:
        head_text = ""
        while _ENDPOINTS_KEY not in head_text:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            head_text += chunk
    at = head_text.find(_ENDPOINTS_KEY)
    if at < 0:
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        listed = data.pop("endpoints", None)

        def loaded() -> Iterator[dict[str, Any]]:
            if not isinstance(listed, list):
                raise ValueError("report has no endpoints list")
            yield from listed

        return data, loaded()
    head_part = head_text[:at]
    start = len(head_part.encode("utf-8")) + len(_ENDPOINTS_KEY.encode("utf-8"))
    tail: list[str] = []

    def entries() -> Iterator[dict[str, Any]]:
        decoder = json.JSONDecoder()
        with p.open("rb") as raw:
            raw.seek(start)
            buf = ""
            eof = False
            while True:
                stripped = buf.lstrip(" \t\r\n,")
                if not stripped and not eof:
                    more = raw.read(_CHUNK)
                    eof = not more
                    buf = stripped + more.decode("utf-8", errors="strict") if more else stripped
                    continue
                buf = stripped
                if buf.startswith("]"):
                    tail.append(buf[1:] + raw.read().decode("utf-8"))
                    return
                if not buf:
                    raise ValueError("report ends inside the endpoints list")
                try:
                    entry, end = decoder.raw_decode(buf)
                except json.JSONDecodeError:
                    more = raw.read(_CHUNK) if not eof else b""
                    if not more:
                        raise
                    buf += more.decode("utf-8", errors="strict")
                    continue
                buf = buf[end:]
                yield entry

    # The head alone is not JSON: close it with an empty endpoints list and whatever follows the
    # list, which is only known once the entries are read; until then, parse what precedes it.
    head = json.loads(head_part + '\n  "endpoints": []\n}')
    head.pop("endpoints", None)

    def entries_then_tail() -> Iterator[dict[str, Any]]:
        yield from entries()
        rest = json.loads('{"endpoints": []' + tail[0]) if tail and tail[0].strip() not in ("", "}") else {}
        rest.pop("endpoints", None)
        head.update(rest)

    return head, entries_then_tail()
