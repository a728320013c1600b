"""Intrusive probes: connection bursts and failed-AUTH throttling are bounded and back off."""

from __future__ import annotations

import time
from pathlib import Path

from smtpaudit.probes.smtp.auththrottle import AuthThrottleProbe
from smtpaudit.probes.smtp.connlimit import ConnLimitProbe
from smtpaudit.probes.smtp import connlimit
from tests.behaviour.helpers import async_test, run_probe
from tests.fakes.certs import server_context
from tests.fakes.mta import FakeMta


@async_test
async def test_connection_bursts_bounded_against_no_limit_server(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(connlimit, "PAUSE", 0.1)
    async with FakeMta() as mta:
        t0 = time.monotonic()
        result = await run_probe(ConnLimitProbe, mta.port, intrusive=True, options={"burst_connections": 30, "rate_connections": 15})
        elapsed = time.monotonic() - t0
    f = result.facts
    assert f["smtp.connlimit.concurrent_unlimited"] is True and f["smtp.connlimit.concurrent_held"] == 30
    assert f["smtp.connlimit.rate_unlimited"] is True and f["smtp.connlimit.rate_greeted"] == 15
    assert mta.connections == 45 == result.connections and mta.max_active <= 30
    assert elapsed < 10


@async_test
async def test_connection_limit_found_and_backs_off(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(connlimit, "PAUSE", 0.1)
    async with FakeMta(max_connections=5) as mta:
        result = await run_probe(ConnLimitProbe, mta.port, intrusive=True)
    f = result.facts
    assert f["smtp.connlimit.concurrent_held"] == 5 and f["smtp.connlimit.concurrent_refused_at"] == 6
    assert f["smtp.connlimit.concurrent_refusal_code"] == 421 and f["smtp.connlimit.concurrent_unlimited"] is False
    # No connection after the refusal in the concurrency phase (6 = 5 held + the refused one).
    assert mta.connections == 6 + f["smtp.connlimit.rate_greeted"]


@async_test
async def test_auth_failures_unthrottled(tmp_path: Path) -> None:
    mta = FakeMta(tls_context=server_context(tmp_path), auth_mechanisms=("PLAIN",), auth_users={"alice": "pw-alice"})
    async with mta:
        result = await run_probe(AuthThrottleProbe, mta.port, intrusive=True, secrets=("pw-alice",),
                                 options={"auth_user": "alice", "auth_password": "pw-alice"})
    f = result.facts
    assert f["smtp.auth_throttle.attempts"] == 10 and f["smtp.auth_throttle.unthrottled"] is True
    assert f["smtp.auth_throttle.valid_login_after"] is True
    assert result.connections == 2


@async_test
async def test_auth_failures_throttled(tmp_path: Path) -> None:
    mta = FakeMta(tls_context=server_context(tmp_path), auth_mechanisms=("PLAIN", "LOGIN"), auth_fail_limit=3)
    async with mta:
        result = await run_probe(AuthThrottleProbe, mta.port, intrusive=True)
    f = result.facts
    assert f["smtp.auth_throttle.refused_after"] == 3 and f["smtp.auth_throttle.unthrottled"] is False
    assert f["smtp.auth_throttle.attempts"] == 3 and mta.connections == 1


@async_test
async def test_auth_not_offered(tmp_path: Path) -> None:
    async with FakeMta(tls_context=server_context(tmp_path)) as mta:
        result = await run_probe(AuthThrottleProbe, mta.port, intrusive=True)
    assert result.facts["smtp.auth_throttle.tested"] is False and result.facts["smtp.auth_throttle.unthrottled"] is None


@async_test
async def test_delayed_failures_count_as_throttling_and_stop_early(tmp_path: Path) -> None:
    mta = FakeMta(tls_context=server_context(tmp_path), auth_mechanisms=("PLAIN",), auth_fail_delay=1.6)
    async with mta:
        t0 = time.monotonic()
        result = await run_probe(AuthThrottleProbe, mta.port, intrusive=True)
        elapsed = time.monotonic() - t0
    f = result.facts
    assert f["smtp.auth_throttle.attempts"] == 2 and f["smtp.auth_throttle.slowdown"] is True
    assert f["smtp.auth_throttle.unthrottled"] is False and elapsed < 5
