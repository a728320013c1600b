"""A 421 ("closing the channel", RFC 5321 3.8) answers nothing that was asked: no pass, no finding.

Whole default scans against a fake server that is an ordinary, complete SMTP server except that it
says 421 at one chosen step. Before these fixes each step's probe finished "ok" with a verdict
fact drawn from the 421 (``False`` or ``null``), so a rule passed or fired on it; now the probe
ends ``service_unavailable``, its verdict fact is absent and the rule is not evaluated.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Callable

from smtpaudit.probes.base import ProbeContext, Timeouts
from smtpaudit.probes.smtp.session import SessionProbe
from smtpaudit.targets import parse_target
from tests.failclosed.test_cut_dialogue import Cut, _verb, assert_fail_closed, cutting_server, scan
from tests.fakes.certs import server_context
from tests.fakes.smtp import FakeSmtpServer, Send

BYE = b"421 4.3.2 gone.example.test closing connection\r\n"


def judged(entry: dict, rule_id: str) -> str:
    """What became of one rule: finding, passed, not_evaluated or not_applicable."""
    if rule_id in {f["rule_id"] for f in entry["findings"]}:
        return "finding"
    if rule_id in entry["passed"]:
        return "passed"
    if rule_id in {x["rule_id"] for x in entry["not_evaluated"]}:
        return "not_evaluated"
    return "not_applicable"


def probe(entry: dict, name: str) -> dict:
    return next(p for p in entry["probes"] if p["probe"] == name)


def server_saying_421(when: Callable[[str], bool], *, tls: bool = False) -> FakeSmtpServer:
    """The cut-dialogue server, answering 421 to *every* line for which ``when`` holds."""
    base = cutting_server(Cut("never", lambda line: False))
    ordinary = base.responder
    assert ordinary is not None

    def respond(line: str):
        return BYE if when(line) else ordinary(line)

    return FakeSmtpServer(script=[Send(b"220 cut.example.test ESMTP\r\n")], responder=respond,
                          tls_context=server_context() if tls else None)


def test_starttls_answered_421_is_not_starttls_broken():
    report = scan(server_saying_421(_verb("STARTTLS")))
    entry = report["endpoints"][0]
    f = entry["facts"]
    assert f["smtp.starttls.offered"] is True
    assert "smtp.starttls.works" not in f, f.get("smtp.starttls.error")
    assert judged(entry, "starttls-broken") == "not_evaluated"
    assert probe(entry, "smtp.session")["error_reason"] == "service_unavailable"
    assert_fail_closed(report)


def test_ehlo_after_tls_answered_421_leaves_works_unknown():
    # The session probe alone (a whole scan's other probes send EHLOs of their own): its second
    # EHLO is the one inside TLS (the fake does STARTTLS itself).
    ehlos = itertools.count(1)
    ordinary = cutting_server(Cut("never", lambda line: False)).responder
    assert ordinary is not None

    def respond(line: str):
        if _verb("EHLO")(line) and next(ehlos) == 2:
            return BYE
        return ordinary(line)

    server = FakeSmtpServer(script=[Send(b"220 cut.example.test ESMTP\r\n")], responder=respond, tls_context=server_context())
    ctx = ProbeContext(timeouts=Timeouts(connect=2, greeting=2, command=2, tls=3, endpoint=10))

    async def go():
        async with server as srv:
            return await SessionProbe().run(parse_target(srv.target), ctx, {})

    result = asyncio.run(go())
    assert result.facts["smtp.starttls.offered"] is True and result.facts["smtp.tls.version"]
    assert "smtp.starttls.works" not in result.facts, result.facts.get("smtp.starttls.error")
    assert result.status == "error" and result.error_reason == "service_unavailable", result


def test_starttls_injection_check_answered_421_is_not_a_pass():
    # Every STARTTLS gets 421, the injection probe's pipelined one too: nothing was tested.
    report = scan(server_saying_421(_verb("STARTTLS")))
    entry = report["endpoints"][0]
    assert "tls.starttls_injection.vulnerable" not in entry["facts"]
    assert judged(entry, "tls-starttls-injection") == "not_evaluated"
    assert probe(entry, "tls.starttls_injection")["error_reason"] == "service_unavailable"
    assert_fail_closed(report)


def test_control_without_421_keeps_its_verdicts():
    """The same server without a 421: STARTTLS works, the injection check is judged on an answer."""
    report = scan(cutting_server(Cut("never", lambda line: False)))
    entry = report["endpoints"][0]
    assert entry["facts"]["smtp.starttls.works"] is True
    assert judged(entry, "starttls-broken") == "passed"
    assert judged(entry, "tls-starttls-injection") == "finding"  # this fake runs what was pipelined after STARTTLS



def scan_as(server: FakeSmtpServer, scheme: str) -> dict:
    """``scan`` with the target given as ``scheme://host:port`` (e.g. a submission endpoint)."""
    from smtpaudit import api
    from tests.failclosed.test_cut_dialogue import _options

    async def go() -> dict:
        async with server:
            return await api.scan_async([f"{scheme}://{server.target}"], api.load_ruleset(), _options(False))

    return asyncio.run(go())


