"""A private aiosmtpd 1.4 instance: tests/lab/aiosmtpd_server.py in its own process.

aiosmtpd is a library, not a daemon: the lab runs it the way an application embedding it
would, configured from the variant file (`variants/aiosmtpd-*.toml` [params]).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import procs
from .server import LAB_DIR, LabServer


class AiosmtpdServer(LabServer):
    mta = "aiosmtpd"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "aiosmtpd.log"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "aiosmtpd.json"

    @classmethod
    def required_binaries(cls) -> list[Path]:
        return [Path(sys.executable)]

    def _write_config(self) -> None:
        assert self.credentials is not None
        cfg = {
            "host": self.host,
            "hostname": self.hostname,
            "local_users": list(self.local_users),
            "domains": [*self.domains, "localhost"],
            "cert_chain": str(self.cert.chain),
            "cert_key": str(self.cert.key),
            "auth_user": self.credentials.user,
            "auth_password": self.credentials.password,
            **{f"{role}_port": port for role, port in self.ports.items()},
            **self.params,
        }
        self.config_path.write_text(json.dumps(cfg, indent=2))

    def _launch(self) -> list[subprocess.Popen]:
        check = subprocess.run([sys.executable, "-c", "import aiosmtpd"], capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise procs.LabStartError("aiosmtpd is not installed (pip install aiosmtpd): run .ci/install-lab.sh")
        return [procs.spawn([sys.executable, "-m", "tests.lab.aiosmtpd_server", str(self.config_path)], self.log_path,
                            cwd=LAB_DIR.parent.parent)]
