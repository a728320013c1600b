"""Parsed TOML data files, cached: the rule set and the tables are read on every run.

One job: ``load(path)`` gives what ``tomllib.loads(path.read_text())`` gives, from a JSON cache
when the file has not changed (same absolute path, size and modification time). ``tomllib`` is
pure Python; parsing the ~110 rule, catalog and TLS registry files took about a fifth of a
``--tag tls`` scan's whole run. The cache lives in ``$SMTPAUDIT_CACHE_DIR`` or
``$XDG_CACHE_HOME/smtpaudit`` (``~/.cache/smtpaudit``), one JSON file per data file, written
atomically; files whose data JSON cannot hold exactly (TOML dates) are simply not cached. Any
problem with the cache falls back to parsing: it can make a run faster, never different.
``SMTPAUDIT_CACHE_DIR=off`` disables it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

_FORMAT = 1


def cache_dir() -> Path | None:
    configured = os.environ.get("SMTPAUDIT_CACHE_DIR")
    if configured:
        return None if configured.lower() in ("off", "0", "none") else Path(configured)
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


def load(path: str | Path) -> dict[str, Any]:
    """``tomllib.loads`` of the file (raises what it raises), served from the cache when fresh."""
    p = Path(path)
    directory = cache_dir()
    entry = None
    if directory is not None:
        try:
            st = p.stat()
            key = f"{_FORMAT}|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
            entry = directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
            with entry.open(encoding="utf-8") as fh:
                cached = json.load(fh)
            if isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("data"), dict):
                return cached["data"]
        except (OSError, ValueError):
            pass
    data = tomllib.loads(p.read_text(encoding="utf-8"))
    if entry is not None and _json_exact(data):
        try:
            entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"key": key, "data": data}, fh, ensure_ascii=False)
            os.replace(tmp, entry)
        except OSError:
            pass
    return data
