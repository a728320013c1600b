"""Split a report into content-addressed, compressed parts, and join them back exactly.

Thirty nights of an unchanged fleet differ in little but timings and a few random probe strings,
so a report is stored as parts keyed by the sha256 of their JSON (stored once, however many
nights share them):

* the report skeleton (everything but the endpoints), with ``ruleset.rules`` as its own part;
* per endpoint: the facts, grouped by probe family (a night where only the enumeration probe's
  random names changed stores only that group) with large values (certificate chains) apart;
  each probe's transcript lines without their timestamps; the findings; the rule verdict lists;
  and the entry itself with those references and the timings.

A part that changed is compressed with the same endpoint's previous version of that part as a
zlib preset dictionary (``base``), so a transcript that differs by one random name costs tens of
bytes, not kilobytes. Bases are always stored plainly: reading a part needs at most one other.

``join_*`` rebuilds the identical JSON (same keys, same order), so nothing of a report is lost.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any, Callable

CODEC = "zlib"
LARGE_FACT = 256  # JSON characters above which a fact value becomes a part of its own
ZDICT_MAX = 32 * 1024  # zlib's window: only the last 32 KiB of a dictionary can be referenced
VERDICTS = ("passed", "not_applicable", "not_evaluated")


def canonical(value: Any) -> bytes:
    # Key order kept (not sorted): the report reads back exactly as written, and the scanner
    # writes keys in a fixed order, so equal content still has one hash.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def compress(data: bytes, base: bytes | None = None) -> bytes:
    if base is None:
        return zlib.compress(data, 9)
    c = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=base[-ZDICT_MAX:])
    return c.compress(data) + c.flush()


def decompress(codec: str, data: bytes, base: bytes | None = None) -> bytes:
    if codec != CODEC:
        raise ValueError(f"unknown part codec {codec!r}")
    if base is None:
        return zlib.decompress(data)
    d = zlib.decompressobj(15, zdict=base[-ZDICT_MAX:])
    return d.decompress(data) + d.flush()


class Parts:
    """Parts collected while splitting: hash -> canonical bytes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, value: Any) -> str:
        data = canonical(value)
        h = digest(data)
        self.blobs.setdefault(h, data)
        return h


def fact_group(name: str) -> str:
    """Facts of one probe family travel together (``smtp.enumeration.*``, ``tls.cert.*``)."""
    return ".".join(name.split(".")[:2])


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


def split_entry(entry: dict[str, Any], parts: Parts) -> tuple[str, dict[str, str]]:
    """The entry part's hash, and its parts by kind (for choosing delta bases next night)."""
    kinds: dict[str, str] = {}
    stored = {k: v for k, v in entry.items() if k not in ("facts", "transcripts", "findings", *VERDICTS)}
    stored["$keys"] = list(entry)  # the original key order, so the joined JSON reads the same
    if "facts" in entry:
        groups: dict[str, dict[str, Any]] = {}
        large: dict[str, str] = {}
        for name, value in (entry.get("facts") or {}).items():
            if len(canonical(value)) > LARGE_FACT:
                large[name] = kinds[f"fact:{name}"] = parts.put(value)
            else:
                groups.setdefault(fact_group(name), {})[name] = value
        group_refs = {g: parts.put(v) for g, v in groups.items()}
        kinds.update({f"facts:{g}": h for g, h in group_refs.items()})
        order = kinds["facts:order"] = parts.put(list(entry.get("facts") or {}))
        stored["$facts"] = kinds["factset"] = parts.put({"groups": group_refs, "large": large, "order": order})
    if "findings" in entry:
        stored["$findings"] = kinds["findings"] = parts.put(entry["findings"])
    verdicts = {k: entry[k] for k in VERDICTS if k in entry}
    if verdicts:
        stored["$verdicts"] = kinds["verdicts"] = parts.put(verdicts)
    if "transcripts" in entry:
        tr = {}
        for probe, lines in (entry.get("transcripts") or {}).items():
            times = [ln.get("t") if isinstance(ln, dict) else None for ln in lines]
            bare = [{k: v for k, v in ln.items() if k != "t"} if isinstance(ln, dict) else ln for ln in lines]
            ref = kinds[f"lines:{probe}"] = parts.put(bare)
            tr[probe] = {"lines": ref, "t": times, "has_t": [isinstance(ln, dict) and "t" in ln for ln in lines]}
        stored["$transcripts"] = tr
    h = kinds["entry"] = parts.put(stored)
    return h, kinds


def kinds_of(entry_hash: str, load: Callable[[str], Any]) -> dict[str, str]:
    """The parts of a stored entry by kind (the same map ``split_entry`` returns)."""
    stored = load(entry_hash)
    kinds = {"entry": entry_hash}
    if "$facts" in stored:
        fs = load(stored["$facts"])
        kinds["factset"] = stored["$facts"]
        kinds["facts:order"] = fs["order"]
        kinds.update({f"facts:{g}": h for g, h in fs["groups"].items()})
        kinds.update({f"fact:{n}": h for n, h in fs["large"].items()})
    for key, kind in (("$findings", "findings"), ("$verdicts", "verdicts")):
        if key in stored:
            kinds[kind] = stored[key]
    for probe, part in (stored.get("$transcripts") or {}).items():
        kinds[f"lines:{probe}"] = part["lines"]
    return kinds


def join_entry(stored: dict[str, Any], load: Callable[[str], Any]) -> dict[str, Any]:
    entry = {k: v for k, v in stored.items() if not k.startswith("$")}
    if "$facts" in stored:
        fs = load(stored["$facts"])
        facts: dict[str, Any] = {}
        for ref in fs["groups"].values():
            facts.update(load(ref))
        for name, ref in fs["large"].items():
            facts[name] = load(ref)
        entry["facts"] = {k: facts[k] for k in load(fs["order"]) if k in facts}
    if "$findings" in stored:
        entry["findings"] = load(stored["$findings"])
    if "$verdicts" in stored:
        entry.update(load(stored["$verdicts"]))
    if "$transcripts" in stored:
        tr = {}
        for probe, part in stored["$transcripts"].items():
            lines = load(part["lines"])
            tr[probe] = [{"t": t, **ln} if has_t else ln for ln, t, has_t in zip(lines, part["t"], part["has_t"])]
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
