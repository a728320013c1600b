"""What every lab instance is: a named variant of one MTA, its ports, certs, credentials, and its lifecycle.

An instance's configuration is data: a variant file (`variants/<name>.toml`) gives the MTA's
parameters, `templates/<mta>/` the rest of its config files. `restart(**changes)` applies changed
parameters on the same ports, so a test can scan, reconfigure, and scan again.
"""

from __future__ import annotations

import abc
import errno
import os
import re
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from . import procs
from .certs import LAB_HOSTNAME, CertPair, LabPKI

LAB_DIR = Path(__file__).resolve().parent
TEMPLATES = LAB_DIR / "templates"
VARIANTS = LAB_DIR / "variants"
# Exim and OpenSMTPD are unpacked here by .ci/install-lab.sh (they conflict with the apt Postfix).
DEFAULT_PREFIX = "/opt/smtpaudit-lab"

# Local parts that exist on every instance (for lab.test and mail.lab.test); anything else is
# an unknown user. postmaster must exist (RFC 5321 4.5.1); enumeration probes need a difference.
LAB_LOCAL_USERS = ("postmaster", "abuse", "labuser")
LAB_DOMAINS = ("lab.test", LAB_HOSTNAME)

_PLACEHOLDER = re.compile(r"@@([A-Za-z0-9_]+)@@")


def lab_prefix() -> Path:
    return Path(os.environ.get("SMTPAUDIT_LAB_PREFIX", DEFAULT_PREFIX))


@dataclass(frozen=True)
class Credentials:
    """A SASL login the instance accepts (test-only secret)."""

    user: str
    password: str


def render(template: str, values: dict[str, Any]) -> str:
    """Replace `@@name@@` placeholders; an unknown name is an error, never an empty string.

    `@@` is used because `$`, `{` and `%` all mean something in Postfix, Exim or OpenSMTPD syntax.
    """

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @@{key}@@ has no value")
        return str(values[key])

    return _PLACEHOLDER.sub(sub, template)


