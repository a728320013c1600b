"""A private OpenSMTPD 6.8 instance, run from the unpacked .deb inside its own mount namespace.

smtpd has its spool (/var/spool/smtpd), control socket (/var/run/smtpd.sock), chroot
(/var/lib/opensmtpd/empty) and helpers (/usr/libexec/opensmtpd) compiled in. `unshare -m`
gives the instance a private mount namespace where per-instance directories are bind-mounted
over those paths (mount points made by .ci/install-lab.sh), so the host is untouched.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from . import procs
from .server import TEMPLATES, LabServer, lab_prefix, render

UNSHARE = Path("/usr/bin/unshare")
# Compiled-in path -> per-instance replacement (relative to the run dir, or the prefix for libexec).
_SPOOL = Path("/var/spool/smtpd")
_RUN = Path("/run")  # /var/run -> /run on Debian
_CHROOT = Path("/var/lib/opensmtpd/empty")
_LIBEXEC = Path("/usr/libexec/opensmtpd")


def smtpd_binary() -> Path:
    return lab_prefix() / "usr" / "sbin" / "smtpd"


def _crypt_sha512(password: str) -> str:
    # OpenSMTPD's credentials table wants crypt(3) hashes; the stdlib crypt module is gone in 3.13.
    out = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
        check=True, timeout=30,
    )
    return out.stdout.strip()


class OpenSMTPDServer(LabServer):
    mta = "opensmtpd"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "smtpd.log"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "smtpd.conf"

    @classmethod
    def required_binaries(cls) -> list[Path]:
        return [smtpd_binary(), UNSHARE]

    def _write_config(self) -> None:
        spool = self.run_dir / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        spool.chmod(0o711)  # smtpd refuses a spool root with other modes
        for d in ("run", "empty"):
            (self.run_dir / d).mkdir(exist_ok=True)
        assert self.credentials is not None
        creds = self.run_dir / "creds"
        creds.write_text(f"{self.credentials.user} {_crypt_sha512(self.credentials.password)}\n")
        creds.chmod(0o640)
        shutil.chown(creds, "root", "opensmtpd")
        vusers = self.run_dir / "vusers"
        # The lab users of the lab domains are "delivered" (to /dev/null) as nobody; others are unknown.
        vusers.write_text("".join(f"{u}@{d} nobody\n" for d in self.domains for u in self.local_users))
        vusers.chmod(0o644)
        values = {
            "hostname": self.hostname,
            "cert_chain": self.cert.chain,
            "cert_key": self.cert.key,
            "creds_file": creds,
            "vusers_file": vusers,
            **{f"{role}_port": port for role, port in self.ports.items()},
            **self.params,
        }
        self.config_path.write_text(render((TEMPLATES / "opensmtpd" / "smtpd.conf").read_text(), values))
        self.config_path.chmod(0o644)

    def _launch(self) -> list[subprocess.Popen]:
        mounts = [
            (self.run_dir / "spool", _SPOOL),
            (self.run_dir / "run", _RUN),
            (self.run_dir / "empty", _CHROOT),
            (lab_prefix() / "usr" / "libexec" / "opensmtpd", _LIBEXEC),
        ]
        for _, target in mounts:
            if not target.is_dir():
                raise procs.LabStartError(f"mount point {target} missing: run .ci/install-lab.sh")
        # OpenSMTPD looks up every client's name before it greets. With the machine's resolver
        # unreachable (the lab has no DNS; CI machines have no internet) every 17th connection
        # waited 5 s for its greeting, 10 s of a 15 s scan: a lab artefact a real server with
        # working DNS does not have. In the namespace the resolver is loopback, where nothing
        # listens: lookups fail at once, and the client is greeted as unknown.
        # Only over an existing file (a dangling systemd-resolved symlink cannot be mounted on;
        # without the file, lookups go to loopback anyway).
        if Path("/etc/resolv.conf").resolve().is_file():
            resolv = self.run_dir / "resolv.conf"
            resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            resolv.chmod(0o644)
            mounts.append((resolv, Path("/etc/resolv.conf")))
        script = " && ".join(
            f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(dst))}" for src, dst in mounts
        )
        # -d: foreground, log to stderr (no syslog here). exec keeps one PID: unshare without --fork
        # execs sh, which execs smtpd, so the PID we hold is smtpd's parent process.
        script += f" && exec {shlex.quote(str(smtpd_binary()))} -d -f {shlex.quote(str(self.config_path))}"
        check = subprocess.run(
            [str(smtpd_binary()), "-n", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )
        if check.returncode != 0:
            raise procs.LabStartError(f"smtpd -n rejected the config:\n{check.stdout}{check.stderr}")
        return [
            procs.spawn(
                [str(UNSHARE), "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                self.log_path,
            )
        ]
