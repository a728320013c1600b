"""`smtpaudit report` re-renders a saved scan; `smtpaudit evaluate` re-judges its facts with other rules or
policy. Neither touches the network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.fakes.smtp import ThreadedFake
from tests.report.conftest import assert_valid_sarif, run_cli, scan_to, weak_fake
from tests.report_schema import assert_valid_report


@pytest.fixture
def saved(tmp_path) -> Path:
    with ThreadedFake(weak_fake()) as srv:
        scan_to(tmp_path / "scan.json", srv.target)
    return tmp_path / "scan.json"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("report/evaluate must not open connections")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_report_renders_every_format(saved, tmp_path, no_network):
    original = json.loads(saved.read_text())
    for fmt in ("json", "sarif", "html", "text"):
        out = tmp_path / f"out.{fmt}"
        assert run_cli("report", saved, "--format", fmt, "-o", out, "-q") == 0
        content = out.read_text()
        if fmt == "json":
            assert json.loads(content) == original  # lossless
        elif fmt == "sarif":
            assert_valid_sarif(json.loads(content))
        elif fmt == "html":
            assert content.startswith("<!DOCTYPE html>") and "auth-before-starttls" in content
        else:
            assert "grade" in content
    assert run_cli("report", saved, "--fail-on", "high", "-q") == 1


def test_evaluate_with_other_rules_and_policy(saved, tmp_path, no_network):
    rules = tmp_path / "myrules" / "local"
    rules.mkdir(parents=True)
    (rules / "banner-names-exim.toml").write_text('''
id = "banner-names-exim"
title = "The banner names Exim"
severity = "low"
score = 2.0
confidence = "certain"
tags = ["banner"]
description = "Site policy: banners must not name the MTA."
message = "banner: {smtp.greeting.text}"
[when]
fact = "smtp.greeting.text"
matches = "(?i)exim"
[remediation]
summary = "Set a neutral banner."
[[references]]
title = "Local policy"
[[examples]]
expect = "finding"
facts = { "smtp.greeting.text" = "x ESMTP Exim 4.96" }
[[examples]]
expect = "pass"
facts = { "smtp.greeting.text" = "x ESMTP" }
''')
    out = tmp_path / "rejudged.json"
    code = run_cli("evaluate", saved, "--no-builtin-rules", "--rules", tmp_path / "myrules", "-o", out, "-q", "--fail-on", "low")
    report = json.loads(out.read_text())
    assert_valid_report(report)
    assert code == 1
    assert [f["rule_id"] for f in report["endpoints"][0]["findings"]] == ["banner-names-exim"]
    assert report["ruleset"]["count"] == 1
    original = json.loads(saved.read_text())
    assert report["endpoints"][0]["facts"] == original["endpoints"][0]["facts"]
    assert report["invocation"]["options"]["evaluated_from"]["started"] == original["started"]
    # another policy over the built-in rules
    out2 = tmp_path / "policy.json"
    run_cli("evaluate", saved, "--policy", "mozilla-modern", "-o", out2, "-q")
    again = json.loads(out2.read_text())
    assert_valid_report(again)
    assert again["ruleset"]["policy"]["id"] == "mozilla-modern"
    assert {f["rule_id"] for f in again["endpoints"][0]["findings"]} >= {"auth-before-starttls"}


def test_bad_report_file_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"tool": {"name": "other"}}')
    with pytest.raises(SystemExit) as exc:
        run_cli("report", bad)
    assert exc.value.code == 2 and "not an smtpaudit report" in capsys.readouterr().err
