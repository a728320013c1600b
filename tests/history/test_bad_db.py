"""Bad history databases: corrupt, foreign, newer schema, locked, failed migration. Each gives
exit 2 with one clear line, leaves the file byte-for-byte unchanged and writes no report."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
from pathlib import Path

import pytest

from smtpaudit.cli import main
from smtpaudit.history import HistoryError, open_store, queries
from smtpaudit.history import store as store_mod
from smtpaudit.history.migrations import APPLICATION_ID, LATEST
from tests.fakes.mta import FakeMta, ThreadedMta


def _dead_target() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def small_report(tmp_path_factory) -> Path:
    """A real scan: one fake MTA with a VRFY finding, one dead port (unreachable)."""
    tmp = tmp_path_factory.mktemp("small")
    path = tmp / "scan.json"
    with ThreadedMta(FakeMta(vrfy="truthful")) as mta:
        main(["scan", f"127.0.0.1:{mta.port}", _dead_target(), "-o", str(path), "-q", "--skip-tag", "dns",
              "--connect-timeout", "2", "--greeting-timeout", "3", "--command-timeout", "3", "--timeout", "30"])
    return path


@pytest.fixture
def good_db(tmp_path, small_report) -> Path:
    db = tmp_path / "good.db"
    assert main(["report", str(small_report), "--history", str(db), "-q"]) == 0
    return db


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_refused(capsys, db: Path, report: Path, tmp_path: Path, needle: str) -> None:
    before = _digest(db)
    out = tmp_path / "out.html"
    for argv in (["report", str(report), "--history", str(db), "--format", "html", "-o", str(out), "-q"],
                 ["scan", _dead_target(), "--history", str(db), "-o", str(out), "-q", "--connect-timeout", "1"],
                 ["history", str(db), "trend"],
                 ["history", str(db), "prune", "--keep-days", "1"],
                 ["diff", "--history", str(db), str(report)]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2, argv
        assert needle in err and str(db) in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists(), argv
        assert _digest(db) == before, argv
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_not_a_database(tmp_path, small_report, capsys):
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is a text file, not a database\n" * 200)
    _assert_refused(capsys, db, small_report, tmp_path, "not an SQLite database")


def test_corrupt_pages(tmp_path, small_report, good_db, capsys):
    data = bytearray(good_db.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xde\xad\xbe\xef" * 1024  # page 2 onwards overwritten, header intact
    good_db.write_bytes(bytes(data))
    _assert_refused(capsys, good_db, small_report, tmp_path, "corrupt")


def test_foreign_sqlite_database(tmp_path, small_report, capsys):
    db = tmp_path / "other-app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('not ours')")
    conn.close()
    _assert_refused(capsys, db, small_report, tmp_path, "not an smtpaudit history")


def test_newer_schema(tmp_path, small_report, good_db, capsys):
    conn = sqlite3.connect(good_db)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    _assert_refused(capsys, good_db, small_report, tmp_path, f"schema version {LATEST + 1} is newer")


def test_locked_database(tmp_path, small_report, good_db, capsys, monkeypatch):
    monkeypatch.setenv("SMTPAUDIT_HISTORY_BUSY_TIMEOUT", "0.3")
    holder = sqlite3.connect(good_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer in the middle of its transaction
    try:
        out = tmp_path / "out.json"
        for argv in (["report", str(small_report), "--history", str(good_db), "-o", str(out), "-q"],
                     ["history", str(good_db), "prune", "--keep-days", "1"]):
            capsys.readouterr()
            with pytest.raises(SystemExit) as exc:
                main(argv)
            err = capsys.readouterr().err
            assert exc.value.code == 2 and "locked by another process" in err and "Traceback" not in err, err
            assert not out.exists()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with open_store(good_db, write=False) as store:
        assert store.conn.execute("SELECT count(*) FROM scan").fetchone()[0] == 1  # nothing added, nothing removed


def test_failed_migration_leaves_the_old_schema(tmp_path, good_db, monkeypatch):
    broken = store_mod.MIGRATIONS + ("CREATE TABLE added_by_v2 (a INTEGER);\nINSERT INTO no_such_table VALUES (1);",)
    monkeypatch.setattr(store_mod, "MIGRATIONS", broken)
    monkeypatch.setattr(store_mod, "LATEST", len(broken))
    with pytest.raises(HistoryError):
        open_store(good_db, write=True)
    conn = sqlite3.connect(good_db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'added_by_v2'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM scan").fetchone()[0] == 1
    conn.close()
    # a brand-new file with a failing migration stays empty, not half-built
    fresh = tmp_path / "fresh.db"
    with pytest.raises(HistoryError):
        open_store(fresh, write=True)
    conn = sqlite3.connect(fresh)
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0
    conn.close()


def test_missing_empty_and_directory(tmp_path, small_report, capsys):
    for argv, needle in ((["history", str(tmp_path / "none.db"), "trend"], "no such history database"),
                         (["history", str(tmp_path), "trend"], "is a directory"),
                         (["report", str(small_report), "--history", str(tmp_path / "no/dir/h.db"), "-q"], "does not exist")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and needle in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # e.g. `touch history.db`: a new database
    assert main(["report", str(small_report), "--history", str(empty), "-q"]) == 0
    conn = sqlite3.connect(empty)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_old_and_new_report_contracts_agree(tmp_path, small_report):
    """The current contract (complete/unreachable, grade null unless complete) and the older one
    (scanned/failed) are recorded the same way."""
    new = json.loads(small_report.read_text())  # the scanner writes the current contract
    old = json.loads(small_report.read_text())
    assert sorted(e["status"] for e in new["endpoints"]) == ["complete", "unreachable"]
    vocabulary = {"complete": "scanned", "incomplete": "partial", "unreachable": "failed"}
    for e in old["endpoints"]:
        e["status"] = vocabulary[e["status"]]
        e.pop("status_reasons", None)
        if e["status"] == "failed":
            e["score"] = None  # old reports had no score object for an endpoint not scanned
    new["started"] = "2026-11-02T02:00:00Z"
    old["started"] = "2026-11-01T02:00:00Z"
    db = tmp_path / "h.db"
    with open_store(db, write=True) as store:
        store.record(old)
        store.record(new)
    with open_store(db, write=False) as store:
        trend = queries.trend(queries.load(store))
        lcs = queries.findings(queries.load(store), include_fixed=True)
    a, b = trend["nights"]
    for key in ("status", "grades", "open", "endpoints"):
        assert a[key] == b[key], key
    assert a["status"] == {"complete": 1, "incomplete": 0, "unreachable": 1}
    assert lcs["fixed"] == 0 and all(f["nights_open"] == 2 for f in lcs["findings"])


def test_report_missing_what_history_needs(tmp_path, small_report):
    report = json.loads(small_report.read_text())
    del report["endpoints"][0]["endpoint"]
    db = tmp_path / "h.db"
    with open_store(db, write=True) as store:
        with pytest.raises(HistoryError, match="report endpoint #1 lacks"):
            store.record(report)
        report["started"] = "yesterday"
        with pytest.raises(HistoryError, match="no valid 'started' time"):
            store.record(report)
        assert store.conn.execute("SELECT count(*) FROM scan").fetchone()[0] == 0
        assert store.conn.execute("SELECT count(*) FROM blob").fetchone()[0] == 0


def test_tampered_parts_are_refused(tmp_path, small_report, good_db, capsys):
    """A part whose content no longer matches its hash (disk damage, manual edits) is an error
    with exit 2, never wrong data or a traceback."""
    import zlib

    later = json.loads(small_report.read_text())
    later["started"] = "2099-01-02T02:00:00Z"
    later_path = tmp_path / "later.json"
    later_path.write_text(json.dumps(later))
    conn = sqlite3.connect(good_db)
    entry, judged = conn.execute("SELECT entry, judged FROM observation ORDER BY position LIMIT 1").fetchone()
    conn.execute("UPDATE blob SET data = ?, base = NULL WHERE hash = ?", (zlib.compress(b'{"forged": true}'), entry))
    conn.commit()
    with pytest.raises(SystemExit) as exc:
        main(["diff", "--history", str(good_db), str(later_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "damaged" in err and "does not match its hash" in err, err
    conn.execute("UPDATE blob SET data = ? WHERE hash = ?", (b"not zlib at all", judged))
    conn.commit()
    conn.close()
    with pytest.raises(SystemExit) as exc:
        main(["history", str(good_db), "trend"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(good_db) in err and "Traceback" not in err, err
