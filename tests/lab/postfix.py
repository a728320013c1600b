"""Private Postfix instances (apt's Postfix 3.7) with a Dovecot for SASL, one config dir each."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import procs
from .dovecot import DOVECOT, start_dovecot
from .server import TEMPLATES, LabServer, render

POSTFIX = Path("/usr/sbin/postfix")
MASTER = Path("/usr/lib/postfix/sbin/master")
SERVICES = ("smtp", "submission", "smtps")


POSTFIX_FILES = Path("/etc/postfix/postfix-files")


def _make_queue_dirs(queue_dir: Path, data_dir: Path) -> None:
    """Create queue/data directories with the owner and mode Postfix's own postfix-files lists.

    `postfix check` would do it too, but its create-missing pass costs ~1.7 s per instance.
    """
    roots = {"$queue_directory": queue_dir, "$data_directory": data_dir}
    owners = {"$mail_owner": "postfix", "$setgid_group": "postdrop", "root": "root", "-": None}
    for line in POSTFIX_FILES.read_text().splitlines():
        fields = line.split(":")
        if len(fields) < 5 or fields[1] != "d" or fields[0].split("/", 1)[0] not in roots:
            continue
        root, _, rest = fields[0].partition("/")
        path = roots[root] / rest if rest else roots[root]
        path.mkdir(parents=True, exist_ok=True)
        user, group = owners.get(fields[2], fields[2]), owners.get(fields[3], fields[3])
        shutil.chown(path, user or "root", group or "root")
        path.chmod(int(fields[4], 8))


class PostfixServer(LabServer):
    mta = "postfix"

    @property
    def config_dir(self) -> Path:
        return self.run_dir / "etc"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "postfix.log"

    @classmethod
    def required_binaries(cls) -> list[Path]:
        return [POSTFIX, MASTER, DOVECOT]

    def _values(self) -> dict[str, Any]:
        return {
            "config_dir": self.config_dir,
            "queue_dir": self.run_dir / "queue",
            "data_dir": self.run_dir / "data",
            "log_file": self.log_path,
            "log_dir": self.log_dir,
            "hostname": self.hostname,
            "cert_chain": self.cert.chain,
            "cert_key": self.cert.key,
            "sasl_path": self.run_dir / "dovecot" / "auth",
            "local_recipient_map": "inline:{ " + ", ".join(f"{u}=ok" for u in self.local_users) + " }",
            **{f"{role}_port": port for role, port in self.ports.items()},
        }

    def _write_config(self) -> None:
        values = self._values()
        main_params: dict[str, str] = {}
        service_opts: dict[str, list[str]] = {s: [] for s in SERVICES}
        for key, value in self.params.items():
            value = render(str(value), values)
            if "/" in key:
                service, param = key.split("/", 1)
                if service not in service_opts:
                    raise ValueError(f"{self.name}: unknown master.cf service in {key!r}")
                # master.cf splits on whitespace: the {...} form keeps spaces inside one -o value.
                service_opts[service].append(f"  -o {{{param}={value}}}" if " " in value
                                             else f"  -o {param}={value}")
            else:
                main_params[key] = value

        base = render((TEMPLATES / "postfix" / "main.cf").read_text(), values)
        # A variant parameter replaces the base line of the same name (no duplicate warnings).
        kept = [
            line for line in base.splitlines()
            if line.split("=", 1)[0].strip() not in main_params
        ]
        main = "\n".join(kept) + "\n\n# variant parameters\n" + "".join(
            f"{k} = {v}\n" for k, v in main_params.items()
        )
        master_values = dict(values)
        for service, opts in service_opts.items():
            master_values[f"{service}_opts"] = "\n".join(opts)
        master = render((TEMPLATES / "postfix" / "master.cf").read_text(), master_values)
        # Empty option lines would end a service entry early: drop blank lines.
        master = "\n".join(line for line in master.splitlines() if line.strip()) + "\n"

        self.config_dir.mkdir(parents=True, exist_ok=True)
        _make_queue_dirs(self.run_dir / "queue", self.run_dir / "data")
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(master)
        # Postfix waits (in 300 ms steps) while main.cf looks freshly written, which cost ~1.7 s per
        # start: date the files a few seconds back.
        past = time.time() - 10
        for f in ("main.cf", "master.cf"):
            os.utime(self.config_dir / f, (past, past))
        # TLS keys are read by smtpd (as root, before it drops privileges) straight from the PKI dir.

    def _launch(self) -> list[subprocess.Popen]:
        started: list[subprocess.Popen] = []
        try:
            if self.credentials is not None:
                dovecot, _ = start_dovecot(
                    self.run_dir / "dovecot", self.log_dir / "dovecot.log", self.credentials, self.name
                )
                started.append(dovecot)
            # Validates the config (fatal errors of master itself would be lost: no postlogd yet).
            check = subprocess.run(
                [str(POSTFIX), "-c", str(self.config_dir), "check"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
            )
            if check.returncode != 0:
                raise procs.LabStartError(f"postfix check failed:\n{check.stdout}{check.stderr}")
            # master -d stays in the foreground: it is our child, stopped by its PID. Its own
            # fatal errors before postlogd runs are lost (no syslog): `postfix check` catches most.
            started.append(
                procs.spawn([str(MASTER), "-c", str(self.config_dir), "-d"], self.log_path)
            )
            return started
        except BaseException:
            for proc in reversed(started):
                procs.stop_process(proc)
            raise
