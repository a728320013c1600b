"""pytest fixtures for the real-server lab; load with `pytest_plugins = ["tests.lab.fixtures"]`.

Session-scoped, started lazily (only when a test asks) and stopped at session end:
`postfix_hardened`, `postfix_insecure`, `exim_secure`, `exim_insecure`, `opensmtpd`, `opensmtpd_insecure` (each a
`tests.lab.server.LabServer`), plus `lab` (the `tests.lab.mta.Lab` holding them) and
`lab_reconfigure` (restart an instance with changed parameters, restored after the test).

A missing server binary or a failed start skips the test with the reason, or fails it when
CI=true (a CI run must not go green by skipping the lab).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .exim import exim_binary
from .mta import INSTANCES, Lab
from .opensmtpd import smtpd_binary
from .server import LabServer

INSTALL_HINT = "run .ci/install-lab.sh"
# First start-up time of each instance in this session (seconds), for the terminal summary.
STARTUP_SECONDS: dict[str, float] = {}


def _known_binaries() -> dict[str, Path]:
    # Names tests may pass to lab_require; anything else is looked up on PATH (then /usr/sbin).
    return {
        "postfix": Path("/usr/sbin/postfix"),
        "dovecot": Path("/usr/sbin/dovecot"),
        "exim": exim_binary(),
        "exim4": exim_binary(),
        "opensmtpd": smtpd_binary(),
        "smtpd": smtpd_binary(),
    }


def lab_unavailable(reason: str) -> NoReturn:
    """Skip with `reason`, or fail when CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the lab must work in CI)", pytrace=False)
    pytest.skip(reason)


def lab_require(binary: str | Path, what: str | None = None) -> Path:
    """Return the path of a lab binary, or skip/fail (CI=true) with an install hint when it is missing.

    `binary` is a name (postfix, exim, opensmtpd, dovecot, swaks, nmap, testssl, ...) or a path;
    `what` names it in the message (default: the binary's name).
    """
    name = what or (Path(binary).name if isinstance(binary, Path) or "/" in str(binary) else str(binary))
    if isinstance(binary, Path) or "/" in str(binary):
        path: Path | None = Path(binary)
    else:
        known = _known_binaries().get(str(binary))
        found = shutil.which(str(binary)) or shutil.which(str(binary), path="/usr/sbin:/sbin")
        path = known or (Path(found) if found else None)
    if path is None or not os.access(path, os.X_OK):
        lab_unavailable(f"{name} not installed: {INSTALL_HINT}")
    return path


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The lab: one run directory (temp, removed at the end unless SMTPAUDIT_LAB_KEEP=1)."""
    the_lab = Lab()
    yield the_lab
    the_lab.cleanup(keep=bool(os.environ.get("SMTPAUDIT_LAB_KEEP")))


def start_instance(lab: Lab, name: str) -> LabServer:
    """Start (once) and return instance `name`, or skip/fail with the reason and log tails."""
    cls = INSTANCES[name]
    for binary in cls.required_binaries():
        lab_require(binary, what=f"{cls.mta} ({binary})")
    srv = lab.get(name)
    if not srv.running:
        try:
            srv.start()
        except Exception as exc:  # noqa: BLE001 - any start failure is reported the same way
            lab_unavailable(f"lab instance {name} failed to start: {exc}")
        STARTUP_SECONDS.setdefault(name, srv.startup_seconds or 0.0)
    return srv


@pytest.fixture(scope="session")
def postfix_hardened(lab: Lab) -> LabServer:
    return start_instance(lab, "postfix-hardened")


@pytest.fixture(scope="session")
def postfix_insecure(lab: Lab) -> LabServer:
    return start_instance(lab, "postfix-insecure")


@pytest.fixture(scope="session")
def exim_secure(lab: Lab) -> LabServer:
    return start_instance(lab, "exim-secure")


@pytest.fixture(scope="session")
def exim_insecure(lab: Lab) -> LabServer:
    return start_instance(lab, "exim-insecure")


@pytest.fixture(scope="session")
def opensmtpd(lab: Lab) -> LabServer:
    return start_instance(lab, "opensmtpd")


@pytest.fixture(scope="session")
def opensmtpd_insecure(lab: Lab) -> LabServer:
    return start_instance(lab, "opensmtpd-insecure")


@pytest.fixture(scope="session")
def aiosmtpd_hardened(lab: Lab) -> LabServer:
    return start_instance(lab, "aiosmtpd-hardened")


@pytest.fixture(scope="session")
def aiosmtpd_insecure(lab: Lab) -> LabServer:
    return start_instance(lab, "aiosmtpd-insecure")


@pytest.fixture
def lab_reconfigure() -> Iterator[Callable[..., LabServer]]:
    """`lab_reconfigure(server, **changes)`: restart `server` with changed parameters (same ports).

    Every server touched is restarted with its original configuration after the test, so the
    session-scoped instances stay as their variant describes them.
    """
    touched: list[LabServer] = []

    def reconfigure(server: LabServer, **changes: Any) -> LabServer:
        touched.append(server)
        try:
            server.restart(**changes)
        except Exception as exc:  # noqa: BLE001
            lab_unavailable(f"lab instance {server.name} failed to restart: {exc}")
        return server

    yield reconfigure
    for server in touched:
        server.reset()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Report how long each lab instance took to start (first start of the session)."""
    if STARTUP_SECONDS:
        terminalreporter.write_sep("-", "lab start-up times")
        for name, seconds in STARTUP_SECONDS.items():
            terminalreporter.write_line(f"{name:<18} {seconds:6.2f} s")
        terminalreporter.write_line(f"{'total':<18} {sum(STARTUP_SECONDS.values()):6.2f} s")
