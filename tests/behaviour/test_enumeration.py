"""RCPT enumeration: a real differential is found; 252-everything, catch-alls and 421-after-N are not findings."""

from __future__ import annotations

from smtpaudit.probes.smtp.enumeration import EnumerationProbe, differential
from tests.behaviour.helpers import async_test, run_probe
from tests.fakes.mta import FakeMta

PRIOR = {"smtp.greeting.hostname": "mx.example.test"}


def test_differential_logic() -> None:
    assert differential(250, [550, 550]) == (True, None)
    assert differential(250, [250, 250]) == (False, None)
    assert differential(252, [252, 252]) == (False, None)
    assert differential(250, [550, 421])[0] is None
    assert differential(250, [450, 450])[0] is None
    assert differential(250, [550, 553])[0] is None
    assert differential(554, [554, 554]) == (False, None)
    assert differential(250, [None, None])[0] is None


@async_test
async def test_rcpt_differential_found_with_two_errors_only() -> None:
    async with FakeMta() as mta:
        result = await run_probe(EnumerationProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert f["smtp.enumeration.rcpt_differential"] is True
    assert f["smtp.enumeration.postmaster_bare_code"] == 250
    assert f["smtp.enumeration.random_code"] == 550 and f["smtp.enumeration.random2_code"] == 550
    assert result.connections == 1 and "DATA" not in mta.all_commands


@async_test
async def test_catch_all_is_not_enumerable() -> None:
    async with FakeMta(accept_all_recipients=True) as mta:
        result = await run_probe(EnumerationProbe, mta.port, prior=PRIOR)
    assert result.facts["smtp.enumeration.rcpt_differential"] is False


@async_test
async def test_421_after_errors_is_inconclusive_not_a_finding() -> None:
    # The server gives up after its second error: the second random gets 421.
    async with FakeMta(error_limit=2) as mta:
        result = await run_probe(EnumerationProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert f["smtp.enumeration.random2_code"] == 421
    # Inconclusive: the verdict is absent (the rule is then not evaluated), the reason is recorded.
    assert "smtp.enumeration.rcpt_differential" not in f and "4xx/421" in f["smtp.enumeration.inconclusive_reason"]


@async_test
async def test_unknown_domain_is_inconclusive() -> None:
    async with FakeMta() as mta:
        result = await run_probe(EnumerationProbe, mta.port, prior={"smtp.greeting.hostname": "localhost"})
    f = result.facts
    assert f["smtp.enumeration.domain"] is None and "smtp.enumeration.rcpt_differential" not in f
    assert f["smtp.enumeration.postmaster_bare_code"] == 250


@async_test
async def test_foreign_domain_same_refusal() -> None:
    async with FakeMta() as mta:
        result = await run_probe(EnumerationProbe, mta.port, prior={"smtp.greeting.hostname": "other.example.net"})
    assert result.facts["smtp.enumeration.rcpt_differential"] is False  # 554 relay denied for all three
