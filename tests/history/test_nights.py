"""Thirty recorded nights (see conftest.py for the schedule): lifecycles, trend numbers and MTTR
asserted exactly, against the schedule and against counts taken from the reports themselves."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from smtpaudit.history import open_store, queries
from tests.history.conftest import NIGHTS, at

SEVS = ("critical", "high", "medium", "low", "info")


def _cli_json(capsys, *args: str) -> dict:
    from smtpaudit.cli import main

    capsys.readouterr()
    assert main([*args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _lc(findings: dict, endpoint: str, rule: str) -> dict:
    [item] = [f for f in findings["findings"] if f["endpoint"] == endpoint and f["rule_id"] == rule]
    return item


def test_every_night_recorded_once(thirty_nights):
    assert thirty_nights.record_codes == [0] * NIGHTS
    with open_store(thirty_nights.db, write=False) as store:
        nights = [r[0] for r in store.conn.execute("SELECT night FROM scan ORDER BY started")]
        assert nights == [at(n)[:10] for n in range(1, NIGHTS + 1)]
        # the stored report reads back exactly as it was written (facts, transcripts, key order)
        for n in (1, 12, 30):
            sid = store.conn.execute("SELECT id FROM scan WHERE started = ?", (at(n),)).fetchone()[0]
            assert json.dumps(store.scan_report(sid)) == json.dumps(thirty_nights.reports[n])
    # recording the same report again is a no-op
    from smtpaudit.cli import main

    assert main(["report", str(thirty_nights.paths[30]), "--history", str(thirty_nights.db), "-q"]) == 0
    with open_store(thirty_nights.db, write=False) as store:
        assert store.conn.execute("SELECT count(*) FROM scan").fetchone()[0] == NIGHTS


def test_first_seen_fixed_reopened(thirty_nights, capsys):
    ids = thirty_nights.ids
    data = _cli_json(capsys, "history", str(thirty_nights.db), "findings", "--all")
    vrfy_a = _lc(data, ids["A"], "vrfy-discloses-users")
    assert [(e["event"], e["at"]) for e in vrfy_a["events"]] == [("opened", at(1)), ("fixed", at(10)), ("reopened", at(20))]
    assert (vrfy_a["state"], vrfy_a["first_seen"], vrfy_a["last_seen"], vrfy_a["open_since"]) == ("open", at(1), at(30), at(20))
    assert vrfy_a["nights_open"] == 9 + 11 and vrfy_a["reopened"] == 1

    relay = _lc(data, ids["B"], "open-relay")
    assert (relay["state"], relay["first_seen"], relay["last_seen"], relay["fixed_at"], relay["nights_open"]) == ("fixed", at(1), at(4), at(5), 4)
    assert relay["severity"] == "critical"

    # B was down on nights 12-13: its findings were not seen, but they are not "fixed" either
    b_open = [f for f in data["findings"] if f["endpoint"] == ids["B"] and f["state"] == "open"]
    assert b_open and all([e["event"] for e in f["events"]] == ["opened"] for f in b_open)
    assert all(f["nights_open"] == NIGHTS - 2 and f["first_seen"] == at(1) and f["last_seen"] == at(30) for f in b_open)

    vrfy_d = _lc(data, ids["D"], "vrfy-discloses-users")
    assert (vrfy_d["first_seen"], vrfy_d["nights_open"], vrfy_d["state"]) == (at(25), 6, "open")
    # C never changed findings: everything open since night 1, seen all 30 nights
    c_items = [f for f in data["findings"] if f["endpoint"] == ids["C"]]
    assert c_items and all(f["state"] == "open" and f["nights_open"] == NIGHTS and f["first_seen"] == at(1) for f in c_items)
    # without --all only the open ones
    open_only = _cli_json(capsys, "history", str(thirty_nights.db), "findings")
    assert {f["fingerprint"] for f in open_only["findings"]} == {f["fingerprint"] for f in data["findings"] if f["state"] == "open"}
    assert relay["fingerprint"] not in {f["fingerprint"] for f in open_only["findings"]}


def test_trend_numbers(thirty_nights, capsys):
    data = _cli_json(capsys, "history", str(thirty_nights.db), "trend")
    nights = data["nights"]
    assert [n["night"] for n in nights] == [at(n)[:10] for n in range(1, NIGHTS + 1)]
    first_night_total = sum(1 for e in thirty_nights.reports[1]["endpoints"] for f in e["findings"])
    for i, row in enumerate(nights, start=1):
        report = thirty_nights.reports[i]
        # the numbers agree with counts taken directly from that night's report...
        counted = Counter(f["severity"] for e in report["endpoints"] for f in e["findings"] if not f.get("suppressed"))
        assert row["open"] == {s: counted.get(s, 0) for s in SEVS}, i
        graded = Counter(e["score"]["grade"] for e in report["endpoints"] if e["status"] in ("scanned", "complete") and e.get("score"))
        assert row["grades"] == dict(graded), i
        # ...and with the schedule
        assert row["endpoints"] == 4 and row["scans"] == 1
        down = i in (12, 13)
        assert row["status"] == {"complete": 3 if down else 4, "incomplete": 0, "unreachable": 1 if down else 0}, i
        assert row["open"]["critical"] == (1 if i <= 4 else 0), i
        assert row["open"]["medium"] == (i <= 9 or i >= 20) + (i >= 25), i
        expected_new = {1: first_night_total, 25: 1}.get(i, 0)
        expected_fixed = {5: 1, 10: 1}.get(i, 0)
        assert (row["new"], row["fixed"], row["reopened"]) == (expected_new, expected_fixed, 1 if i == 20 else 0), i
        # B down: its open findings (as of night 11) are neither seen nor fixed those nights
        b_before = next(e for e in thirty_nights.reports[11]["endpoints"] if e["endpoint"]["id"] == thirty_nights.ids["B"])
        assert row["unverified"] == (len(b_before["findings"]) if down else 0), i
    # per endpoint: B has no grade on the nights it was down
    b = data["endpoints"][thirty_nights.ids["B"]]
    assert [r["grade"] is None for r in b] == [i in (12, 13) for i in range(1, NIGHTS + 1)]
    assert b[0]["grade"] == "F" and b[4]["grade"] != "F"  # the open relay capped it at F until night 5
    # --nights limits the rows, not the lifecycle (new/fixed still counted from the whole history)
    last5 = _cli_json(capsys, "history", str(thirty_nights.db), "trend", "--nights", "6")
    assert [n["night"] for n in last5["nights"]] == [at(n)[:10] for n in range(25, 31)]
    assert last5["nights"][0]["new"] == 1


def test_mttr(thirty_nights, capsys):
    data = _cli_json(capsys, "history", str(thirty_nights.db), "mttr")
    sev = data["severities"]
    assert data["now"] == at(30) and data["window_days"] == 90
    assert sev["critical"] == {"fixed": 1, "mean_days": 4.0, "median_days": 4.0, "max_days": 4.0, "open": 0, "oldest_open_days": None}
    assert sev["medium"] == {"fixed": 1, "mean_days": 9.0, "median_days": 9.0, "max_days": 9.0, "open": 2, "oldest_open_days": 10.0}
    assert sev["high"]["fixed"] == 0 and sev["high"]["oldest_open_days"] == 29.0
    # a 20-day window starts at night 10: the VRFY fix of night 10 is in, the relay fix of night 5 is out
    window = _cli_json(capsys, "history", str(thirty_nights.db), "mttr", "--days", "20")
    assert window["since"] == at(10)
    assert window["severities"]["critical"]["fixed"] == 0 and window["severities"]["medium"]["fixed"] == 1


def test_endpoint_timelines(thirty_nights, capsys):
    ids = thirty_nights.ids
    a = _cli_json(capsys, "history", str(thirty_nights.db), "endpoint", ids["A"])
    software = [e for e in a["events"] if e["event"] == "software"]
    assert software == [{"at": at(22), "event": "software", "from": "postfix 3.8.5", "to": "postfix 3.9.1"}]
    assert [(e["event"], e["at"]) for e in a["events"] if e.get("rule_id") == "vrfy-discloses-users"] == [
        ("finding_opened", at(1)), ("finding_fixed", at(10)), ("finding_reopened", at(20))]
    grades = [o["grade"] for o in a["observations"]]
    expected = [e["score"]["grade"] for n in range(1, NIGHTS + 1) for e in thirty_nights.reports[n]["endpoints"] if e["endpoint"]["id"] == ids["A"]]
    assert grades == expected
    assert [(e["at"], e["from"], e["to"]) for e in a["events"] if e["event"] == "grade"] == [
        (at(n), expected[n - 2], expected[n - 1]) for n in range(2, NIGHTS + 1) if expected[n - 1] != expected[n - 2]]

    b = _cli_json(capsys, "history", str(thirty_nights.db), "endpoint", ids["B"])
    assert [(e["at"], e["from"], e["to"]) for e in b["events"] if e["event"] == "status"] == [
        (at(12), "complete", "unreachable"), (at(14), "unreachable", "complete")]

    c = _cli_json(capsys, "history", str(thirty_nights.db), "endpoint", ids["C"])
    certs = [e for e in c["events"] if e["event"] == "certificate"]
    assert [e["at"] for e in certs] == [at(15)]
    shas = {o["cert_sha256"] for o in c["observations"]}
    assert len(shas) == 2
    # expiry countdown: days between the night and the certificate's not-after
    assert all(o["cert_days_left"] is not None for o in c["observations"])
    assert c["observations"][1]["cert_days_left"] == c["observations"][0]["cert_days_left"] - 1


def test_text_output_and_unknown_endpoint(thirty_nights, capsys):
    from smtpaudit.cli import main

    for sub in (["trend"], ["findings", "--all"], ["mttr"], ["endpoint", thirty_nights.ids["A"]]):
        capsys.readouterr()
        assert main(["history", str(thirty_nights.db), *sub]) == 0
        assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit) as exc:
        main(["history", str(thirty_nights.db), "endpoint", "nosuch.example.org:25"])
    assert exc.value.code == 2
    assert "no endpoint 'nosuch.example.org:25'" in capsys.readouterr().err


def test_diff_against_last_night(thirty_nights, capsys):
    from smtpaudit.cli import main

    db, paths, ids = str(thirty_nights.db), thirty_nights.paths, thirty_nights.ids
    capsys.readouterr()
    assert main(["diff", "--history", db, str(paths[25]), "--format", "json"]) == 0  # a new medium: below --fail-on high
    diff = json.loads(capsys.readouterr().out)
    assert diff["old"]["started"] == at(24) and diff["new"]["started"] == at(25)
    assert [(e["endpoint"], f["rule_id"]) for e in diff["endpoints"] for f in e["new"]] == [(ids["D"], "vrfy-discloses-users")]
    assert diff["totals"]["fixed"] == 0
    assert main(["diff", "--history", db, str(paths[25]), "--fail-on", "medium", "-q"]) == 1
    capsys.readouterr()
    main(["diff", "--history", db, str(paths[5]), "--format", "json"])
    diff = json.loads(capsys.readouterr().out)
    assert [(e["endpoint"], f["rule_id"]) for e in diff["endpoints"] for f in e["fixed"]] == [(ids["B"], "open-relay")]
    # night 1 has nothing before it
    with pytest.raises(SystemExit) as exc:
        main(["diff", "--history", db, str(paths[1])])
    assert exc.value.code == 2 and "nothing to compare with" in capsys.readouterr().err


def test_html_history_section(thirty_nights, tmp_path):
    from smtpaudit.history import commands

    with open_store(thirty_nights.db, write=False) as store:
        view = commands.html_section(store, thirty_nights.reports[25])
    from smtpaudit.report import html

    page = html.render(thirty_nights.reports[25], history=view)
    section = page[page.index('<section id="history">'):]
    section = section[:section.index("</section>")]
    assert "30 night(s) recorded" in section and "(2026-10-24)" in section
    assert section.count("<polyline") >= 4 and "<rect" in section
    assert ">new<" in section and "vrfy-discloses-users" in section and thirty_nights.ids["D"] in section
    # B's sparkline breaks on the nights it had no grade
    b = next(e for e in view["endpoints"] if e["id"] == thirty_nights.ids["B"])
    assert len(b["spark"]["segments"]) == 2 and len(b["spark"]["dots"]) == NIGHTS - 2
    assert "http" not in section.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch


def test_prune_keeps_what_remains_readable(thirty_nights, tmp_path, capsys):
    from smtpaudit.cli import main

    db = thirty_nights.copy_db(tmp_path)
    before = db.stat().st_size
    capsys.readouterr()
    assert main(["history", str(db), "prune", "--keep-days", "10", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scans_deleted"] == 19 and result["cutoff"] == at(20) and result["parts_deleted"] > 0
    assert db.stat().st_size < before
    with open_store(db, write=False) as store:
        assert [r[0] for r in store.conn.execute("SELECT started FROM scan ORDER BY started")] == [at(n) for n in range(20, 31)]
        sid = store.conn.execute("SELECT id FROM scan WHERE started = ?", (at(20),)).fetchone()[0]
        assert json.dumps(store.scan_report(sid)) == json.dumps(thirty_nights.reports[20])
        lcs = queries.findings(queries.load(store), include_fixed=True)
    vrfy_a = _lc(lcs, thirty_nights.ids["A"], "vrfy-discloses-users")
    assert vrfy_a["first_seen"] == at(20) and vrfy_a["nights_open"] == 11
