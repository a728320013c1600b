"""The CLI end to end against fake servers: report contents, schema validity, exit codes 0/1/2/3, deadlines."""

import json
import socket
import subprocess
import sys
import time

import pytest

from smtpaudit.cli import main
from tests.fakes.smtp import FakeSmtpServer, Send, Silence, ThreadedFake, simple_responder
from tests.report_schema import assert_valid_report


def weak_server():
    return FakeSmtpServer(
        script=[Send(b"220 w.example.test ESMTP Exim 4.96 ready\r\n")],
        responder=simple_responder(
            ehlo=["w.example.test", "AUTH PLAIN LOGIN", "SIZE 1000"],
            replies={"AUTH": b"535 5.7.8 bad\r\n", "VRFY": b"252 2.0.0 cannot verify\r\n", "EXPN": b"502 5.5.1 no\r\n", "HELP": b"502 no\r\n"},
        ),
    )


def scan(args, tmp_path, capsys=None):
    out = tmp_path / "r.json"
    code = main(["scan", *args, "-o", str(out), "-q"])
    report = json.loads(out.read_text()) if out.exists() else None
    return code, report


def test_scan_weak_server_report_and_exit_codes(tmp_path):
    with ThreadedFake(weak_server()) as srv:
        code, report = scan([srv.target, "--fail-on", "high"], tmp_path)
        assert_valid_report(report)
        entry = report["endpoints"][0]
        ids = {f["rule_id"] for f in entry["findings"]}
        assert {"starttls-not-offered", "auth-before-starttls", "plaintext-auth-accepted", "software-version-disclosed"} <= ids
        assert "vrfy-discloses-users" in entry["passed"]  # 252 discloses nothing
        assert code == 1
        finding = next(f for f in entry["findings"] if f["rule_id"] == "auth-before-starttls")
        assert finding["evidence"]["facts"] == {"smtp.auth.mechanisms_before_tls": ["PLAIN", "LOGIN"]}
        assert entry["score"]["grade"] == "F" and any(c["rule_id"] == "plaintext-auth-accepted" for c in entry["score"]["caps"])
        assert entry["transcripts"]["smtp.session"][0]["text"].startswith("connect")
        # Only version disclosure selected: below --fail-on high, exit 0.
        code, report = scan([srv.target, "--rule", "software-version-disclosed"], tmp_path)
        assert code == 0 and report["ruleset"]["count"] == 1
        assert [p for p in report["probes"]] == ["smtp.session"]  # the VRFY probe was not needed, so not run
        code, _ = scan([srv.target, "--rule", "software-version-disclosed", "--fail-on", "low"], tmp_path)
        assert code == 1


def test_unreachable_target_exit_3_with_reason(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    code, report = scan([f"127.0.0.1:{port}"], tmp_path)
    assert code == 3
    assert_valid_report(report)
    entry = report["endpoints"][0]
    assert entry["status"] == "unreachable" and "refused" in entry["error"] and entry["score"]["grade"] is None
    assert report["summary"]["failed"] == 1


def test_one_dead_target_does_not_stop_the_others(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    with ThreadedFake(weak_server()) as srv:
        code, report = scan([f"127.0.0.1:{dead}", srv.target], tmp_path)
    assert code == 3
    assert [e["status"] for e in report["endpoints"]] == ["unreachable", "complete"]
    assert report["endpoints"][1]["findings"]


def test_silent_server_finishes_within_the_deadline(tmp_path):
    with ThreadedFake(FakeSmtpServer(script=[Silence()])) as srv:
        t0 = time.monotonic()
        code, report = scan([srv.target, "--greeting-timeout", "1", "--timeout", "3"], tmp_path)
        elapsed = time.monotonic() - t0
    assert elapsed < 5
    assert code == 3 and "sent nothing" in report["endpoints"][0]["error"]


def test_endpoint_deadline_cuts_slow_probes(tmp_path):
    # Greets, then answers every command after 0.8 s: the 2 s endpoint deadline hits mid-scan.
    def slow(line):
        time.sleep(0.8)
        return simple_responder()(line)

    with ThreadedFake(FakeSmtpServer(script=[Send(b"220 slow.example.test\r\n")], responder=slow)) as srv:
        t0 = time.monotonic()
        code, report = scan([srv.target, "--timeout", "2"], tmp_path)
    assert time.monotonic() - t0 < 6
    assert_valid_report(report)
    reasons = {p["error_reason"] for p in report["endpoints"][0]["probes"]}
    assert "deadline" in reasons


def test_broken_rule_directory_exit_2_names_file_and_key(tmp_path, capsys):
    d = tmp_path / "rules" / "custom"
    d.mkdir(parents=True)
    (d / "bad-rule.toml").write_text('id = "bad-rule"\ntitle = "t"\nseverity = "hgih"\n')
    assert main(["rules", "validate", str(tmp_path / "rules")]) == 2
    err = capsys.readouterr().err
    assert "bad-rule.toml: severity: expected one of critical" in err
    assert main(["scan", "127.0.0.1:1", "--rules", str(tmp_path / "rules")]) == 2
    assert "bad-rule.toml: severity" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["scan"], "no targets"),
    (["scan", "http://x.example"], "unknown scheme"),
    (["scan", "x.example", "--timeout", "0"], "--timeout must be a positive number"),
    (["scan", "x.example", "--rules", "/nonexistent"], "not a directory"),
    (["scan", "x.example", "--policy", "nope"], "no such policy"),
    (["scan", "-f", "/nonexistent/targets.txt"], "cannot read targets file"),
])
def test_usage_errors_exit_2_without_traceback(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(args)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_rules_validate_builtin_and_list(capsys):
    assert main(["rules", "validate", "rules"]) == 0
    assert main(["rules", "list"]) == 0
    assert "auth-before-starttls" in capsys.readouterr().out


def test_demo_command_in_a_subprocess(tmp_path):
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, "-m", "smtpaudit", "demo", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert_valid_report(report)
    ids = {f["rule_id"] for f in report["endpoints"][0]["findings"]}
    assert {"vrfy-discloses-users", "expn-discloses-lists", "auth-before-starttls", "software-version-disclosed", "cve-2019-10149"} <= ids
    assert "grade F" in proc.stdout
