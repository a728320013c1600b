"""Turning SIGINT/SIGTERM into an exception the program can clean up after, and exit codes for them.

Python's default SIGTERM kills the process on the spot: a report being written would be left
as a temporary file and an interrupted fleet scan would lose every finished endpoint. Inside
:func:`handle_signals` both signals raise :class:`Interrupted` instead (a KeyboardInterrupt, so
asyncio lets it through), and the command exits 128 + signal number (130 / 143). During a
scan, :func:`run_until_signal` lets the event loop take the signals instead: the scan stops
promptly and the endpoints finished so far are still reported (marked ``interrupted``).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Any, Awaitable, Iterator, TypeVar

T = TypeVar("T")

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


# How long cancelled probes get to close their sockets after a signal before the report of the
# finished endpoints is written anyway.
GRACE_SECONDS = 2.0


async def run_until_signal(coro: Awaitable[T]) -> tuple[T | None, int | None]:
    """Run ``coro``; on SIGINT/SIGTERM cancel it and return ``(None, signum)`` promptly.

    Inside the event loop the signals are handled by the loop (no exception at a random point):
    the scan is cancelled, its probes get ``GRACE_SECONDS`` to unwind, and the caller writes
    what finished. The Python-level handlers in force before (``handle_signals``) come back
    afterwards, so a second signal during the write still ends cleanly."""
    import asyncio  # here: the offline commands use handle_signals only and need no event loop

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    received: list[int] = []
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if not received:
            received.append(signum)
            stop.set()

    previous: dict[int, Any] = {}
    for sig in SIGNALS:
        try:
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no Unix signals
            previous.pop(sig, None)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not received:
            return task.result(), None
        task.cancel()
        await asyncio.wait({task}, timeout=GRACE_SECONDS)
        return None, received[0]
    finally:
        stopper.cancel()
        for sig, old in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, old)  # remove_signal_handler resets to the default: restore ours
