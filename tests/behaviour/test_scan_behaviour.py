"""End to end through the CLI: behaviour findings on weak fakes, none on a strict one, secrets never in the report."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from smtpaudit.cli import main
from tests.fakes.certs import server_context
from tests.fakes.mta import FakeMta, ThreadedMta

PASSWORD = "Tr0ub4dor&3-not-in-reports"


def _scan(tmp_path: Path, target: str, *extra: str) -> dict:
    out = tmp_path / "report.json"
    code = main(["scan", target, "-o", str(out), "--format", "json", "-q", "--fail-on", "critical",
                 "--command-timeout", "5", "--greeting-timeout", "5", *extra])
    assert code in (0, 1), code
    return json.loads(out.read_text())


def _ids(entry: dict) -> set[str]:
    return {f["rule_id"] for f in entry["findings"]}


def test_open_relay_fake_is_flagged_and_never_gets_data(tmp_path: Path) -> None:
    with ThreadedMta(FakeMta(open_relay=True)) as mta:
        report = _scan(tmp_path, f"127.0.0.1:{mta.port}")
    entry = report["endpoints"][0]
    ids = _ids(entry)
    assert "open-relay" in ids and "no-error-limit" in ids and "rcpt-enumeration-unthrottled" in ids
    assert "DATA" not in mta.all_commands and mta.data_started == 0
    relay = next(f for f in entry["findings"] if f["rule_id"] == "open-relay")
    assert relay["message"].startswith("16/16 nmap relay variants accepted")
    # Default scan: intrusive rules are listed as skipped, nothing else is left unevaluated.
    assert not [n for n in entry["not_evaluated"] if n["rule_id"].startswith(("open-relay", "rcpt-", "no-", "submission-"))]
    skipped = {s["rule_id"] for s in report["ruleset"]["skipped_rules"]}
    assert {"smtp-smuggling-exploitable", "no-concurrent-connection-limit", "auth-failures-not-throttled"} <= skipped


def test_strict_fake_has_no_relay_or_enumeration_finding(tmp_path: Path) -> None:
    with ThreadedMta(FakeMta(error_limit=20, enforce_sync=True, recipient_limit=150)) as mta:
        report = _scan(tmp_path, f"127.0.0.1:{mta.port}")
    ids = _ids(report["endpoints"][0])
    assert not ids & {"open-relay", "open-relay-unconfirmed", "rcpt-enumeration-unthrottled", "no-error-limit",
                      "no-recipient-limit", "unauth-pipelining-accepted"}, ids


def test_submission_without_auth_flagged_and_password_never_in_report(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SMTPAUDIT_AUTH_PASSWORD", PASSWORD)
    fake = FakeMta(tls_context=server_context(tmp_path), open_relay=True, auth_mechanisms=("PLAIN", "LOGIN"),
                   auth_users={"alice": PASSWORD})
    with ThreadedMta(fake) as mta:
        report = _scan(tmp_path, f"127.0.0.1:{mta.port}", "--role", "submission", "--auth-user", "alice")
        report2 = _scan(tmp_path, f"127.0.0.1:{mta.port}", "--role", "submission", "--auth-user", "alice",
                        "--auth-password", PASSWORD, "--intrusive", "--rule", "auth-failures-not-throttled")
    entry = report["endpoints"][0]
    assert {"submission-accepts-mail-without-auth", "submission-starttls-not-enforced"} <= _ids(entry)
    assert entry["facts"]["smtp.submission.auth_ok_mechanisms"] == ["PLAIN", "LOGIN"]
    for rep in (report, report2):
        text = json.dumps(rep)
        assert PASSWORD not in text
        assert base64.b64encode(PASSWORD.encode()).decode() not in text
        assert base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode() not in text
    assert "[redacted]" in report2["invocation"]["argv"]
    assert "auth-failures-not-throttled" in _ids(report2["endpoints"][0])
