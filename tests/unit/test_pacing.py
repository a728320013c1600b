"""ErrorPacer: the error budget per connection and what delayed replies teach it (no network)."""

from __future__ import annotations

from smtpaudit.probes.smtp.client import Reply
from smtpaudit.probes.smtp.pacing import DEFAULT_BUDGET, ErrorPacer

OK, ERR = Reply(250, ["ok"]), Reply(554, ["relay denied"])


def test_budget_spent_after_default_errors() -> None:
    p = ErrorPacer()
    p.new_connection()
    p.observe(OK, 0.01)
    for _ in range(DEFAULT_BUDGET - 1):
        p.observe(ERR, 0.01)
    assert not p.exhausted()
    p.observe(ERR, 0.01)
    assert p.exhausted() and p.tarpit_after is None
    p.new_connection()
    assert not p.exhausted()


def test_delayed_error_shrinks_the_budget_to_the_prompt_ones() -> None:
    p = ErrorPacer()
    p.new_connection()
    p.observe(OK, 0.01)
    p.observe(ERR, 0.01)
    p.observe(ERR, 0.01)
    p.observe(ERR, 0.01)
    p.observe(ERR, 1.01)  # fourth error late: the server tarpits once 3 errors were made
    assert p.delayed and p.exhausted() and p.tarpit_after == 3 and p.budget == 2
    p.new_connection()
    p.observe(ERR, 0.01)
    assert not p.exhausted()
    p.observe(ERR, 0.01)
    assert p.exhausted()
    assert p.facts() == {"tarpit_after": 3, "tarpit_per_session": True, "delayed_replies": 1}


def test_any_late_reply_after_errors_is_the_tarpit() -> None:
    """Postfix delays every reply once the error count reaches its soft limit, RSET's too."""
    p = ErrorPacer()
    p.new_connection()
    p.observe(OK, 0.01)
    for _ in range(3):
        p.observe(ERR, 0.01)
    p.observe(OK, 1.0)  # RSET after the 3rd error waited
    assert p.delayed and p.tarpit_after == 3 and p.budget == 2


def test_slow_from_the_first_error_stops_reconnecting() -> None:
    p = ErrorPacer()
    p.new_connection()
    p.observe(OK, 0.01)
    p.observe(ERR, 0.9)  # the first error of a fresh connection is already late
    assert not p.per_session and not p.exhausted()
    for _ in range(20):
        p.observe(ERR, 0.9)
    assert not p.exhausted()  # a new connection would be just as slow


def test_slow_successes_are_not_a_tarpit() -> None:
    p = ErrorPacer()
    p.new_connection()
    p.observe(OK, 0.01)
    p.observe(OK, 2.0)  # e.g. a DNS lookup behind an accepted RCPT
    assert not p.delayed and p.tarpit_after is None
