"""Fixtures for the DNS tests: the DNS lab (named + MTA-STS HTTPS server) and probe helpers.

Missing tools skip the lab tests with a reason; with CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lab.dns_lab import DnsLab, ci_strict, missing_tools  # noqa: E402

from smtpaudit.probes.base import ProbeContext, Timeouts  # noqa: E402
from smtpaudit.targets import parse_target  # noqa: E402


def need(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false; fail instead when CI=true (the lab must run in CI)."""
    if not condition:
        if ci_strict():
            pytest.fail(f"CI=true and the DNS lab cannot run: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def dns_lab(tmp_path_factory: pytest.TempPathFactory):
    miss = missing_tools()
    need(not miss, f"DNS lab tools missing: {', '.join(miss)} (run .ci/install-dns-lab.sh)")
    lab = DnsLab.build(tmp_path_factory.mktemp("dnslab"))
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def run_probe(probe: Any, target: str, options: dict[str, Any], prior: dict[str, Any] | None = None,
              **ctx_kwargs: Any):
    """Run one probe against ``target`` (a host or domain) and return its ProbeResult."""
    ctx = ProbeContext(options=options, timeouts=Timeouts(connect=3, command=3, tls=5, endpoint=60), **ctx_kwargs)
    return asyncio.run(probe.run(parse_target(target), ctx, prior or {}))


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory):
    """A CA and a leaf (no DNS server needed): (leaf_pem, ca_pem, leaf_cert, ca_cert)."""
    from tests.lab.dns_lab import Pki

    d = tmp_path_factory.mktemp("pki")
    pki = Pki.create(d)
    cert_file, _key, leaf = pki.issue(d, "leaf", ["mx.example.org"])
    text = cert_file.read_text()
    leaf_pem = text[: text.index("-----END CERTIFICATE-----") + 25] + "\n"
    return leaf_pem, pki.ca_file.read_text(), leaf, pki.ca_cert
