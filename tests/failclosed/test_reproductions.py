"""Issue 9's fail-open reproductions, each as a test (fake servers on loopback)."""

from __future__ import annotations

import json
import time

from smtpaudit.cli import main
from tests.fakes.smtp import FakeSmtpServer, Send, Silence, ThreadedFake, simple_responder
from tests.report_schema import assert_valid_report


def _slow_weak_server(delay: float) -> FakeSmtpServer:
    """Insecure (AUTH before TLS, no STARTTLS, relays) and slow: every reply takes ``delay`` seconds."""
    base = simple_responder(ehlo=["slow.example.test", "AUTH PLAIN LOGIN", "SIZE 1000"],
                            replies={"AUTH": b"535 5.7.8 Authentication failed\r\n"})

    def respond(line: str):
        time.sleep(delay)  # blocks the fake's own loop thread only: every connection of it is slow
        return base(line)

    return FakeSmtpServer(script=[Send(b"220 slow.example.test ESMTP Exim 4.91\r\n")], responder=respond)


def test_a_deadline_never_turns_an_insecure_server_into_a_grade(tmp_path):
    """Was: `--timeout 3` on a server that scores F printed `grade A score 92/100 (incomplete)` and exited 0."""
    with ThreadedFake(_slow_weak_server(0.15)) as srv:
        code = main(["scan", srv.target, "--timeout", "3", "-q", "-o", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert_valid_report(report)
    entry = report["endpoints"][0]
    assert code == 3 and entry["status"] == "incomplete"
    assert entry["score"]["grade"] is None and entry["score"]["score"] is None
    assert report["summary"]["worst_grade"] is None
    assert any(r["reason"] == "deadline" for r in entry["status_reasons"])
    # What was seen is still reported: the plaintext AUTH finding survives the cut.
    assert "auth-before-starttls" in {f["rule_id"] for f in entry["findings"]}


def test_allow_incomplete_is_an_explicit_opt_in(tmp_path):
    with ThreadedFake(_slow_weak_server(0.15)) as srv:
        code = main(["scan", srv.target, "--timeout", "3", "-q", "--allow-incomplete", "-o", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1  # findings decide, but the endpoint is still not graded
    assert report["endpoints"][0]["score"]["grade"] is None and report["gate"]["allow_incomplete"] is True


def test_auth_never_answered_is_not_a_pass(tmp_path):
    """Was: a server that never answers a wrong AUTH (aiosmtpd) made plaintext-auth-accepted pass."""
    base = simple_responder(ehlo=["quiet.example.test", "AUTH PLAIN LOGIN", "SIZE 1000"])

    def respond(line: str):
        if line.upper().startswith("AUTH"):
            return Silence()
        return base(line)

    server = FakeSmtpServer(script=[Send(b"220 quiet.example.test ESMTP\r\n")], responder=respond)
    with ThreadedFake(server) as srv:
        main(["scan", srv.target, "--command-timeout", "1", "--timeout", "60", "-q", "-o", str(tmp_path / "r.json"),
              "--rule", "plaintext-auth-accepted", "--rule", "auth-before-starttls"])
    entry = json.loads((tmp_path / "r.json").read_text())["endpoints"][0]
    assert "plaintext-auth-accepted" not in entry["passed"]
    assert entry["facts"]["smtp.auth.plaintext_probe_inconclusive"] == "no_reply"
    assert any(ne["rule_id"] == "plaintext-auth-accepted" for ne in entry["not_evaluated"])


def test_sarif_says_an_incomplete_scan_did_not_succeed(tmp_path):
    from tests.report.conftest import assert_valid_sarif

    with ThreadedFake(_slow_weak_server(0.15)) as srv:
        code = main(["scan", srv.target, "--timeout", "3", "-q", "--format", "sarif", "-o", str(tmp_path / "r.sarif")])
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    assert_valid_sarif(sarif)
    inv = sarif["runs"][0]["invocations"][0]
    assert code == 3 and inv["executionSuccessful"] is False
    notes = [n for n in inv["toolExecutionNotifications"] if n.get("descriptor", {}).get("id") == "endpoint-incomplete"]
    assert len(notes) == 1 and "not graded" in notes[0]["message"]["text"]
