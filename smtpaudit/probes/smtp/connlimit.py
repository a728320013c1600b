"""The connection-limits probe (opt-in, --intrusive): concurrent connections and connection rate from one client.

Phase 1, concurrency: open connections one after another and keep them (each must show its
greeting within a few seconds), up to ``burst_connections`` (default 25, at most 100) and
``burst_seconds`` (default 15). The first refusal ends the phase: a non-220 greeting (421/450/554),
a refused or reset connection, or a greeting that does not come (a tarpit). Then every
connection is closed with QUIT.

Phase 2, rate: after a pause, connect / greeting / QUIT one at a time, up to ``rate_connections``
(default 20) within ``burst_seconds``; again the first refusal ends it.

A greeting that does not come counts as a refusal only once the server has greeted some
connection of this probe in time: a server slower than the wait on every connection shows no
limit. Undecided phases (that, or the time budget spent before the cap) leave their verdict
absent ("not evaluated"), never null (which a rule would read as a pass).

Both phases back off at the first 421: no retry, no further connection. This probe deliberately
exceeds the scanner's usual per-host connection limit; that is its purpose.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ConnectFailed, ProbeContext, ProbeError, ProbeResult, ReplyTimeout
from smtpaudit.probes.smtp.behaviour import run_guarded, short
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.targets import Endpoint

GREETING_WAIT = 5.0
PAUSE = 2.0


def _int_option(ctx: ProbeContext, key: str, default: int, maximum: int) -> int:
    try:
        return max(1, min(int(ctx.options.get(key, default)), maximum))
    except (TypeError, ValueError):
        return default


class ConnLimitProbe:
    name: ClassVar[str] = "smtp.connlimit"
    intrusive: ClassVar[bool] = True
    sockets: ClassVar[int] = 0  # the burst: exclusive use of the host, beyond --per-host (opt-in)
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        async def body(result: ProbeResult, transcript: Transcript) -> None:
            seconds = float(ctx.options.get("burst_seconds", 15.0))
            await self._concurrency(endpoint, ctx, result, transcript, seconds)
            if result.facts.get("smtp.connlimit.concurrent_refusal_code") == 421:
                await asyncio.sleep(PAUSE * 2)  # it told us to go away: give it time before the rate phase
            else:
                await asyncio.sleep(PAUSE)
            await self._rate(endpoint, ctx, result, transcript, seconds)

        return await run_guarded(self.name, ctx, body, prior)

    async def _greet(self, endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript, conn: int) -> tuple[SmtpClient | None, str, int | None, str | None, float]:
        """Connect and read the greeting: (client if greeted, outcome, code, text, seconds)."""
        t0 = time.monotonic()
        try:
            client = await SmtpClient.open(endpoint, ctx, transcript, conn=conn)
        except ConnectFailed as exc:
            return None, "connect_failed", None, exc.message[:160], time.monotonic() - t0
        try:
            reply = await client.read_reply(timeout=min(GREETING_WAIT, ctx.timeouts.greeting))
        except ReplyTimeout:
            await client.close()
            return None, "no_greeting", None, None, time.monotonic() - t0
        except ProbeError as exc:
            await client.close()
            return None, "closed", None, exc.message[:160], time.monotonic() - t0
        if reply.code != 220:
            await client.close()
            return None, "refused", reply.code, short(reply, 160), time.monotonic() - t0
        return client, "greeted", 220, None, time.monotonic() - t0

    async def _concurrency(self, endpoint: Endpoint, ctx: ProbeContext, result: ProbeResult, transcript: Transcript, seconds: float) -> None:
        f = result.facts
        cap = _int_option(ctx, "burst_connections", 25, 100)
        f.update({"smtp.connlimit.concurrent_cap": cap, "smtp.connlimit.concurrent_held": 0,
                  "smtp.connlimit.concurrent_refused_at": None, "smtp.connlimit.concurrent_refusal": None,
                  "smtp.connlimit.concurrent_refusal_code": None, "smtp.connlimit.greeting_seconds_max": None})
        held: list[SmtpClient] = []
        slowest = 0.0
        deadline = time.monotonic() + seconds
        try:
            while len(held) < cap and time.monotonic() < deadline:
                conn = result.connections
                result.connections += 1
                client, outcome, code, text, took = await self._greet(endpoint, ctx, transcript, conn)
                slowest = max(slowest, took)
                if client is None and outcome == "no_greeting" and not held:
                    # Not even the first connection was greeted in time: a slow greeter, no limit shown.
                    f["smtp.connlimit.concurrent_refusal"] = f"{outcome}: the first connection was not greeted in time"
                    break
                if client is None:
                    f["smtp.connlimit.concurrent_refused_at"] = len(held) + 1
                    f["smtp.connlimit.concurrent_refusal"] = f"{outcome}: {code or ''} {text or ''}".strip()
                    f["smtp.connlimit.concurrent_refusal_code"] = code
                    break
                held.append(client)
        finally:
            f["smtp.connlimit.concurrent_held"] = len(held)
            refused = f["smtp.connlimit.concurrent_refused_at"] is not None
            unlimited = False if refused else (True if len(held) >= cap else None)
            if unlimited is not None:  # undecided (time budget spent, no greeting at all) stays absent: a null would pass
                f["smtp.connlimit.concurrent_unlimited"] = unlimited
            f["smtp.connlimit.greeting_seconds_max"] = round(slowest, 3)
            await asyncio.gather(*(c.quit() for c in held), return_exceptions=True)

    async def _rate(self, endpoint: Endpoint, ctx: ProbeContext, result: ProbeResult, transcript: Transcript, seconds: float) -> None:
        f = result.facts
        cap = _int_option(ctx, "rate_connections", 20, 100)
        f.update({"smtp.connlimit.rate_cap": cap, "smtp.connlimit.rate_greeted": 0, "smtp.connlimit.rate_refused_at": None,
                  "smtp.connlimit.rate_refusal": None, "smtp.connlimit.rate_seconds": None})
        t0 = time.monotonic()
        greeted = 0
        while greeted < cap and time.monotonic() - t0 < seconds:
            conn = result.connections
            result.connections += 1
            client, outcome, code, text, _ = await self._greet(endpoint, ctx, transcript, conn)
            if client is None and outcome == "no_greeting" and not greeted and not f.get("smtp.connlimit.concurrent_held"):
                # No connection of this probe was ever greeted in time: a slow greeter, no limit shown.
                f["smtp.connlimit.rate_refusal"] = f"{outcome}: no connection was greeted in time"
                break
            if client is None:
                f["smtp.connlimit.rate_refused_at"] = greeted + 1
                f["smtp.connlimit.rate_refusal"] = f"{outcome}: {code or ''} {text or ''}".strip()
                break
            greeted += 1
            await client.quit()
        f["smtp.connlimit.rate_greeted"] = greeted
        refused = f["smtp.connlimit.rate_refused_at"] is not None
        unlimited = False if refused else (True if greeted >= cap else None)
        if unlimited is not None:  # undecided stays absent: a null would pass no-connection-rate-limit
            f["smtp.connlimit.rate_unlimited"] = unlimited
        f["smtp.connlimit.rate_seconds"] = round(time.monotonic() - t0, 2)
