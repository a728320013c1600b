"""Writing output files so that nothing is lost: the old file stays whole until the new one is.

Every report, per-endpoint file, baseline, diff and sample goes through :func:`write_text`: the
content is written to a temporary file in the same directory (so the rename cannot cross file
systems), flushed, fsynced, then renamed over the target. A full disk, a signal or a crash
in the middle leaves the previous file intact and removes the temporary one.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TextIO

_TMP_PREFIX = ".smtpaudit-"
_TMP_SUFFIX = ".tmp"


class WriteError(OSError):
    """An output file could not be written; the message names it and says the old one is intact."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


@contextmanager
def _replacing(path: str | Path, mode: str, encoding: str | None = None, *, durable: bool = True,
               perms: int | None = None) -> Iterator[Any]:
    """A temporary file in ``path``'s directory, flushed, fsynced and renamed over ``path`` only
    when the block succeeds; raise WriteError (old file untouched) on failure.

    ``durable=False`` skips the fsyncs (still atomic for readers; after a crash the file may be
    empty or missing): for caches, which check what they read. ``perms`` overrides the mode."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {out}: {_describe(exc)}") from None
    if perms is None:
        try:
            # The new file gets the old one's permissions, or the ones open() would give it.
            perms = out.stat().st_mode & 0o7777
        except OSError:
            perms = 0o666 & ~_umask()
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + out.name + ".", suffix=_TMP_SUFFIX, dir=out.parent)
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, perms)
        os.replace(tmp, out)
        tmp = None
    except OSError as exc:
        already = " (the previous file is left unchanged)" if out.exists() else ""
        raise WriteError(exc.errno, f"cannot write {out}: {_describe(exc)}{already}") from None
    finally:
        # Also on KeyboardInterrupt / SIGTERM: no half-written temporary file stays behind.
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if durable:
        _sync_dir(out.parent)


def write_bytes(path: str | Path, data: bytes, *, durable: bool = True, mode: int | None = None) -> Path:
    """Atomically replace ``path`` with ``data``; raise WriteError (old file untouched) on failure.
    ``durable=False``: no fsync (caches); ``mode``: the file's permissions (default: the old file's)."""
    with _replacing(path, "wb", durable=durable, perms=mode) as fh:
        view = memoryview(data)
        while view:
            written = fh.write(view)
            view = view[written:]
    return Path(path)


def write_text(path: str | Path, content: str, *, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``content`` (UTF-8)."""
    return write_bytes(path, content.encode(encoding))


def _sync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort (not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def open_text(path: str | Path, *, encoding: str = "utf-8") -> Iterator[TextIO]:
    """``write_text`` for content written piece by piece (a streamed fleet report): the handle is a
    temporary file in the same directory, renamed over ``path`` only once the block succeeds."""
    with _replacing(path, "w", encoding) as fh:
        yield fh