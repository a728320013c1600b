"""Run sslyze (a test-only peer) on one endpoint and return accepted suites per protocol.

sslyze may live in this interpreter or in another one (its cryptography pin can clash with
ours): ``SMTPAUDIT_SSLYZE_PYTHON`` names that interpreter; otherwise this one is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SSLYZE_KEYS = {
    "SSLv2": "ssl_2_0", "SSLv3": "ssl_3_0", "TLSv1.0": "tls_1_0",
    "TLSv1.1": "tls_1_1", "TLSv1.2": "tls_1_2", "TLSv1.3": "tls_1_3",
}


def sslyze_python() -> str | None:
    """An interpreter that can import sslyze, or None."""
    # .ci/install-peers.sh puts sslyze in its own venv: it pins cryptography<47, which must not
    # downgrade the project's own environment.
    lab_venv = os.path.join(os.environ.get("SMTPAUDIT_LAB_PREFIX", "/opt/smtpaudit-lab"), "sslyze-venv", "bin", "python")
    for py in (os.environ.get("SMTPAUDIT_SSLYZE_PYTHON"), lab_venv, sys.executable):
        if not py or not os.path.isfile(py):
            continue  # the lab venv is absent on a machine that has only what the README installs
        try:
            if subprocess.run([py, "-c", "import sslyze"], capture_output=True, timeout=60).returncode == 0:
                return py
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def run_sslyze(python: str, host: str, port: int, *, starttls: bool, with_cert: bool = False) -> tuple[dict, float]:
    """(parsed JSON scan_result, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sslyze.json"
        cmd = [python, "-m", "sslyze", f"{host}:{port}", f"--json_out={out}", "--sslv2", "--sslv3", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--mozilla_config=disable"]
        if with_cert:
            cmd.append("--certinfo")
        if starttls:
            cmd += ["--starttls", "smtp"]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - t0
        if not out.exists():
            raise RuntimeError(f"sslyze failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        data = json.loads(out.read_text())
    results = data["server_scan_results"]
    if not results or results[0].get("scan_status") != "COMPLETED":
        raise RuntimeError(f"sslyze could not scan {host}:{port}: {results[0].get('connectivity_error_trace') if results else 'no result'}")
    return results[0]["scan_result"], wall


def accepted_by_protocol(scan_result: dict) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(accepted names, every name sslyze tested) per protocol."""
    accepted: dict[str, set[str]] = {}
    tested: dict[str, set[str]] = {}
    for proto, key in SSLYZE_KEYS.items():
        r = scan_result[f"{key}_cipher_suites"]["result"]
        accepted[proto] = {c["cipher_suite"]["name"] for c in r["accepted_cipher_suites"]}
        tested[proto] = accepted[proto] | {c["cipher_suite"]["name"] for c in r["rejected_cipher_suites"]}
    return accepted, tested
