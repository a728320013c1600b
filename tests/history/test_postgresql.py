"""The history on a real PostgreSQL server (started by the test): the thirty nights give the same
answers as SQLite, two writer processes lose nothing, and a foreign, newer or locked history is
refused with exit 2 and nothing written. Skips without the server or psycopg; fails when CI=true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtpaudit.cli import main
from smtpaudit.history import open_store
from smtpaudit.history.migrations import LATEST, PG_SCHEMA
from tests.history.pg_server import INSTALL_HINT, PgServer, pg_bin

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL test server must be installed)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pg():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable(f"psycopg not installed: {INSTALL_HINT}")
    if pg_bin() is None:
        _unavailable(f"PostgreSQL server binaries not found: {INSTALL_HINT}")
    server = PgServer().start()
    yield server
    server.stop()


def _json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main([*argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_thirty_nights_same_answers_as_sqlite(pg, thirty_nights, capsys):
    url = pg.new_database()
    for night, path in sorted(thirty_nights.paths.items()):
        assert main(["report", str(path), "--history", url, "-q"]) == 0
    assert main(["report", str(thirty_nights.paths[30]), "--history", url, "-q"]) == 0  # idempotent
    for sub in (["trend"], ["findings", "--all"], ["mttr"], ["mttr", "--days", "20"], ["endpoint", thirty_nights.ids["A"]]):
        assert _json(capsys, "history", url, *sub) == _json(capsys, "history", str(thirty_nights.db), *sub), sub
    with open_store(url, write=False) as store:
        assert store.conn.execute("SELECT count(*) FROM scan").fetchone()[0] == 30
        sid = store.conn.execute("SELECT id FROM scan WHERE started = ?", (thirty_nights.reports[12]["started"],)).fetchone()[0]
        assert json.dumps(store.scan_report(sid)) == json.dumps(thirty_nights.reports[12])
    capsys.readouterr()
    assert main(["diff", "--history", url, str(thirty_nights.paths[25]), "--format", "json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert [f["rule_id"] for e in diff["endpoints"] for f in e["new"]] == ["vrfy-discloses-users"]
    prune = _json(capsys, "history", url, "prune", "--keep-days", "10")
    assert prune["scans_deleted"] == 19
    with open_store(url, write=False) as store:
        sid = store.conn.execute("SELECT id FROM scan WHERE started = ?", (thirty_nights.reports[20]["started"],)).fetchone()[0]
        assert store.scan_report(sid) == thirty_nights.reports[20]


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


def test_two_writers_lose_nothing(pg, thirty_nights, tmp_path):
    url = pg.new_database()  # empty: both processes race to create the schema
    files: dict[int, list[str]] = {1: [], 2: []}
    for night in range(1, 9):
        report = thirty_nights.reports[night]
        for shard in (1, 2):
            part = dict(report, endpoints=report["endpoints"][shard - 1::2], started=report["started"].replace(":00Z", f":0{shard}Z"))
            path = tmp_path / f"n{night}-s{shard}.json"
            path.write_text(json.dumps(part))
            files[shard].append(str(path))
    start = time.time() + 1.5
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(start), url, *files[s]], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with open_store(url, write=False) as store:
        c = store.conn
        assert c.execute("SELECT count(*) FROM scan").fetchone()[0] == 16
        assert c.execute("SELECT count(*) FROM observation").fetchone()[0] == 8 * 4
        expected = sum(len(e["findings"]) for n in range(1, 9) for e in thirty_nights.reports[n]["endpoints"])
        assert c.execute("SELECT count(*) FROM finding").fetchone()[0] == expected
        order = [r[0] for r in c.execute("SELECT started FROM scan ORDER BY id")]
    shards = [s[-2] for s in order]
    assert shards != sorted(shards), "the two writers did not overlap"


def _refused(capsys, url: str, report: Path, needle: str) -> None:
    for argv in (["report", str(report), "--history", url, "-q"], ["history", url, "trend"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and needle in err and "Traceback" not in err, (argv, err)


def test_foreign_newer_locked_and_unreachable(pg, thirty_nights, capsys, monkeypatch):
    import psycopg

    report = thirty_nights.paths[1]
    foreign = pg.new_database()
    with psycopg.connect(foreign, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {PG_SCHEMA}")
        conn.execute(f"CREATE TABLE {PG_SCHEMA}.invoices (id INTEGER)")
    _refused(capsys, foreign, report, "is not an smtpaudit history")
    with psycopg.connect(foreign, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (PG_SCHEMA,)).fetchone()[0] == 1

    newer = pg.new_database()
    assert main(["report", str(report), "--history", newer, "-q"]) == 0
    with psycopg.connect(newer, autocommit=True) as conn:
        conn.execute(f"UPDATE {PG_SCHEMA}.meta SET value = %s WHERE key = 'schema_version'", (str(LATEST + 1),))
    _refused(capsys, newer, report, f"schema version {LATEST + 1} is newer")

    locked = pg.new_database()
    assert main(["report", str(report), "--history", locked, "-q"]) == 0
    monkeypatch.setenv("SMTPAUDIT_HISTORY_BUSY_TIMEOUT", "0.5")
    from smtpaudit.history.migrations import APPLICATION_ID

    with psycopg.connect(locked, autocommit=True) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (APPLICATION_ID,))  # another writer mid-transaction
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["report", str(thirty_nights.paths[2]), "--history", locked, "-q"])
        assert exc.value.code == 2 and "locked by another writer" in capsys.readouterr().err
        holder.execute("ROLLBACK")
    with open_store(locked, write=False) as store:
        assert store.conn.execute("SELECT count(*) FROM scan").fetchone()[0] == 1

    # a wrong port: one line, and the password never shows
    bad = f"postgresql://smtpaudit:s3cret-pw@127.0.0.1:{_closed_port()}/postgres"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["history", bad, "trend"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "cannot connect to PostgreSQL" in err and "s3cret-pw" not in err, err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
