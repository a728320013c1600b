"""A throw-away PostgreSQL server for the history tests: Debian's postgresql binaries, a new
cluster in a temporary directory, trust authentication, loopback TCP only, stopped by PID file
(pg_ctl) at the end. Installed by .ci/install-history-postgresql.sh."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

INSTALL_HINT = "run .ci/install-history-postgresql.sh"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        binary = pg_bin()
        if binary is None:
            raise FileNotFoundError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")
        self.bin = binary
        self.dir = Path(tempfile.mkdtemp(prefix="smtpaudit-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        # initdb refuses to run as root: the cluster belongs to the postgres user when we are root.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user, self.user)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                              user=self.user, group=self.user, cwd=self.dir, check=False)

    def start(self) -> "PgServer":
        r = self._run("initdb", "-D", str(self.data), "-U", "smtpaudit", "--auth=trust", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start")
        if r.returncode != 0:
            log = (self.dir / "server.log").read_text(errors="replace")[-2000:] if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stdout[-1000:]} {r.stderr[-1000:]} {log}")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        auth = f"smtpaudit:{password}" if password else "smtpaudit"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = "h_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