def test_submission_mail_answered_421_passes_no_submission_rule():
    report = scan_as(server_saying_421(_verb("MAIL"), tls=True), "submission")
    entry = report["endpoints"][0]
    f = entry["facts"]
    assert "smtp.submission.mail_before_tls_accepted" not in f and "smtp.submission.unauth_accepted" not in f
    for rule_id in ("submission-starttls-not-enforced", "submission-accepts-mail-without-auth", "submission-refusal-not-530"):
        assert judged(entry, rule_id) == "not_evaluated", rule_id
    assert probe(entry, "smtp.submission")["error_reason"] == "service_unavailable"
    assert_fail_closed(report)


def test_submission_rcpt_answered_421_is_no_refusal():
    # MAIL accepted, the unauthenticated RCPT answered 421: not "refused without AUTH".
    report = scan_as(server_saying_421(_verb("RCPT"), tls=True), "submission")
    entry = report["endpoints"][0]
    assert "smtp.submission.unauth_accepted" not in entry["facts"]
    assert judged(entry, "submission-accepts-mail-without-auth") == "not_evaluated"
    assert_fail_closed(report)


def test_enumeration_mail_answered_421_is_not_a_postmaster_pass():
    report = scan(server_saying_421(_verb("MAIL")))
    entry = report["endpoints"][0]
    assert judged(entry, "mx-rejects-postmaster") == "not_evaluated"
    assert probe(entry, "smtp.enumeration")["error_reason"] == "service_unavailable"
    assert_fail_closed(report)


def test_enumeration_postmaster_answered_421_is_not_a_postmaster_pass():
    report = scan(server_saying_421(lambda line: line.upper() == "RCPT TO:<POSTMASTER>"))
    entry = report["endpoints"][0]
    assert entry["facts"]["smtp.enumeration.mail_code"] == 250
    assert judged(entry, "mx-rejects-postmaster") == "not_evaluated"
    assert probe(entry, "smtp.enumeration")["error_reason"] == "service_unavailable"
    assert_fail_closed(report)


def test_pipelined_ehlo_answered_421_is_no_refusal_of_pipelining():
    # Every EHLO gets 421 (the session probe fails too, but the greeting was a 220, so the other
    # probes run): the pipelining probe's EHLO+NOOP got "closing", not a refusal of the pipelined NOOP.
    report = scan(server_saying_421(_verb("EHLO")))
    entry = report["endpoints"][0]
    assert "smtp.pipelining.unauth_accepted" not in entry["facts"]
    assert judged(entry, "unauth-pipelining-accepted") == "not_evaluated"
    assert probe(entry, "smtp.pipelining")["error_reason"] == "service_unavailable"
    assert_fail_closed(report)
