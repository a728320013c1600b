"""A private Dovecot that only serves SASL authentication to one lab Postfix instance."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from . import procs
from .server import TEMPLATES, Credentials, render

DOVECOT = Path("/usr/sbin/dovecot")


def start_dovecot(work_dir: Path, log_path: Path, creds: Credentials, name: str,
                  timeout: float = 15.0) -> tuple[subprocess.Popen, Path]:
    """Start Dovecot in the foreground; return it and its auth socket once the socket exists.

    Postfix drops every connection while the auth socket is missing, so callers start this first.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    base_dir = work_dir / "run"
    state_dir = work_dir / "state"
    shutil.rmtree(base_dir, ignore_errors=True)  # a stale master.pid would block the start
    state_dir.mkdir(parents=True, exist_ok=True)
    passwd = work_dir / "passwd"
    passwd.write_text(f"{creds.user}:{{PLAIN}}{creds.password}\n")
    passwd.chmod(0o640)
    shutil.chown(passwd, "root", "dovecot")  # read by the auth worker, which runs as user dovecot
    socket_path = work_dir / "auth"
    socket_path.unlink(missing_ok=True)  # else the wait below would see the last run's socket
    conf = work_dir / "dovecot.conf"
    conf.write_text(
        render(
            (TEMPLATES / "dovecot" / "dovecot.conf").read_text(),
            {
                "base_dir": base_dir,
                "state_dir": state_dir,
                "instance_name": f"dovecot-{name}",
                "log_path": log_path,
                "passwd_file": passwd,
                "auth_socket": socket_path,
            },
        )
    )
    proc = procs.spawn([str(DOVECOT), "-F", "-c", str(conf)], log_path)
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if proc.poll() is not None:
            raise procs.LabStartError(
                f"dovecot exited with status {proc.returncode}\n{procs.log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            procs.stop_process(proc)
            raise procs.LabStartError(f"dovecot auth socket never appeared\n{procs.log_tail(log_path)}")
        time.sleep(0.02)
    return proc, socket_path
