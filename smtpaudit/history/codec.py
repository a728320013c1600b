"""Split a report into content-addressed, compressed parts, and join them back exactly.

Thirty nights of an unchanged fleet differ in little but timings and a few random probe strings,
so a report is stored as parts keyed by the sha256 of their canonical JSON (stored once, however
many nights share them):

* the report skeleton (everything but the endpoints), with ``ruleset.rules`` as its own part;
* per endpoint: the facts, small values inline and large ones (certificate chains, long replies)
  as parts of their own; each probe's transcript lines without their timestamps (the timestamps
  stay in the entry); and the entry itself with those references.

``join_*`` rebuilds the identical JSON, so nothing of the full report is lost.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any, Callable

CODEC = "zlib"
LARGE_FACT = 256  # JSON characters above which a fact value becomes a part of its own


def canonical(value: Any) -> bytes:
    # Key order kept (not sorted): the report reads back exactly as written, and the scanner
    # writes keys in a fixed order, so equal content still has one hash.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def compress(data: bytes) -> bytes:
    return zlib.compress(data, 9)


def decompress(codec: str, data: bytes) -> Any:
    if codec != CODEC:
        raise ValueError(f"unknown blob codec {codec!r}")
    return json.loads(zlib.decompress(data))


class Parts:
    """Parts collected while splitting: hash -> canonical bytes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, value: Any) -> str:
        data = canonical(value)
        h = digest(data)
        self.blobs.setdefault(h, data)
        return h


def split_report(report: dict[str, Any], parts: Parts) -> str:
    """The skeleton part's hash; the endpoints are split separately by ``split_entry``."""
    skeleton = {k: v for k, v in report.items() if k != "endpoints"}
    rules_ref, ruleset_keys = None, None
    ruleset = skeleton.get("ruleset")
    if isinstance(ruleset, dict) and "rules" in ruleset:
        rules_ref = parts.put(ruleset["rules"])
        ruleset_keys = list(ruleset)
        skeleton["ruleset"] = {k: v for k, v in ruleset.items() if k != "rules"}
    return parts.put({"report": skeleton, "rules": rules_ref, "keys": list(report), "ruleset_keys": ruleset_keys})


def split_entry(entry: dict[str, Any], parts: Parts) -> str:
    stored = {k: v for k, v in entry.items() if k not in ("facts", "transcripts")}
    stored["$keys"] = list(entry)  # the original key order, so the joined JSON reads the same
    if "facts" in entry:
        small, large = {}, {}
        for name, value in (entry.get("facts") or {}).items():
            if len(canonical(value)) > LARGE_FACT:
                large[name] = parts.put(value)
            else:
                small[name] = value
        stored["$facts"] = parts.put({"small": small, "large": large, "order": list(entry.get("facts") or {})})
    if "transcripts" in entry:
        tr = {}
        for probe, lines in (entry.get("transcripts") or {}).items():
            times = [ln.get("t") if isinstance(ln, dict) else None for ln in lines]
            bare = [{k: v for k, v in ln.items() if k != "t"} if isinstance(ln, dict) else ln for ln in lines]
            tr[probe] = {"lines": parts.put(bare), "t": times, "has_t": [isinstance(ln, dict) and "t" in ln for ln in lines]}
        stored["$transcripts"] = tr
    return parts.put(stored)


def join_entry(stored: dict[str, Any], load: Callable[[str], Any]) -> dict[str, Any]:
    entry = {k: v for k, v in stored.items() if k not in ("$facts", "$transcripts", "$keys")}
    if "$facts" in stored:
        fs = load(stored["$facts"])
        facts = dict(fs["small"])
        for name, ref in fs["large"].items():
            facts[name] = load(ref)
        entry["facts"] = {k: facts[k] for k in fs.get("order") or list(facts) if k in facts}
    if "$transcripts" in stored:
        tr = {}
        for probe, part in stored["$transcripts"].items():
            lines = load(part["lines"])
            out = []
            for ln, t, has_t in zip(lines, part["t"], part["has_t"]):
                out.append({"t": t, **ln} if has_t else ln)
            tr[probe] = out
        entry["transcripts"] = tr
    order = stored.get("$keys") or list(entry)
    return {k: entry[k] for k in order if k in entry}


def join_report(skeleton: dict[str, Any], entries: list[dict[str, Any]], load: Callable[[str], Any]) -> dict[str, Any]:
    report = dict(skeleton["report"])
    if skeleton.get("rules") is not None:
        ruleset = {**report["ruleset"], "rules": load(skeleton["rules"])}
        order = skeleton.get("ruleset_keys") or list(ruleset)
        report["ruleset"] = {k: ruleset[k] for k in order if k in ruleset}
    report["endpoints"] = entries
    order = skeleton.get("keys") or list(report)
    return {k: report[k] for k in order if k in report}


def references(stored_entry: dict[str, Any], load: Callable[[str], Any]) -> set[str]:
    """Every part an entry part refers to (for garbage collection after a prune)."""
    refs: set[str] = set()
    if "$facts" in stored_entry:
        refs.add(stored_entry["$facts"])
        refs.update(load(stored_entry["$facts"])["large"].values())
    for part in (stored_entry.get("$transcripts") or {}).values():
        refs.add(part["lines"])
    return refs
