"""Session limits: found where they exist, and bounded (count and time) where they do not."""

from __future__ import annotations

import asyncio
import time

from smtpaudit.probes.base import Timeouts
from smtpaudit.probes.smtp.limits import LimitsProbe
from tests.behaviour.helpers import async_test, run_probe
from tests.fakes.mta import FakeMta

PRIOR = {"smtp.greeting.hostname": "mx.example.test"}


@async_test
async def test_no_limit_server_finishes_within_budget() -> None:
    """Against a server with no limits at all the probe stops at its caps, quickly, and sends no DATA."""
    async with FakeMta() as mta:
        t0 = time.monotonic()
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
        elapsed = time.monotonic() - t0
    f = result.facts
    assert result.status == "ok", result.error_message
    assert elapsed < 5.0, f"limits probe took {elapsed:.1f}s against a no-limit server"
    assert f["smtp.limits.rcpt_tested"] is True and f["smtp.limits.rcpt_accepted"] == 200 and f["smtp.limits.rcpt_limit"] is None
    assert f["smtp.limits.errors_unlimited"] is True and f["smtp.limits.errors_sent"] == 25
    # A server that greets at once may see our EHLO before or after its greeting (a race): never
    # "rejected", at most "served" when the EHLO provably arrived first.
    assert f.get("smtp.limits.early_talker_rejected") in (False, None)
    assert f["smtp.limits.idle_timeout"] is None
    assert result.connections == 3 + f["smtp.limits.early_talker_attempts"] and mta.max_active <= 1
    rcpts = sum(1 for c in mta.all_commands if c.startswith("RCPT"))
    assert rcpts <= 201 and "DATA" not in mta.all_commands


@async_test
async def test_limits_found() -> None:
    async with FakeMta(recipient_limit=50, error_limit=5, greeting_delay=0.3, reject_early_talkers=True) as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert f["smtp.limits.rcpt_limit"] == 50 and f["smtp.limits.rcpt_stop_code"] == 452
    assert f["smtp.limits.errors_limit"] == 4 and f["smtp.limits.errors_limit_code"] == 421
    assert f["smtp.limits.early_talker_rejected"] is True


@async_test
async def test_tarpit_detected_and_cut_short() -> None:
    async with FakeMta(error_sleep_after=5, error_sleep=0.6) as mta:
        t0 = time.monotonic()
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
        elapsed = time.monotonic() - t0
    f = result.facts
    # Stops at the first delayed reply (the 6th error): one tarpit second, not two.
    assert f["smtp.limits.errors_tarpit_after"] == 5 and f["smtp.limits.errors_sent"] == 6
    assert f["smtp.limits.errors_unlimited"] is False
    assert elapsed < 0.6 * 2


@async_test
async def test_tarpit_from_the_first_error_is_seen() -> None:
    """A server slow on every error: the NOOP baseline shows the first error reply is already late."""
    async with FakeMta(error_sleep_after=0, error_sleep=0.6) as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert f["smtp.limits.errors_tarpit_after"] == 0 and f["smtp.limits.errors_sent"] == 1


@async_test
async def test_idle_timeout_observed() -> None:
    async with FakeMta(idle_timeout=0.5) as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR, options={"idle_watch": 2.0})
    assert result.facts["smtp.limits.idle_timeout"] is not None and result.facts["smtp.limits.idle_timeout"] <= 2.5


@async_test
async def test_no_accepted_recipient_means_untested() -> None:
    async with FakeMta(users=()) as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
    assert result.facts["smtp.limits.rcpt_tested"] is False and result.facts["smtp.limits.rcpt_limit"] is None


@async_test
async def test_early_talker_served_after_a_delayed_greeting_is_a_finding_fact() -> None:
    """The greeting comes 0.3 s after connect: our EHLO provably arrived first, and was served."""
    async with FakeMta(greeting_delay=0.3) as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert f["smtp.limits.early_talker_rejected"] is False and f["smtp.limits.early_talker_attempts"] == 1
    assert f["smtp.limits.greeting_delay"] >= 0.3


@async_test
async def test_a_greeting_sooner_than_a_round_trip_after_our_ehlo_decides_nothing(monkeypatch) -> None:
    """Postfix greeting at once was "rejected" or "served" by a race, run to run. A greeting that
    arrives within one round trip of our EHLO left the server before the EHLO got there: that
    attempt counts for nothing; after EARLY_ATTEMPTS such attempts the verdict fact is absent."""
    from smtpaudit.probes.smtp import limits as limits_mod

    real_open = limits_mod.SmtpClient.open

    async def slow_handshake(*args, **kwargs):
        client = await real_open(*args, **kwargs)
        await asyncio.sleep(0.3)  # as if the TCP handshake took 0.3 s: the greeting is already here
        return client

    async with FakeMta() as mta:
        monkeypatch.setattr(limits_mod.SmtpClient, "open", slow_handshake)
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert "smtp.limits.early_talker_rejected" not in f
    assert f["smtp.limits.early_talker_attempts"] == limits_mod.EARLY_ATTEMPTS
    assert any("not an early talk" in ln.text for ln in result.transcript)


@async_test
async def test_silence_after_an_early_ehlo_is_not_a_refusal() -> None:
    async with FakeMta(greeting_delay=30) as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR,
                                 timeouts=Timeouts(connect=3, greeting=0.5, command=2, tls=2))
    assert result.facts.get("smtp.limits.early_talker_rejected") is not True
