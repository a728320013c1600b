"""Parsed TOML data files, cached: the rule set and the tables are read on every run.

One job: ``loads(path, text)`` gives what ``tomllib.loads(text)`` gives, from a cache entry
(``smtpaudit/cache.py``, kind ``toml``) when this very text was parsed before; ``load(path)``
reads the file first. ``tomllib`` is pure Python: parsing the ~120 rule, catalog and TLS table
files took ~25 ms of every run, reading them back as JSON takes ~3 ms.

The key is the file's *content* (SHA-256 of the text), so an edited file is parsed again even
when its size and modification time did not change (coarse timestamps, a checkout, a copy with
``cp -p``); what is served is always the parse of exactly the text on disk. One entry per file
path (an edit replaces it). Data that JSON cannot hold exactly (TOML dates) is not cached, nor is
a file that does not parse: its error comes from ``tomllib`` every time.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from smtpaudit import cache

# Bump when the entry layout changes: older entries are then ignored and rewritten.
_FORMAT = 2
_PYTHON = "%d.%d" % sys.version_info[:2]  # tomllib's behaviour is the standard library's


def cache_dir() -> Path | None:
    """Where the entries live, or None when caching is off."""
    return cache.cache_dir("toml")


def _json_exact(value: Any) -> bool:
    """True when JSON round-trips the value unchanged (no dates/times, no non-string keys)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, (str, int, bool))


def loads(path: str | Path, text: str) -> dict[str, Any]:
    """``tomllib.loads(text)`` (raises what it raises) for the file ``path`` whose text this is,
    served from the cache when exactly this text was parsed before."""
    directory = cache_dir()
    if directory is None:
        return tomllib.loads(text)
    source = os.path.abspath(path)
    header = {"format": _FORMAT, "python": _PYTHON, "path": source,
              "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}
    entry = cache.entry_path(directory, source)
    data = cache.read(entry, header)
    if isinstance(data, dict):
        return data
    data = tomllib.loads(text)
    if _json_exact(data):
        cache.write(entry, header, data)
    return data


def load(path: str | Path) -> dict[str, Any]:
    """``tomllib.loads`` of the file's UTF-8 text (raises what reading and parsing raise), cached."""
    return loads(path, Path(path).read_text(encoding="utf-8"))
