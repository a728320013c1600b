"""Two shards recording into the same (new) database at the same moment, from two processes:
both create/migrate races and write races end with every scan stored whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from smtpaudit.cli import main
from smtpaudit.history import open_store, queries
from tests.fakes.mta import FakeMta, ThreadedMta

ROOT = Path(__file__).resolve().parents[2]
NIGHTS = 8

WRITER = r"""
import sys, time
from smtpaudit.cli import main
start, db, files = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
while time.time() < start:
    time.sleep(0.001)
for f in files:
    code = main(["report", f, "--history", db, "-q"])
    if code != 0:
        sys.exit(10 + code)
"""


def test_two_shards_write_at_once(tmp_path):
    base = tmp_path / "scan.json"
    with ThreadedMta(FakeMta(vrfy="truthful")) as m1, ThreadedMta(FakeMta(open_relay=True)) as m2:
        assert main(["scan", f"127.0.0.1:{m1.port}", f"127.0.0.1:{m2.port}", "-o", str(base), "-q", "--skip-tag", "dns",
                     "--greeting-timeout", "3", "--command-timeout", "3", "--timeout", "30"]) == 1
    report = json.loads(base.read_text())
    files: dict[int, list[str]] = {1: [], 2: []}
    expected_findings = 0
    for night in range(1, NIGHTS + 1):
        for shard in (1, 2):
            part = dict(report, endpoints=[report["endpoints"][shard - 1]])
            part["started"] = f"2026-11-{night:02d}T02:00:{shard:02d}Z"
            part["invocation"] = dict(report["invocation"], options=dict(report["invocation"]["options"], shard=f"{shard}/2"))
            path = tmp_path / f"night{night}-shard{shard}.json"
            path.write_text(json.dumps(part))
            files[shard].append(str(path))
            expected_findings += len(part["endpoints"][0]["findings"])
    db = tmp_path / "fleet.db"  # does not exist yet: both processes race to create it
    start = time.time() + 1.5
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(start), str(db), *files[s]], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with open_store(db, write=False) as store:
        c = store.conn
        assert c.execute("SELECT count(*) FROM scan").fetchone()[0] == 2 * NIGHTS
        assert c.execute("SELECT count(*) FROM observation").fetchone()[0] == 2 * NIGHTS
        assert c.execute("SELECT count(*) FROM finding").fetchone()[0] == expected_findings
        assert sorted(r[0] for r in c.execute("SELECT shard FROM scan")) == ["1/2"] * NIGHTS + ["2/2"] * NIGHTS
        for shard in (1, 2):
            for f in files[shard]:
                recorded = json.loads(Path(f).read_text())
                sid = c.execute("SELECT id FROM scan WHERE started = ?", (recorded["started"],)).fetchone()[0]
                assert store.scan_report(sid) == recorded
        order = [r[0] for r in c.execute("SELECT shard FROM scan ORDER BY id")]
        trend = queries.trend(queries.load(store))
    # the two writers really ran at the same time: their scans interleave in the database
    assert order != sorted(order) and order != sorted(order, reverse=True), order
    assert [n["scans"] for n in trend["nights"]] == [2] * NIGHTS
    assert [n["endpoints"] for n in trend["nights"]] == [2] * NIGHTS
    assert all(n["fixed"] == 0 for n in trend["nights"])  # the shards never see each other's endpoints as gone
