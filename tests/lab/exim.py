"""Private Exim 4.96 instances, run from the exim4-daemon-light .deb unpacked by .ci/install-lab.sh."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from . import procs
from .server import TEMPLATES, LabServer, lab_prefix, render

EXIM_USER = "Debian-exim"  # compiled into Debian's binary


def exim_binary() -> Path:
    return lab_prefix() / "usr" / "sbin" / "exim4"


class EximServer(LabServer):
    mta = "exim"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "exim-mainlog"

    @classmethod
    def required_binaries(cls) -> list[Path]:
        return [exim_binary()]

    @property
    def config_path(self) -> Path:
        return self.run_dir / "exim.conf"

    def _write_config(self) -> None:
        tls_dir = self.run_dir / "tls"
        spool = self.run_dir / "spool"
        for d in (tls_dir, spool):
            d.mkdir(parents=True, exist_ok=True)
        # Exim reads the key in the receiving process, after dropping root for Debian-exim.
        key = tls_dir / "key.pem"
        shutil.copyfile(self.cert.key, key)
        key.chmod(0o600)
        shutil.chown(key, EXIM_USER, EXIM_USER)
        for d in (spool, self.log_dir):
            shutil.chown(d, EXIM_USER, EXIM_USER)

        assert self.credentials is not None, "exim variants define credentials"
        values: dict[str, Any] = {
            "hostname": self.hostname,
            "exim_path": exim_binary(),
            "spool_dir": spool,
            "log_dir": self.log_dir,
            "run_dir": self.run_dir,
            "cert_chain": self.cert.chain,
            "cert_key": key,
            "local_users": " : ".join(self.local_users),
            "auth_user": self.credentials.user,
            "auth_password": self.credentials.password,
            **{f"{role}_port": port for role, port in self.ports.items()},
        }
        # Macros (UPPERCASE) first: Exim needs them defined before the .ifdef that tests them.
        items = sorted(self.params.items(), key=lambda kv: not kv[0][:1].isupper())
        values["params"] = "\n".join(f"{k} = {render(str(v), values)}" for k, v in items)
        self.config_path.write_text(render((TEMPLATES / "exim" / "exim.conf").read_text(), values))
        self.config_path.chmod(0o644)

    def _launch(self) -> list[subprocess.Popen]:
        # Validate first: a config error then lands in the message, not in a dead daemon's stderr.
        check = subprocess.run(
            [str(exim_binary()), "-C", str(self.config_path), "-bV"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )
        if check.returncode != 0:
            raise procs.LabStartError(f"exim -bV rejected the config:\n{check.stdout}{check.stderr}")
        # -bdf: listening daemon in the foreground (our child, stopped by PID); no queue runner.
        return [
            procs.spawn(
                [str(exim_binary()), "-C", str(self.config_path), "-bdf"],
                self.log_dir / "exim-stderr.log",
            )
        ]
