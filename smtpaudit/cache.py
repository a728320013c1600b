"""The per-user cache of derived data (parsed rule files, compiled report templates): where it
lives, reading an entry only when it can be trusted, writing one atomically.

Location: ``$SMTPAUDIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/smtpaudit`` (``~/.cache/smtpaudit``), one
sub-directory per kind; ``SMTPAUDIT_CACHE_DIR=off`` disables every cache. An entry is one JSON
file ``{"header": {...}, "data": ...}``: it is used only when it is a regular file owned by this
user that nobody else can write, parses, and its header equals the one the caller expects (the
caller puts everything the data depends on in it: format, versions, a hash of the source). Anything
else (missing, corrupt, truncated, foreign, unreadable) reads as "no entry". Writing never fails
for the caller: an unwritable cache directory only means no cache. A cache can make a run faster,
never different.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

OFF = ("off", "0", "none")


def cache_dir(kind: str) -> Path | None:
    """The directory of one kind of entry, or None when caching is off."""
    configured = os.environ.get("SMTPAUDIT_CACHE_DIR")
    if configured:
        return None if configured.lower() in OFF else Path(configured) / kind
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "smtpaudit" / kind


def entry_path(directory: Path, name: str) -> Path:
    """The entry file for ``name`` (any string, e.g. a source path): a fixed-length file name."""
    return directory / (hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32] + ".json")


def read(entry: Path, header: dict[str, Any]) -> Any | None:
    """The entry's data when the entry is ours and its header is ``header``; else None."""
    try:
        with entry.open("rb") as fh:
            st = os.fstat(fh.fileno())
            # Only a regular file of this user that nobody else can write is believed: what it holds
            # feeds the rule engine and the report templates.
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            cached = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(cached, dict) and cached.get("header") == header and "data" in cached:
        return cached["data"]
    return None


def write(entry: Path, header: dict[str, Any], data: Any) -> None:
    """Store the entry (atomically, mode 0600); any failure is silently no cache."""
    from smtpaudit.atomic import write_bytes

    try:
        body = json.dumps({"header": header, "data": data}, ensure_ascii=False, separators=(",", ":"))
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Atomic (readers never see half an entry) but not fsynced: an entry lost or cut short by a
        # crash is simply not used, so the cache needs no durability.
        write_bytes(entry, body.encode("utf-8", "surrogatepass"), durable=False, mode=0o600)
    except (OSError, ValueError, TypeError, RecursionError):
        pass
