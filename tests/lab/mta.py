"""The lab's instances by name: create, start, stop. The one module tests and fixtures import.

    from tests.lab.mta import Lab
    lab = Lab()                       # run dir: $SMTPAUDIT_LAB_RUN or a fresh /tmp/smtpaudit-lab-*
    srv = lab.start("postfix-hardened")
    srv.host, srv.ports["smtp"], srv.banner, srv.ca_cert, srv.credentials
    srv.restart(smtpd_banner="$myhostname ESMTP $mail_name")   # same ports, changed config
    lab.stop_all()
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

from .aiosmtpd_lab import AiosmtpdServer
from .certs import ensure_lab_pki
from .exim import EximServer
from .opensmtpd import OpenSMTPDServer
from .postfix import PostfixServer
from .procs import LabStartError
from .server import Credentials, LabServer

# instance name -> server class; the variant file tests/lab/variants/<name>.toml holds its config.
INSTANCES: dict[str, type[LabServer]] = {
    "postfix-hardened": PostfixServer,
    "postfix-insecure": PostfixServer,
    "exim-secure": EximServer,
    "exim-insecure": EximServer,
    "opensmtpd": OpenSMTPDServer,
    "opensmtpd-insecure": OpenSMTPDServer,
    "aiosmtpd-hardened": AiosmtpdServer,
    "aiosmtpd-insecure": AiosmtpdServer,
}

__all__ = ["INSTANCES", "Credentials", "Lab", "LabServer", "LabStartError", "missing_binaries"]


def missing_binaries(name: str) -> list[Path]:
    """Executables instance `name` needs that are not installed (empty when it can run)."""
    return [b for b in INSTANCES[name].required_binaries() if not os.access(b, os.X_OK)]


class Lab:
    """A set of lab instances sharing one run directory and one PKI."""

    def __init__(self, run_root: Path | None = None) -> None:
        env_root = os.environ.get("SMTPAUDIT_LAB_RUN")
        if run_root is None and env_root:
            run_root = Path(env_root)
        self._own_root = run_root is None
        # Short /tmp paths: Unix socket paths (Dovecot, Postfix) are limited to 108 bytes.
        self.run_root = run_root or Path(tempfile.mkdtemp(prefix="smtpaudit-lab-"))
        self.run_root.mkdir(parents=True, exist_ok=True)
        # Daemons drop privileges (postfix, Debian-exim, opensmtpd) and must traverse this path.
        self.run_root.chmod(0o755)
        self.pki = ensure_lab_pki(self.run_root / "pki")
        self.servers: dict[str, LabServer] = {}
        # Daemons run in their own sessions: if the test run ends without the fixture teardown
        # (an exception at exit, Ctrl-C), stop them anyway rather than leave them listening.
        atexit.register(self.stop_all)

    def get(self, name: str) -> LabServer:
        """The instance object for `name` (created, not started)."""
        if name not in self.servers:
            self.servers[name] = INSTANCES[name](name, self.run_root, self.pki)
        return self.servers[name]

    def start(self, name: str) -> LabServer:
        srv = self.get(name)
        srv.start()
        return srv

    def stop_all(self) -> None:
        for srv in self.servers.values():
            srv.request_stop()
        for srv in self.servers.values():
            srv.wait_stopped()

    def cleanup(self, keep: bool = False) -> None:
        """Stop everything; remove the run directory unless we did not create it or `keep`."""
        self.stop_all()
        if self._own_root and not keep:
            shutil.rmtree(self.run_root, ignore_errors=True)


def main() -> None:
    """`python -m tests.lab.mta`: start every instance, print their details and start-up times."""
    import json

    lab = Lab()
    try:
        t0 = time.monotonic()
        out = []
        for name in INSTANCES:
            srv = lab.start(name)
            info = srv.info()
            info["startup_seconds"] = round(srv.startup_seconds or 0, 3)
            out.append(info)
        print(json.dumps(out, indent=2))
        print(f"all started in {time.monotonic() - t0:.2f} s")
    finally:
        lab.cleanup(keep=bool(os.environ.get("SMTPAUDIT_LAB_KEEP")))


if __name__ == "__main__":
    main()
