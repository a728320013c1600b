"""Silence and spent time budgets are no evidence: the intrusive probes' verdicts need answers.

Each test runs one probe against an in-process fake and then judges its rule the way a scan
does (``engine.judge.judge_entry``). Before these fixes the probe finished "ok" with a verdict
drawn from waiting (``False``, or ``null``, which a rule reads as false): the rule passed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from smtpaudit import api
from smtpaudit.engine.judge import judge_entry
from smtpaudit.probes.base import ProbeResult, Timeouts
from smtpaudit.probes.smtp import connlimit
from smtpaudit.probes.smtp.auththrottle import AuthThrottleProbe
from smtpaudit.probes.smtp.connlimit import ConnLimitProbe
from tests.behaviour.helpers import run_probe
from tests.fakes.smtp import Delay, FakeSmtpServer, Send, Silence, simple_responder


def judged(result: ProbeResult, rule_id: str) -> str:
    """The outcome of one rule over this probe's facts and status, as a scan would judge it."""
    ruleset = api.load_ruleset()
    entry: dict[str, Any] = {
        "facts": dict(result.facts),
        "probes": [{"probe": result.probe, "status": str(result.status), "error_reason": result.error_reason,
                    "error_message": result.error_message}],
    }
    judge_entry(entry, {rule_id: ruleset.rules[rule_id]}, ruleset.fact_probe)
    if entry["findings"]:
        return "finding"
    if entry["passed"]:
        return "passed"
    return "not_evaluated" if entry["not_evaluated"] else "not_applicable"


def run(probe_cls: type, server: FakeSmtpServer, **kwargs: Any) -> ProbeResult:
    async def go() -> ProbeResult:
        async with server as srv:
            return await run_probe(probe_cls, srv.port, intrusive=True, **kwargs)

    return asyncio.run(go())


def test_unanswered_first_auth_is_not_throttling():
    """AUTH never answered at all: nothing failed, nothing slowed down; not 'throttled'."""
    server = FakeSmtpServer(
        script=[Send(b"220 auth.example.test ESMTP\r\n")],
        responder=simple_responder(ehlo=["auth.example.test", "AUTH PLAIN LOGIN"], replies={"AUTH": Silence()}),  # type: ignore[dict-item]
    )
    # A command timeout above 2 x SLOW (3 s): a wait that long used to count as a slowdown.
    result = run(AuthThrottleProbe, server, timeouts=Timeouts(connect=2, greeting=2, command=3.5, tls=2))
    assert "smtp.auth_throttle.unthrottled" not in result.facts, result.facts
    assert result.status == "error" and result.error_reason == "read_timeout", result
    assert judged(result, "auth-failures-not-throttled") == "not_evaluated"


def test_slow_greeter_shows_no_connection_limit(monkeypatch):
    """Every greeting comes after the probe's greeting wait: no connection was ever served, so
    nothing shows a limit (before: 'refused at connection 1', both limit rules passed)."""
    monkeypatch.setattr(connlimit, "PAUSE", 0.1)
    server = FakeSmtpServer(script=[Delay(1.5), Send(b"220 slow.example.test ESMTP\r\n"), Silence()])
    result = run(ConnLimitProbe, server, timeouts=Timeouts(connect=2, greeting=1, command=2, tls=2),
                 options={"burst_seconds": 3.0, "burst_connections": 4, "rate_connections": 4})
    f = result.facts
    assert "smtp.connlimit.concurrent_unlimited" not in f and "smtp.connlimit.rate_unlimited" not in f, f
    assert judged(result, "no-concurrent-connection-limit") == "not_evaluated"
    assert judged(result, "no-connection-rate-limit") == "not_evaluated"


def test_time_budget_spent_before_the_cap_is_no_pass(monkeypatch):
    """Greeted every time, but slowly: the burst's time budget ends before the cap is reached.
    Neither a limit nor its absence was shown (before: null, which passed both rules)."""
    monkeypatch.setattr(connlimit, "PAUSE", 0.1)
    server = FakeSmtpServer(script=[Delay(0.4), Send(b"220 slow.example.test ESMTP\r\n"), Silence()])
    result = run(ConnLimitProbe, server, timeouts=Timeouts(connect=2, greeting=2, command=2, tls=2),
                 options={"burst_seconds": 1.0, "burst_connections": 20, "rate_connections": 20})
    f = result.facts
    assert 0 < f["smtp.connlimit.concurrent_held"] < 20 and f["smtp.connlimit.concurrent_refused_at"] is None
    assert "smtp.connlimit.concurrent_unlimited" not in f and "smtp.connlimit.rate_unlimited" not in f, f
    assert judged(result, "no-concurrent-connection-limit") == "not_evaluated"
    assert judged(result, "no-connection-rate-limit") == "not_evaluated"
