"""SIGINT/SIGTERM during a 20-endpoint fleet scan: it stops promptly, writes a report of the
endpoints finished so far marked ``interrupted`` (the asked format, plus the JSON next to it),
and exits 130/143. Nothing finished is lost; nothing half-written is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from smtpaudit.interrupt import GRACE_SECONDS
from tests.fakes.smtp import Delay, FakeSmtpServer, Send, ThreadedFake, simple_responder
from tests.hostile.helpers import ROOT
from tests.report_schema import assert_valid_report

FAST, SLOW = 5, 15


class Fleet:
    """5 servers that answer at once and 15 that stay silent for a minute, all on loopback."""

    def __enter__(self) -> list[str]:
        self.fakes = [ThreadedFake(FakeSmtpServer(script=[Send(b"220 fast.example.test ESMTP\r\n")], responder=simple_responder()))
                      for _ in range(FAST)]
        self.fakes += [ThreadedFake(FakeSmtpServer(script=[Delay(60), Send(b"220 slow.example.test ESMTP\r\n")], responder=simple_responder()))
                       for _ in range(SLOW)]
        return [f.__enter__().target for f in self.fakes]

    def __exit__(self, *exc: object) -> None:
        for f in self.fakes:
            f.__exit__(None, None, None)


def scan_and_signal(tmp_path, targets: list[str], sig: int, output: str, wait: float = 8.0) -> tuple[int, float, str]:
    fleet = tmp_path / "fleet.txt"
    fleet.write_text("\n".join(targets) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "smtpaudit", "scan", "-f", str(fleet), "-o", str(tmp_path / output), "-q",
                             "--skip-tag", "dns", "--concurrency", "20", "--greeting-timeout", "30", "--timeout", "90"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    time.sleep(wait)  # the fast five are scanned within a few seconds; the slow ones never answer in time
    assert proc.poll() is None, proc.communicate()
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - t0, err


@pytest.mark.parametrize("sig,code,output", [(signal.SIGTERM, 143, "fleet.html"), (signal.SIGINT, 130, "fleet.json")],
                         ids=["sigterm-html", "sigint-json"])
def test_signal_during_a_fleet_scan_keeps_what_finished(tmp_path, sig, code, output):
    (tmp_path / output).write_text("previous report\n")
    with Fleet() as targets:
        rc, stop, err = scan_and_signal(tmp_path, targets, sig, output)
    assert "Traceback" not in err, err
    assert rc == code, err
    assert stop < GRACE_SECONDS + 3, stop  # promptly: the silent servers are not waited for
    json_path = tmp_path / (output if output.endswith(".json") else output + ".json")
    report = json.loads(json_path.read_text())
    assert_valid_report(report)
    stopped = report["interrupted"]
    assert stopped["signal"] == signal.Signals(sig).name
    fast, slow = set(targets[:FAST]), set(targets[FAST:])
    finished = [e["endpoint"]["id"] for e in report["endpoints"]]
    assert 1 <= len(finished) <= FAST and set(finished) <= fast, finished
    assert all(e["status"] == "complete" and e["score"]["grade"] for e in report["endpoints"])
    assert slow <= set(stopped["not_finished"]) and len(finished) + len(stopped["not_finished"]) == FAST + SLOW
    if output.endswith(".html"):
        page = (tmp_path / output).read_text()
        assert page.startswith("<!DOCTYPE html>") and f"Interrupted by {signal.Signals(sig).name}" in page
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".smtpaudit-")) == []  # no temp files
