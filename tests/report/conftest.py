"""Shared helpers for the report tests: external tools (skip, or fail under CI=true), SARIF validation,
and scans of fake servers through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import pytest

from smtpaudit.cli import main
from tests.fakes.smtp import FakeSmtpServer, Send, ThreadedFake, simple_responder
from tests.report_schema import assert_valid_report

SARIF_SCHEMA = Path(os.environ.get("SMTPAUDIT_SARIF_SCHEMA", "/work/shared/schemas/sarif-schema-2.1.0.json"))
# A verbatim copy of the OASIS errata-01 schema (sha256 c3b4bb2d...2682e), so CI needs nothing outside the repo.
_LOCAL_SCHEMA = Path(__file__).with_name("sarif-schema-2.1.0.json")
TOOLS_DIR = Path(os.environ.get("SMTPAUDIT_TOOLS_DIR", "/opt/smtpaudit-tools"))
MULTITOOL = Path(os.environ.get("SARIF_MULTITOOL", TOOLS_DIR / "sarif-multitool/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool"))
INSTALL_HINT = "run .ci/install-report-tools.sh"


def tool_unavailable(reason: str) -> NoReturn:
    """Skip with the reason, or fail when CI=true (CI must not go green by skipping)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: report tools must be installed)", pytrace=False)
    pytest.skip(reason)


def _sarif_validator() -> jsonschema.Draft4Validator:
    path = _LOCAL_SCHEMA if _LOCAL_SCHEMA.is_file() else SARIF_SCHEMA
    schema = json.loads(path.read_text())
    # Draft-7's format checker (with rfc3986-validator) checks uri / uri-reference; Draft-4's does not.
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def assert_valid_sarif(log: dict[str, Any]) -> None:
    """Valid against the official SARIF 2.1.0 (errata 01) schema, uri formats included."""
    import rfc3986_validator  # noqa: F401 - without it uri-reference is silently unchecked

    errors = sorted(_sarif_validator().iter_errors(log), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def multitool_findings(sarif_path: Path, workdir: Path) -> list[dict[str, Any]]:
    """Run the SARIF Multitool's GitHub + SARIF rules; return its results (it always exits 0)."""
    if not os.access(MULTITOOL, os.X_OK):
        tool_unavailable(f"SARIF Multitool not installed at {MULTITOOL}: {INSTALL_HINT}")
    out = workdir / "multitool-validation.sarif"
    proc = subprocess.run(
        [str(MULTITOOL), "validate", str(sarif_path), "--rule-kind", "Gh;Sarif", "--level", "Error;Warning;Note",
         "-o", str(out), "--log", "ForceOverwrite"],
        capture_output=True, text=True, timeout=180, cwd=workdir,
        env={**os.environ, "DOTNET_CLI_TELEMETRY_OPTOUT": "1", "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT": "1"},
    )
    assert out.is_file(), f"multitool wrote no log: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    log = json.loads(out.read_text(encoding="utf-8-sig"))
    return [r for run in log["runs"] for r in run.get("results", [])]


def chromium_binary() -> str:
    from tests.report.browser import find_chromium

    binary = find_chromium()
    if binary is None:
        tool_unavailable(f"chromium not installed: {INSTALL_HINT}")
    return binary


def weak_fake(banner: str = "weak.example.test ESMTP Exim 4.91 ready", *, vrfy: bool = True) -> FakeSmtpServer:
    """A plaintext-only server with AUTH before TLS and (optionally) a disclosing VRFY."""
    base = simple_responder(ehlo=["weak.example.test", "PIPELINING", "AUTH PLAIN LOGIN", "SIZE 1000000"],
                            replies={"EXPN": b"502 5.5.1 EXPN not available\r\n", "AUTH": b"535 5.7.8 Authentication failed\r\n"})

    def respond(line: str) -> bytes | None:
        verb, _, arg = line.partition(" ")
        if verb.upper() == "VRFY":
            if not vrfy:
                return b"252 Cannot VRFY user\r\n"
            # Truthful VRFY: known users confirmed, anything else unknown (the disclosure signature).
            return b"250 Postmaster <postmaster@weak.example.test>\r\n" if "postmaster" in arg.lower() else b"550 5.1.1 User unknown\r\n"
        return base(line)

    return FakeSmtpServer(script=[Send(f"220 {banner}\r\n".encode())], responder=respond)


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def scan_to(path: Path, *targets: str, extra: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    """Scan with the real CLI into a JSON file; return the exit code and the validated report."""
    code = run_cli("scan", *targets, "-o", str(path), "-q", "--greeting-timeout", "3", "--command-timeout", "3",
                   "--connect-timeout", "3", "--timeout", "30", *extra)
    report = json.loads(path.read_text())
    assert_valid_report(report)
    return code, report


@pytest.fixture
def weak_server():
    with ThreadedFake(weak_fake()) as srv:
        yield srv


@pytest.fixture(scope="session")
def sarif_schema_available() -> None:
    if not (_LOCAL_SCHEMA.is_file() or SARIF_SCHEMA.is_file()):
        tool_unavailable(f"SARIF schema not found at {SARIF_SCHEMA}")