def load_variant(name: str) -> dict[str, Any]:
    with open(VARIANTS / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


class LabServer(abc.ABC):
    """One lab instance. Subclasses write the config and launch the daemon(s)."""

    mta: ClassVar[str]
    # Port roles this MTA can serve; "smtps" is implicit TLS.
    port_roles: ClassVar[tuple[str, ...]] = ("smtp", "submission", "smtps")
    host = procs.LOOPBACK
    hostname = LAB_HOSTNAME

    def __init__(self, name: str, run_root: Path, pki: LabPKI) -> None:
        spec = load_variant(name)
        if spec["mta"] != self.mta:
            raise ValueError(f"variant {name} is for {spec['mta']}, not {self.mta}")
        self.name = name
        self.variant: str = spec["variant"]
        self.description: str = spec.get("description", "")
        self.pki = pki
        self.cert: CertPair = getattr(pki, spec["cert"])
        # Trust anchor a client should use; a self-signed leaf is its own anchor.
        self.ca_cert: Path = self.cert.cert if spec["cert"] == "weak" else pki.ca_cert
        creds = spec.get("credentials")
        self.credentials: Credentials | None = Credentials(**creds) if creds else None
        self._base_params: dict[str, Any] = dict(spec.get("params", {}))
        self.params: dict[str, Any] = dict(self._base_params)
        self.spec = spec
        # What the variant is meant to produce (checked by test_lab_smoke.py). Describes the
        # variant's own parameters: after restart(**changes) it may no longer hold.
        self.expect: dict[str, Any] = dict(spec.get("expect", {}))
        self.local_users: tuple[str, ...] = LAB_LOCAL_USERS
        self.domains: tuple[str, ...] = LAB_DOMAINS
        self.run_dir = run_root / name
        self.log_dir = self.run_dir / "log"
        self.ports: dict[str, int] = {}
        self.banner: str = ""
        self.startup_seconds: float | None = None
        self._procs: list[subprocess.Popen] = []
        self._fresh = True

    # -- what subclasses provide ------------------------------------------------------------
    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """The MTA's main log file."""

    @abc.abstractmethod
    def _write_config(self) -> None:
        """Render config files into self.run_dir from templates + self.params + self.ports."""

    @abc.abstractmethod
    def _launch(self) -> list[subprocess.Popen]:
        """Start the daemon(s) in the foreground; return them in start order."""

    @classmethod
    @abc.abstractmethod
    def required_binaries(cls) -> list[Path]:
        """Executables that must exist for this MTA (checked by lab_require)."""

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    @property
    def pid(self) -> int | None:
        """PID of the MTA's main process (the last one launched)."""
        return self._procs[-1].pid if self._procs else None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        t0 = time.monotonic()
        if self._fresh:
            # Leftovers of an earlier run (stale pid files, queue) would confuse the daemons.
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._fresh = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Ports are chosen once and kept across restarts: a test compares scans of the same address.
        # Only a port race on the very first start (EADDRINUSE) picks new ones.
        attempts = 3 if not self.ports else 1
        for attempt in range(attempts):
            if not self.ports or attempt > 0:
                self.ports = dict(zip(self.port_roles, procs.free_ports(len(self.port_roles))))
            try:
                self._write_config()
                self._procs = self._launch()
                main = self.ports[self.port_roles[0]]
                others = [p for r, p in self.ports.items() if r != self.port_roles[0]]
                self.banner = procs.wait_until_ready(
                    self._procs[-1], main, others, self.log_tails, timeout=timeout
                )
                break
            except procs.LabStartError as exc:
                self.stop()
                if attempt + 1 < attempts and is_addr_in_use(str(exc)):
                    continue
                raise procs.LabStartError(f"{self.name}: {exc}") from None
        self.startup_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the daemons by PID (and their process groups) and wait until they are gone."""
        self.request_stop()
        self.wait_stopped()

    def request_stop(self) -> None:
        """Signal the daemons to stop without waiting (so several instances stop in parallel)."""
        for proc in reversed(self._procs):
            procs.terminate_group(proc)

    def wait_stopped(self) -> None:
        for proc in reversed(self._procs):
            procs.wait_group(proc)
        self._procs = []

    def restart(self, **changes: Any) -> None:
        """Stop, apply parameter changes (a value of None removes the parameter), start again.

        The keys are the variant's `params` keys, i.e. MTA parameters (Postfix main.cf names,
        `service/name` for a master.cf -o override, Exim main options and macros, ...).
        """
        self.stop()
        for key, value in changes.items():
            if value is None:
                self.params.pop(key, None)
            else:
                self.params[key] = value
        self.start()

    def reset(self) -> None:
        """Restart with the variant's original parameters if a test changed them (or stopped it)."""
        if self.params != self._base_params or not self.running:
            self.stop()
            self.params = dict(self._base_params)
            self.start()

    @property
    def targets(self) -> dict[str, str]:
        """Scanner target strings per port role (smtp://, submission://, smtps:// with the real port)."""
        return {role: f"{role}://{self.host}:{port}" for role, port in self.ports.items()}

    @property
    def endpoints(self) -> dict[str, Any]:
        """The targets parsed into smtpaudit Endpoints (mode and role come from the scheme).

        Imported here: starting and stopping the lab does not need smtpaudit itself.
        """
        from smtpaudit.targets import parse_target

        return {role: parse_target(target) for role, target in self.targets.items()}

    def log_tail(self, lines: int = 40) -> str:
        """The end of the MTA's main log."""
        return procs.log_tail(self.log_path, lines)

    def log_tails(self, lines: int = 20) -> str:
        """The end of every log of this instance (MTA, stderr, Dovecot): for failure messages."""
        files = sorted(p for p in self.log_dir.glob("*") if p.is_file()) if self.log_dir.is_dir() else []
        return "\n".join(procs.log_tail(p, lines) for p in files) or f"[no logs in {self.log_dir}]"

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary (for reports and debugging)."""
        return {
            "name": self.name,
            "mta": self.mta,
            "variant": self.variant,
            "host": self.host,
            "ports": dict(self.ports),
            "targets": self.targets,
            "banner": self.banner,
            "ca_cert": str(self.ca_cert),
            "log_path": str(self.log_path),
            "credentials": (
                {"user": self.credentials.user, "password": self.credentials.password}
                if self.credentials else None
            ),
            "pid": self.pid,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ports={self.ports} pid={self.pid}>"


def is_addr_in_use(text: str) -> bool:
    return "in use" in text or os.strerror(errno.EADDRINUSE) in text
