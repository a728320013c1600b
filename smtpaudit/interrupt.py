"""Turning SIGINT/SIGTERM into an exception the program can clean up after, and exit codes for them.

Python's default SIGTERM kills the process on the spot: a report being written would be left
as a temporary file and an interrupted fleet scan would lose every finished endpoint. Inside
:func:`handle_signals` both signals raise :class:`Interrupted` instead (a KeyboardInterrupt, so
asyncio lets it through), and the command exits 128 + signal number (130 / 143).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise Interrupted; previous handlers come back after."""
    previous = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, _raise)
    except ValueError:  # not the main thread (e.g. the CLI called from a test thread): leave them
        for sig, old in previous.items():
            signal.signal(sig, old)
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_code(exc: KeyboardInterrupt) -> int:
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT
