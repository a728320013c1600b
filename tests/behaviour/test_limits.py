"""Session limits: found where they exist, and bounded (count and time) where they do not."""

from __future__ import annotations

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
    assert f["smtp.limits.early_talker_rejected"] is False
    assert f["smtp.limits.idle_timeout"] is None
    # 3 limit connections and 4 early talkers (every one served, so all attempts were spent).
    assert result.connections == 7 and mta.max_active <= 2
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
async def test_silence_after_an_early_ehlo_is_not_a_refusal() -> None:
    """A server that reads our early EHLO and then says nothing did not refuse it: not evaluated."""
    from smtpaudit.probes.base import ProbeContext, ProbeResult
    from smtpaudit.probes.smtp.client import Transcript
    from smtpaudit.targets import parse_target
    from tests.fakes.smtp import Expect, FakeSmtpServer, Silence

    async with FakeSmtpServer(script=[Expect(), Silence()]) as srv:
        ctx = ProbeContext(timeouts=Timeouts(connect=3, greeting=0.5, command=0.5, tls=2))
        result = ProbeResult(probe="smtp.limits")
        await LimitsProbe()._early_talker(parse_target(srv.target), ctx, result, Transcript())
    assert srv.received[0][0].startswith("EHLO")
    assert "smtp.limits.early_talker_rejected" not in result.facts
    assert result.facts["smtp.limits.early_talker_reply"] == "no reply"


async def _early_talker_against(greetings: list[bytes]) -> tuple[dict, int]:
    """The early-talker test against a server whose n-th connection greets with greetings[n]
    (a 220 serves the EHLO; anything else is said and the connection closed)."""
    import asyncio

    from smtpaudit.probes.base import ProbeContext, ProbeResult
    from smtpaudit.probes.smtp.client import Transcript
    from smtpaudit.targets import parse_target

    seen = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        greeting = greetings[min(seen[0], len(greetings) - 1)]
        seen[0] += 1
        try:
            await reader.readline()  # our early EHLO
            writer.write(greeting)
            if greeting.startswith(b"220"):
                writer.write(b"250 race.example.test\r\n")
                await reader.readline()  # QUIT
                writer.write(b"221 bye\r\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ctx = ProbeContext(timeouts=Timeouts(connect=3, greeting=2, command=2, tls=2))
        result = ProbeResult(probe="smtp.limits")
        await LimitsProbe()._early_talker(parse_target(f"127.0.0.1:{port}"), ctx, result, Transcript())
    finally:
        server.close()
    return result.facts, seen[0]


SERVED = b"220 race.example.test ESMTP\r\n"
SYNC_ERROR = b"554 5.5.0 Error: SMTP protocol synchronization\r\n"


@async_test
async def test_early_talker_refused_once_in_a_race_is_refused() -> None:
    """A server that greets at once catches our EHLO only when it wins the race: a refusal on any
    attempt is the evidence of its check (it used to flip run to run on the hardened lab Postfix)."""
    facts, connections = await _early_talker_against([SERVED, SERVED, SYNC_ERROR, SERVED])
    assert facts["smtp.limits.early_talker_rejected"] is True
    assert connections == 3  # the refusal ended the test
    assert facts["smtp.limits.early_talker_reply"].startswith("attempt 1: 220 race.example.test ESMTP | 250 race.example.test ; ")
    assert "attempt 3: 554 5.5.0 Error: SMTP protocol synchronization" in facts["smtp.limits.early_talker_reply"]


@async_test
async def test_early_talker_served_only_when_every_attempt_was() -> None:
    facts, connections = await _early_talker_against([SERVED])
    assert facts["smtp.limits.early_talker_rejected"] is False and connections == 4


@async_test
async def test_busy_greeting_is_not_an_early_talker_refusal() -> None:
    """421 says "not now", not "you spoke first": no verdict, and no further attempts."""
    facts, connections = await _early_talker_against([SERVED, b"421 4.7.0 Too many connections\r\n"])
    assert "smtp.limits.early_talker_rejected" not in facts and connections == 2
    assert "attempt 2: 421" in facts["smtp.limits.early_talker_reply"]


@async_test
async def test_early_talker_hung_up_on_without_a_word_is_no_refusal() -> None:
    facts, connections = await _early_talker_against([b""])
    assert "smtp.limits.early_talker_rejected" not in facts and connections == 1
    assert facts["smtp.limits.early_talker_reply"] == "connection closed"


@async_test
async def test_421_to_the_first_error_is_no_error_limit() -> None:
    """ "Go away" before any error was answered counts nothing: no-error-limit is not passed on it."""
    async with FakeMta(error_limit=1) as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert "smtp.limits.errors_unlimited" not in f and f["smtp.limits.errors_limit"] is None
    assert f["smtp.limits.errors_sent"] == 1


@async_test
async def test_recipient_phase_cut_by_its_budget_gives_no_verdict(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Stopped by the time budget before the cap and without a refusal: no-recipient-limit must not
    fire from the deadline (rcpt_tested goes, so the rule is not evaluated)."""
    from smtpaudit.probes.smtp import limits

    monkeypatch.setattr(limits, "PHASE_SECONDS", 0.0)
    async with FakeMta() as mta:
        result = await run_probe(LimitsProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert "smtp.limits.rcpt_tested" not in f and f["smtp.limits.rcpt_limit"] is None
    assert f["smtp.limits.rcpt_accepted"] == 1
    assert any("budget" in ln.text for ln in result.transcript)
