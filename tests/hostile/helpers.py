"""Running the real CLI in a subprocess (so a traceback or a hang is visible as such) and timing it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.report_schema import assert_valid_report

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    out: str
    err: str
    wall: float
    cpu: float  # user + system seconds of the child


def cli(*args: Any, timeout: float = 120, cwd: Path | None = None, stdin: str | None = None) -> Run:
    """``python -m smtpaudit ARGS`` with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "smtpaudit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=env, input=stdin)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(proc.returncode, proc.stdout, proc.stderr, wall, cpu)


def assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.err and "Traceback" not in run.out, run.err[-3000:]


def assert_usage_error(run: Run, *fragments: str) -> None:
    """Exit 2 with a first line naming what is wrong ('smtpaudit: ...', or FILE: ... from
    `rules validate`, which lists problems one per line), and no traceback."""
    assert_no_traceback(run)
    assert run.code == 2, (run.code, run.err[-2000:])
    first = run.err.strip().splitlines()[0]
    assert first.startswith(("smtpaudit:", "/")), run.err[-2000:]
    for fragment in fragments:
        assert fragment in first, (fragment, first)


def load_valid_report(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text(encoding="utf-8"))
    assert_valid_report(report)
    return report
