"""Fixtures of the hostile suite: one real saved report (a scan of a fake server) to mutate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.smtp import ThreadedFake
from tests.hostile.helpers import cli, load_valid_report
from tests.report.conftest import weak_fake


@pytest.fixture(scope="session")
def saved_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid JSON report with findings, made by the real CLI (DNS rules skipped: loopback only)."""
    out = tmp_path_factory.mktemp("saved") / "scan.json"
    with ThreadedFake(weak_fake()) as srv:
        run = cli("scan", srv.target, "-o", out, "-q", "--skip-tag", "dns", "--timeout", "30",
                  "--greeting-timeout", "3", "--command-timeout", "3")
    assert run.code in (0, 1), run.err
    load_valid_report(out)
    return out
