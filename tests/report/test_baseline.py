"""Baselines suppress exactly the findings they name, until their expiry; `baseline create` round-trips."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from smtpaudit import baseline as bl
from tests.fakes.smtp import ThreadedFake
from tests.report.conftest import run_cli, scan_to, weak_fake
from tests.report_schema import assert_valid_report


@pytest.fixture
def two_endpoint_report(tmp_path):
    with ThreadedFake(weak_fake()) as a, ThreadedFake(weak_fake("b.example.test ESMTP Exim 4.91")) as b:
        code, report = scan_to(tmp_path / "scan.json", a.target, b.target)
    assert code == 1
    return report, a.target, b.target


def _open(report, endpoint):
    e = next(e for e in report["endpoints"] if e["endpoint"]["id"] == endpoint)
    return {f["rule_id"] for f in e["findings"] if not f["suppressed"]}, {f["rule_id"] for f in e["findings"] if f["suppressed"]}


def test_suppresses_exactly_the_named_findings_until_expiry(tmp_path, two_endpoint_report):
    report, a, b = two_endpoint_report
    before_a, _ = _open(report, a)
    assert {"vrfy-discloses-users", "auth-before-starttls"} <= before_a
    path = tmp_path / "b.toml"
    path.write_text(
        'version = 1\n'
        f'[[accept]]\nrule = "vrfy-discloses-users"\nendpoint = "{a}"\njustification = "lists are public"\nexpires = 2030-06-30\n'
        '[[accept]]\nrule = "auth-before-starttls"\nendpoint = "127.0.0.*"\njustification = "legacy clients"\nexpires = 2020-01-01\n'
        '[[accept]]\nrule = "tls-rc4-suites"\nendpoint = "*"\njustification = "never matches"\n'
    )
    baseline = bl.load(path)
    warnings = bl.apply(report, baseline, today=dt.date(2025, 1, 1))
    assert_valid_report(report)
    open_a, sup_a = _open(report, a)
    open_b, sup_b = _open(report, b)
    assert sup_a == {"vrfy-discloses-users"} and sup_b == set()  # only that rule, only that endpoint
    assert open_a == before_a - {"vrfy-discloses-users"}
    assert "auth-before-starttls" in open_a and "vrfy-discloses-users" in open_b  # expired entry does not suppress
    assert len(warnings) == 1 and "entry 2" in warnings[0] and "expired on 2020-01-01" in warnings[0]
    assert [x["entry"] for x in report["baseline"]["expired"]] == [2]
    assert [x["entry"] for x in report["baseline"]["unused"]] == [3]
    assert report["summary"]["suppressed"] == 1
    # the day after the expiry, entry 1 stops suppressing too
    bl.apply(report, baseline, today=dt.date(2030, 7, 1))
    assert _open(report, a)[1] == set() and report["summary"]["suppressed"] == 0


def test_baseline_changes_the_gate_never_the_grade(tmp_path, two_endpoint_report):
    report, a, b = two_endpoint_report
    (tmp_path / "scan.json").write_text(json.dumps(report))
    created = tmp_path / "accepted.toml"
    assert run_cli("baseline", "create", tmp_path / "scan.json", "-o", created, "--justification", "accepted for the test", "--expires", "2099-12-31") == 0
    baseline = bl.load(created)
    assert {(e.rule, e.endpoint) for e in baseline.entries} == {(f["rule_id"], e["endpoint"]["id"]) for e in report["endpoints"] for f in e["findings"]}
    assert all(e.expires == dt.date(2099, 12, 31) for e in baseline.entries)
    out = tmp_path / "with-baseline.json"
    code = run_cli("report", tmp_path / "scan.json", "--baseline", created, "--fail-on", "low", "-o", out, "-q")
    assert code == 0
    again = json.loads(out.read_text())
    assert_valid_report(again)
    assert all(f["suppressed"] for e in again["endpoints"] for f in e["findings"])
    # An open relay with plaintext AUTH stays F with its score: accepting a finding is not fixing it.
    assert [e["score"] for e in again["endpoints"]] == [e["score"] for e in report["endpoints"]]
    assert {e["score"]["grade"] for e in again["endpoints"]} == {"F"}
    accepted = sum(len(e["findings"]) for e in report["endpoints"])
    assert again["gate"]["passed"] is True and again["gate"]["accepted"] == accepted and again["gate"]["exit_code"] == 0
    assert run_cli("report", tmp_path / "scan.json", "--fail-on", "low", "-q") == 1


def test_placeholder_justifications_are_warned_about(tmp_path, two_endpoint_report, capsys):
    report, a, b = two_endpoint_report
    (tmp_path / "scan.json").write_text(json.dumps(report))
    created = tmp_path / "todo.toml"
    assert run_cli("baseline", "create", tmp_path / "scan.json", "-o", created) == 0
    out = tmp_path / "todo.json"
    capsys.readouterr()
    assert run_cli("report", tmp_path / "scan.json", "--baseline", created, "--fail-on", "low", "-o", out, "-q") == 0
    err = capsys.readouterr().err
    assert "placeholder justification" in err
    again = json.loads(out.read_text())
    assert len(again["baseline"]["unjustified"]) == again["gate"]["accepted"] > 0
    assert {e["score"]["grade"] for e in again["endpoints"]} == {"F"}


@pytest.mark.parametrize("content,message", [
    ('version = 1\n[[accept]]\nrule = "x"\nendpoint = "*"\n', "justification: required"),
    ('version = 1\n[[accept]]\nrule = "x"\nendpoint = "*"\njustification = "j"\nexpires = "soon"\n', "is not a date"),
    ('version = 1\n[[accept]]\nrule = "x"\nendpoint = "*"\njustification = "j"\nendpoints = "y"\n', "accept[1].endpoints: unknown key"),
    ('version = 2\n', "version 2 is not supported"),
    ('version = [\n', "not valid TOML"),
])
def test_bad_baselines_are_usage_errors(tmp_path, capsys, two_endpoint_report, content, message):
    report, _, _ = two_endpoint_report
    (tmp_path / "scan.json").write_text(json.dumps(report))
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        run_cli("report", tmp_path / "scan.json", "--baseline", path, "-q")
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_ipv6_and_glob_patterns():
    ep6 = {"id": "[::1]:25", "url": "smtp://[::1]:25", "host": "::1"}
    ep4 = {"id": "mx1.example.org:25", "url": "smtp://mx1.example.org:25", "host": "mx1.example.org"}
    e = lambda pat, rule="r": bl.Entry(rule, pat, "j", None, 1)  # noqa: E731
    assert e("[::1]:25").matches("r", ep6)
    assert e("::1").matches("r", ep6)
    assert e("mx*.example.org:25").matches("r", ep4) and not e("mx*.example.org:587").matches("r", ep4)
    assert e("MX1.EXAMPLE.ORG").matches("r", ep4)
    assert not e("*", rule="other").matches("r", ep4) and e("*", rule="*").matches("r", ep4)
