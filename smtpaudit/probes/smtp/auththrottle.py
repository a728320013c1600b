"""The failed-AUTH throttling probe (opt-in, --intrusive): what happens after repeated failed logins?

Over TLS when the server offers it, up to ``auth_attempts`` (default 10, at most 30) AUTH
attempts with a random, certainly non-existent user name and password (so no real account can
be locked out), within 60 s and at most 3 connections. Observed: a 421 or disconnect after N
failures, replies slowing down (a tarpit), and whether a fresh connection is still served. With
``--auth-user/--auth-password``, one login with the real credentials afterwards tells whether the
client address was locked out. Credentials never appear in transcripts.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ConnectionClosed, ProbeContext, ProbeError, ProbeResult, ReplyTimeout, ServiceUnavailable
from smtpaudit.probes.smtp.behaviour import open_session, run_guarded, session
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.probes.smtp.submission import authenticate
from smtpaudit.targets import Endpoint

ATTEMPTS, ATTEMPTS_MAX = 10, 30
MAX_CONNECTIONS = 3
BUDGET = 60.0
SLOWDOWN = 1.0  # seconds slower than the first reply that count as throttling
SLOW = 1.5  # a failure answered this late is throttled whatever the first one took


class AuthThrottleProbe:
    name: ClassVar[str] = "smtp.auth_throttle"
    intrusive: ClassVar[bool] = True
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        async def body(result: ProbeResult, transcript: Transcript) -> None:
            await self._observe(endpoint, ctx, result, transcript)

        return await run_guarded(self.name, ctx, body, prior)

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        try:
            cap = max(1, min(int(ctx.options.get("auth_attempts", ATTEMPTS)), ATTEMPTS_MAX))
        except (TypeError, ValueError):
            cap = ATTEMPTS
        f.update({"smtp.auth_throttle.tested": False, "smtp.auth_throttle.mechanism": None, "smtp.auth_throttle.cap": cap,
                  "smtp.auth_throttle.attempts": 0, "smtp.auth_throttle.disconnect_after": None,
                  "smtp.auth_throttle.refused_after": None, "smtp.auth_throttle.first_latency": None,
                  "smtp.auth_throttle.last_latency": None, "smtp.auth_throttle.slowdown": None,
                  "smtp.auth_throttle.reconnect_refused": None, "smtp.auth_throttle.valid_login_after": None})
        latencies: list[float] = []
        deadline = time.monotonic() + BUDGET
        attempts = 0
        ended = False
        while attempts < cap and not ended and result.connections < MAX_CONNECTIONS and time.monotonic() < deadline:
            conn = result.connections
            result.connections += 1
            try:
                s = await open_session(endpoint, ctx, transcript, conn=conn, starttls=True)
            except ServiceUnavailable as exc:
                if attempts:
                    f["smtp.auth_throttle.reconnect_refused"] = True
                    break
                raise exc
            try:
                mech = next((m for m in ("PLAIN", "LOGIN") if m in s.caps.auth), None)
                if mech is None:
                    if attempts:
                        f["smtp.auth_throttle.reconnect_refused"] = True  # AUTH withdrawn after failures
                        break
                    f["smtp.auth_throttle.unthrottled"] = None  # nothing to test: AUTH not offered
                    return
                f["smtp.auth_throttle.mechanism"] = mech
                if attempts:
                    f["smtp.auth_throttle.reconnect_refused"] = False
                while attempts < cap and time.monotonic() < deadline:
                    user, password = f"smtpaudit-{secrets.token_hex(4)}", secrets.token_hex(12)
                    t0 = time.monotonic()
                    try:
                        reply = await authenticate(s, mech, user, password)
                    except ConnectionClosed:
                        attempts += 1
                        f["smtp.auth_throttle.disconnect_after"] = f["smtp.auth_throttle.disconnect_after"] or attempts
                        break
                    except ReplyTimeout:
                        if not latencies:
                            # Not one AUTH answered yet: a server silent to AUTH, not one slowing
                            # down failures. Nothing observed, so no verdict (fail closed).
                            await s.client.close()
                            raise
                        # No answer within the command timeout after answered failures: the
                        # strongest slowdown there is. The reply may still come, so this
                        # connection is finished.
                        attempts += 1
                        latencies.append(time.monotonic() - t0)
                        ended = True
                        await s.client.close()
                        break
                    latencies.append(time.monotonic() - t0)
                    attempts += 1
                    if latencies[-1] >= 2 * SLOW or (
                            len(latencies) >= 2 and all(lat >= min(SLOW, latencies[0] + SLOWDOWN) for lat in latencies[-2:])):
                        ended = True  # replies are being delayed (e.g. Dovecot's auth_failure_delay): throttled
                        break
                    if reply.code == 421 or (400 <= reply.code < 500 and reply.code != 454):
                        f["smtp.auth_throttle.refused_after"] = attempts
                        ended = reply.code == 421
                        break
                    if reply.code == 235:  # a server that lets a random user in: nothing more to measure
                        ended = True
                        break
            finally:
                await s.client.quit()
        f["smtp.auth_throttle.attempts"] = attempts
        f["smtp.auth_throttle.tested"] = attempts > 0
        if latencies:
            f["smtp.auth_throttle.first_latency"] = round(latencies[0], 3)
            f["smtp.auth_throttle.last_latency"] = round(latencies[-1], 3)
            f["smtp.auth_throttle.slowdown"] = latencies[-1] >= latencies[0] + SLOWDOWN or latencies[-1] >= 2 * SLOW or (
                len(latencies) >= 2 and all(lat >= SLOW for lat in latencies[-2:]))
        reacted = bool(f["smtp.auth_throttle.disconnect_after"] or f["smtp.auth_throttle.refused_after"]
                       or f["smtp.auth_throttle.slowdown"] or f["smtp.auth_throttle.reconnect_refused"])
        if not (attempts < cap and not reacted):
            # Fewer attempts than planned and no reaction seen: inconclusive, so absent (not "throttled").
            f["smtp.auth_throttle.unthrottled"] = not reacted
        user, password = ctx.options.get("auth_user"), ctx.options.get("auth_password")
        if user and password and attempts:
            try:
                async with session(endpoint, ctx, transcript, result, starttls=True) as s:
                    mech = next((m for m in ("PLAIN", "LOGIN") if m in s.caps.auth), None)
                    if s.tls and mech:
                        reply = await authenticate(s, mech, str(user), str(password))
                        f["smtp.auth_throttle.valid_login_after"] = reply.code == 235
            except ProbeError:
                f["smtp.auth_throttle.valid_login_after"] = False
