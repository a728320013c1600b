"""Process plumbing for lab daemons: free loopback ports, detached start, wait-for-greeting, stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Cap on what we read from a lab greeting: these are our own servers, but the helper stays bounded.
_MAX_GREETING = 4096


class LabStartError(RuntimeError):
    """A lab daemon did not come up; the message carries the tail of its log."""


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """Return `n` distinct ports that were free on `host` a moment ago (kernel-chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        # Held open until all are chosen so the kernel cannot hand out the same port twice.
        for s in socks:
            s.close()


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start a foreground daemon detached from our stdio, its output appended to `log_path`.

    A new session keeps terminal signals (Ctrl-C of pytest) from reaching it before we stop it
    ourselves, and /dev/null stdin plus a file for stdout/stderr keeps pytest's pipes closable.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def terminate_group(proc: subprocess.Popen) -> None:
    """Send SIGTERM to the process group we created for `proc` (its PID is the group id).

    The whole group, not just the leader: Postfix's smtpd/qmgr workers and Dovecot's auth
    processes otherwise linger 1-2 s after their master is gone, holding the listening sockets.
    """
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def wait_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Wait for `proc` to exit and its group to empty; SIGKILL the group past `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    while time.monotonic() < deadline:
        if not _live_group_members(proc.pid):
            break
        time.sleep(0.02)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=timeout)


def _live_group_members(pgid: int) -> list[int]:
    """PIDs in process group `pgid` that are not zombies.

    Orphaned workers are reparented to PID 1, which may reap them seconds later (it does on this
    machine); a zombie holds no socket, so it does not count as running.
    """
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            live.append(int(entry))
    return live


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop `proc` and everything in its process group, and wait until they are gone."""
    terminate_group(proc)
    wait_group(proc, timeout)


def read_greeting(sock: socket.socket | ssl.SSLSocket, timeout: float) -> str:
    """Read an SMTP greeting (all lines up to the final `NNN ` line), bounded in size and time."""
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < _MAX_GREETING:
        chunk = sock.recv(_MAX_GREETING - len(buf))
        if not chunk:
            break
        buf += chunk
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return "\n".join(x.decode("utf-8", "replace") for x in lines[:-1])
    raise OSError(f"no complete greeting, got {buf[:200]!r}")


def probe_greeting(port: int, timeout: float = 2.0, host: str = LOOPBACK) -> str:
    """Connect to a plain SMTP port, return the greeting, and QUIT politely."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        greeting = read_greeting(s, timeout)
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        return greeting


def port_accepts(port: int, timeout: float = 1.0, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until_ready(
    proc: subprocess.Popen | None,
    greeting_port: int,
    other_ports: Sequence[int],
    describe: Callable[[], str],
    timeout: float = 20.0,
) -> str:
    """Poll until `greeting_port` answers with a 220 greeting and `other_ports` accept TCP.

    Returns the greeting. Raises LabStartError with `describe()` (the log tails) when the process
    dies or the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last_err = "not tried"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LabStartError(
                f"process exited with status {proc.returncode}\n{describe()}"
            )
        try:
            greeting = probe_greeting(greeting_port)
            if greeting.startswith("220"):
                if all(port_accepts(p) for p in other_ports):
                    return greeting
                last_err = "secondary ports not listening yet"
            else:
                last_err = f"greeting {greeting!r}"
        except OSError as exc:
            last_err = str(exc)
        time.sleep(0.05)
    raise LabStartError(f"not ready after {timeout:.0f} s ({last_err})\n{describe()}")


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file (or a note that it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"[log {path} unreadable: {exc}]"
    tail = text.splitlines()[-lines:]
    return f"--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail)
