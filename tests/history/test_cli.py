"""`scan --history` end to end with the real clock, and CLI usage errors of the history commands."""

from __future__ import annotations

import json

import pytest

from smtpaudit.cli import main
from smtpaudit.history import open_store
from tests.fakes.mta import FakeMta, ThreadedMta
from tests.report_schema import assert_valid_report

SCAN = ("-q", "--fail-on", "critical", "--skip-tag", "dns", "--greeting-timeout", "3", "--command-timeout", "3", "--timeout", "30")


def test_scan_records_and_renders_history(tmp_path, capsys):
    db, page, report_path = tmp_path / "nightly.db", tmp_path / "report.html", tmp_path / "report.json"
    with ThreadedMta(FakeMta(vrfy="truthful")) as mta:
        target = f"127.0.0.1:{mta.port}"
        code = main(["scan", target, "--history", str(db), "--format", "html", "-o", str(page), *SCAN])
        assert code == 0  # no critical finding
        assert main(["scan", target, "--history", str(db), "-o", str(report_path), *SCAN]) == 0
    assert_valid_report(json.loads(report_path.read_text()))
    html = page.read_text()
    assert '<section id="history">' in html and "1 night(s) recorded" in html and "No earlier night recorded" in html
    with open_store(db, write=False) as store:
        assert store.conn.execute("SELECT count(*) FROM scan").fetchone()[0] == 2
        [(night,)] = store.conn.execute("SELECT DISTINCT night FROM scan").fetchall()
        assert store.scan_report(2) == json.loads(report_path.read_text())
    capsys.readouterr()
    assert main(["history", str(db), "findings", "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)["findings"]
    vrfy = [f for f in found if f["rule_id"] == "vrfy-discloses-users"]
    assert len(vrfy) == 1 and vrfy[0]["endpoint"] == target and vrfy[0]["nights_open"] == 1 and vrfy[0]["first_seen"].startswith(night)
    # without --format html the report has no history section, and JSON reports are unchanged by --history
    assert "history" not in json.loads(report_path.read_text())


@pytest.mark.parametrize("argv, needle", [
    (["history", "{db}"], "expected a subcommand"),
    (["history", "{db}", "prune", "--keep-days", "-1"], "--keep-days -1"),
    (["history", "{db}", "trend", "--nights", "0"], "--nights 0"),
    (["diff", "--history", "{db}", "a.json", "b.json"], "takes one report"),
    (["diff", "only.json"], "give OLD.json NEW.json"),
])
def test_usage_errors(tmp_path, capsys, argv, needle):
    db = tmp_path / "h.db"
    with open_store(db, write=True):
        pass
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{db}", str(db)) for a in argv])
    assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_empty_history(tmp_path, capsys):
    db = tmp_path / "h.db"
    with open_store(db, write=True):
        pass
    assert main(["history", str(db), "trend"]) == 0
    assert "no scans recorded" in capsys.readouterr().out
    assert main(["history", str(db), "mttr", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["now"] is None
    assert main(["history", str(db), "prune", "--keep-days", "3"]) == 0
