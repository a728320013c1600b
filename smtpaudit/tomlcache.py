"""Parsed TOML data files, cached: the rule set and the tables are read on every run.

One job: ``loads(path, text)`` gives what ``tomllib.loads(text)`` gives, from a JSON cache entry
when this very text was parsed before; ``load(path)`` reads the file first. ``tomllib`` is pure
Python: parsing the ~120 rule, catalog and TLS table files took ~25 ms of every run, reading
them back as JSON takes ~3 ms.

The key is the file's *content* (SHA-256 of the text), so an edited file is parsed again even
when its size and modification time did not change (coarse timestamps, a checkout, a copy with
``cp -p``); what is served is always the parse of exactly the bytes on disk. The cache lives in
``$SMTPAUDIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/smtpaudit`` (``~/.cache/smtpaudit``), one JSON
file per data file path, written atomically (``atomic.py``). An entry is used only when it is
one of ours (format, Python version, path and hash match; owned by this user and writable by
no one else) and holds a table; anything else (corrupt, truncated, foreign, unreadable) is
ignored and rewritten. Data that JSON cannot hold exactly (TOML dates) is not cached. Any
problem with the cache directory only means no cache: it can make a run faster, never
different. ``SMTPAUDIT_CACHE_DIR=off`` disables it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

# Bump when the entry layout changes: older entries are then ignored and rewritten.
_FORMAT = 2
_PYTHON = "%d.%d" % sys.version_info[:2]  # tomllib's behaviour is the standard library's


def cache_dir() -> Path | None:
    """Where entries live, or None when caching is off."""
    configured = os.environ.get("SMTPAUDIT_CACHE_DIR")
    if configured:
        return None if configured.lower() in ("off", "0", "none") else Path(configured) / "toml"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "smtpaudit" / "toml"


def _json_exact(value: Any) -> bool:
    """True when JSON round-trips the value unchanged (no dates/times, no non-string keys)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, (str, int, bool))


def _entry_path(directory: Path, source: str) -> Path:
    return directory / (hashlib.sha256(f"{_FORMAT}|{source}".encode()).hexdigest()[:32] + ".json")


def _read_entry(entry: Path, source: str, digest: str) -> dict[str, Any] | None:
    """The cached table, or None when the entry is missing or not one to trust."""
    try:
        with entry.open("rb") as fh:
            st = os.fstat(fh.fileno())
            # Only a regular file of ours that nobody else can write feeds the rule engine.
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            cached = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return None
    if (isinstance(cached, dict) and cached.get("format") == _FORMAT and cached.get("python") == _PYTHON
            and cached.get("path") == source and cached.get("sha256") == digest and isinstance(cached.get("data"), dict)):
        return cached["data"]
    return None


def _write_entry(entry: Path, source: str, digest: str, data: dict[str, Any]) -> None:
    from smtpaudit.atomic import write_bytes

    body = json.dumps({"format": _FORMAT, "python": _PYTHON, "path": source, "sha256": digest, "data": data},
                      ensure_ascii=False, separators=(",", ":"))
    try:
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Atomic (readers never see half an entry) but not fsynced: an entry lost or cut short
        # by a crash is simply not used, so the cache needs no durability.
        write_bytes(entry, body.encode("utf-8"), durable=False, mode=0o600)
    except (OSError, ValueError):
        pass


def loads(path: str | Path, text: str) -> dict[str, Any]:
    """``tomllib.loads(text)`` (raises what it raises) for the file ``path`` whose text this is,
    served from the cache when exactly this text was parsed before."""
    directory = cache_dir()
    if directory is None:
        return tomllib.loads(text)
    source = os.path.abspath(path)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    entry = _entry_path(directory, source)
    data = _read_entry(entry, source, digest)
    if data is not None:
        return data
    data = tomllib.loads(text)
    if _json_exact(data):
        _write_entry(entry, source, digest, data)
    return data


def load(path: str | Path) -> dict[str, Any]:
    """``tomllib.loads`` of the file's UTF-8 text (raises what reading and parsing raise), cached."""
    return loads(path, Path(path).read_text(encoding="utf-8"))
