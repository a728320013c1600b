"""Fail closed: a server that cuts the dialogue at any step never turns into a pass or a grade.

A fake server plays a weak but complete SMTP server (STARTTLS, AUTH before TLS, VRFY, relaying)
and, at one chosen step, hangs up, stalls or answers 421. Whatever the step, the scan must keep
three promises (DESIGN.md, "Fail closed"):

- a rule passes only when every fact it read comes from a probe that finished;
- an endpoint whose planned probes did not all finish has no score and no grade;
- such a scan exits 3 (the deployment gate cannot pass on what it did not see).

Every default and intrusive probe is covered: each cut runs a default scan, and the cuts that
concern the intrusive probes (connection burst, AUTH throttling, smuggling) run with them on.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Callable

import pytest

from smtpaudit import api
from smtpaudit.engine.conditions import evaluate
from smtpaudit.probes.base import Timeouts
from tests.fakes.certs import server_context
from tests.fakes.smtp import FakeSmtpServer, Send, Silence, Close, Delay
from tests.report_schema import assert_valid_report

EHLO = ["cut.example.test", "PIPELINING", "STARTTLS", "AUTH PLAIN LOGIN", "SIZE 1000000", "VRFY"]


@dataclass(frozen=True)
class Cut:
    """At the ``nth`` client line for which ``when(line)`` holds (counted over all connections), do ``action``."""

    name: str
    when: Callable[[str], bool]
    nth: int = 1
    action: str = "close"  # close | stall | 421


def _verb(v: str) -> Callable[[str], bool]:
    return lambda line: line.upper().startswith(v)


CUTS = [
    Cut("ehlo-close", _verb("EHLO"), 1, "close"),
    Cut("ehlo-stall", _verb("EHLO"), 1, "stall"),
    Cut("ehlo-421", _verb("EHLO"), 1, "421"),
    Cut("starttls-close", _verb("STARTTLS"), 1, "close"),
    Cut("starttls-stall", _verb("STARTTLS"), 1, "stall"),
    Cut("after-tls-ehlo", _verb("EHLO"), 2, "close"),  # the second EHLO is the one inside TLS
    Cut("mid-auth-stall", _verb("AUTH"), 1, "stall"),
    Cut("mid-auth-close", _verb("AUTH"), 1, "close"),
    Cut("mid-mail", _verb("MAIL"), 1, "close"),
    Cut("mid-rcpt", _verb("RCPT"), 1, "stall"),
    Cut("mid-vrfy", _verb("VRFY"), 1, "close"),
    Cut("after-3-relay-variants", _verb("RCPT"), 4, "close"),
    Cut("after-10-relay-variants", _verb("RCPT"), 11, "421"),
    Cut("help-stall", _verb("HELP"), 1, "stall"),
    Cut("noop-close", _verb("NOOP"), 1, "close"),
]


def cutting_server(cut: Cut, *, greeting: list | None = None) -> FakeSmtpServer:
    counter = itertools.count(1)
    fired = False

    def respond(line: str):
        nonlocal fired
        upper = line.upper()
        if cut.when(line) and next(counter) == cut.nth:
            fired = True
            return {"close": None, "stall": Silence(), "421": b"421 4.7.0 cut.example.test closing connection\r\n"}[cut.action]
        verb = upper.split(" ", 1)[0]
        if verb in ("EHLO",):
            return b"".join((b"250 " if i == len(EHLO) - 1 else b"250-") + t.encode() + b"\r\n" for i, t in enumerate(EHLO))
        if verb == "HELO":
            return b"250 cut.example.test\r\n"
        if verb == "AUTH":
            return b"535 5.7.8 Authentication failed\r\n"
        if verb == "VRFY":
            return b"250 Postmaster <postmaster@cut.example.test>\r\n" if "postmaster" in upper.lower() else b"550 5.1.1 User unknown\r\n"
        if verb == "QUIT":
            return None
        if verb == "DATA":
            return b"354 go ahead\r\n"
        if verb == "HELP":
            return b"214 see RFC 5321\r\n"
        if verb.startswith("XSMTPAUDIT") or verb not in ("MAIL", "RCPT", "RSET", "NOOP", "STARTTLS", "EXPN", "."):
            return b"500 5.5.1 unrecognised command\r\n"
        if verb == "EXPN":
            return b"502 5.5.1 not available\r\n"
        return b"250 OK\r\n"

    tls = None if cut.name.startswith("starttls") else server_context()
    script = greeting if greeting is not None else [Send(b"220 cut.example.test ESMTP\r\n")]
    return FakeSmtpServer(script=script, responder=respond, tls_context=tls)


def _options(intrusive: bool) -> api.ScanOptions:
    return api.ScanOptions(
        timeouts=Timeouts(connect=2, greeting=1.5, command=1.5, tls=2, endpoint=25),
        intrusive=intrusive,
        probe_options={"burst_seconds": 1.0, "burst_connections": 4, "idle_watch": 0.0,
                       "auth_user": "user", "auth_password": "secret-password", "auth_attempts": 3, "rate_connections": 4, "smuggling_timeout": 2.0},
        secrets=("secret-password",),
    )


def scan(server: FakeSmtpServer, *, intrusive: bool = False) -> dict:
    ruleset = api.load_ruleset()

    async def go() -> dict:
        async with server:
            return await api.scan_async([server.target], ruleset, _options(intrusive))

    return asyncio.run(go())


def assert_fail_closed(report: dict) -> None:
    """The three promises, checked rule by rule against the facts each pass actually read."""
    assert_valid_report(report)
    ruleset = api.load_ruleset()
    fact_probe = ruleset.fact_probe
    for entry in report["endpoints"]:
        unfinished = {p["probe"] for p in entry["probes"] if p["status"] == "error"
                      or (p["status"] == "skipped" and p["error_reason"] not in ("no_tls", "not_applicable"))}
        for rid in entry["passed"]:
            rule = ruleset.rules[rid]
            used = evaluate(rule.when, entry["facts"], rule.params).used
            cut = {fact_probe.get(f) for f in used} & unfinished
            assert not cut, f"{rid} passed on facts of unfinished probe(s) {cut}"
        complete = entry["status"] == "complete"
        assert complete == (not unfinished), (entry["status"], unfinished)
        if not complete:
            assert entry["score"]["grade"] is None and entry["score"]["score"] is None
            assert report["gate"]["exit_code"] == 3 and not report["gate"]["passed"]
        else:
            assert entry["score"]["grade"] is not None


@pytest.mark.parametrize("cut", CUTS, ids=lambda c: c.name)
def test_default_scan_cut_at_each_step_fails_closed(cut):
    report = scan(cutting_server(cut))
    assert_fail_closed(report)


@pytest.mark.parametrize("cut", [c for c in CUTS if c.name in ("mid-auth-stall", "mid-mail", "after-3-relay-variants", "starttls-stall", "noop-close")],
                         ids=lambda c: c.name)
def test_intrusive_scan_cut_at_each_step_fails_closed(cut):
    report = scan(cutting_server(cut), intrusive=True)
    planned = {p["probe"] for p in report["endpoints"][0]["probes"]}
    assert {"smtp.connlimit", "smtp.smuggling", "smtp.auth_throttle"} <= planned or "smtp.smuggling" in planned
    assert_fail_closed(report)


@pytest.mark.parametrize("script,why", [
    ([Close()], "hangs up before the greeting"),
    ([Silence()], "never greets"),
    ([Send(b"220-cut.example.test ESMTP\r\n"), Delay(0.6), Send(b"220-still\r\n"), Delay(0.6), Send(b"220-")] + [Delay(0.6), Send(b"x")] * 60,
     "drips a greeting that never ends"),
    ([Send(b"421 4.7.0 cut.example.test too busy, try later\r\n")], "refuses with 421 at the greeting"),
    ([Send(b"554 5.7.1 no SMTP service here\r\n")], "refuses with 554 at the greeting"),
])
def test_no_usable_greeting_is_unreachable_not_graded(script, why):
    report = scan(cutting_server(Cut("never", lambda line: False), greeting=script))
    entry = report["endpoints"][0]
    assert entry["status"] == "unreachable", why
    # Only DNS observations (PTR, TLSA...), made without the server, may still judge a rule.
    fact_probe = api.load_ruleset().fact_probe
    rules = api.load_ruleset().rules
    wire = [rid for rid in entry["passed"] if any(not fact_probe[f].startswith("dns.") for f in rules[rid].facts if f in fact_probe)]
    assert wire == [], f"{why}: rules passed on what an endpoint that was never talked to said"
    assert entry["score"]["grade"] is None and report["gate"]["exit_code"] == 3
    # A 421 banner is not the server's name.
    assert entry["facts"].get("smtp.greeting.hostname") is None
    assert_fail_closed(report)


def test_uncut_server_is_complete_and_graded():
    """The control: the same server without a cut is scanned completely and graded."""
    report = scan(cutting_server(Cut("never", lambda line: False)))
    entry = report["endpoints"][0]
    assert entry["status"] == "complete", entry["status_reasons"]
    assert entry["score"]["grade"] is not None and report["gate"]["exit_code"] == 1
    assert_fail_closed(report)
