"""The session-limits probe: recipients per message, errors per session, early talkers, idle timeout.

Bounded in count and time, safe for a nightly scan (no message is ever sent):

* recipients: ``MAIL FROM:<>`` then the same accepted recipient (postmaster) up to ``rcpt_cap``
  times (default 200), pipelined in batches when the server offers PIPELINING; where does it stop
  (RFC 5321 4.5.3.1.8: at least 100 must be accepted; the next answer is 452)?
* errors: up to ``errors_cap`` (default 25) unknown commands; does the server hang up or say 421
  after N, or start to tarpit (a reply 0.5 s slower than a NOOP's: we stop at the first one, so
  Postfix's 1 s-per-error tarpit costs one second)?
* early talker: send EHLO before the greeting arrives; is that rejected (Postfix postscreen
  pregreet, Exim's synchronization check)? The only place smtpaudit speaks first, on purpose.
  Up to 4 attempts, because against a server that greets at once being early is a race.
* idle timeout: one greeted connection left idle after the others (``idle_watch`` seconds,
  default 0.05: servers wait minutes, RFC 5321 4.5.3.2.7); did the server close it, and when?

Every phase stops at the first 421. Connections: 4 to 7, one at a time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ConnectionClosed, ProbeContext, ProbeError, ProbeResult, ReplyTimeout
from smtpaudit.probes.smtp.behaviour import BehaviourProbe, Session, local_domain, open_session, session, short
from smtpaudit.probes.smtp.client import Reply, SmtpClient, Transcript
from smtpaudit.targets import Endpoint

RCPT_CAP, RCPT_CAP_MAX = 200, 1000
ERRORS_CAP, ERRORS_CAP_MAX = 25, 100
BATCH = 25
TARPIT_EXTRA = 0.5  # seconds slower than the baseline that count as a tarpit
PHASE_SECONDS = 30.0  # a phase stops after this long whatever the counts say
BAD_COMMAND = "XSMTPAUDIT"
EARLY_TALKER_ATTEMPTS = 4  # early EHLOs while each is served; the first refusal ends the test
EARLY_SERVED, EARLY_REFUSED, EARLY_UNDECIDED = "served", "refused", "undecided"


def _cap(ctx: ProbeContext, key: str, default: int, maximum: int) -> int:
    try:
        return max(1, min(int(ctx.options.get(key, default)), maximum))
    except (TypeError, ValueError):
        return default


class LimitsProbe(BehaviourProbe):
    name: ClassVar[str] = "smtp.limits"
    intrusive: ClassVar[bool] = False
    # One socket at a time: the error phase may spend a tarpit's second waiting, and with a single
    # host slot taken the endpoint's other probes run beside it instead of after it.
    sockets: ClassVar[int] = 1
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        try:
            await self._recipients(endpoint, ctx, prior, result, transcript)
            await self._errors(endpoint, ctx, result, transcript)
            await self._early_talker(endpoint, ctx, result, transcript)
        finally:
            # Last, on its own: a connection held idle beside the other tests would take a second
            # host slot for the whole probe, and servers close idle sessions after minutes anyway.
            watch = float(ctx.options.get("idle_watch", 0.0))
            idle = await _finish_idle(await self._idle(endpoint, ctx, transcript, result), watch)
            f["smtp.limits.idle_timeout"] = idle[0]
            f["smtp.limits.idle_watched"] = round(idle[1], 1)

    # ------------------------------------------------------------------ recipients
    async def _recipients(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        cap = _cap(ctx, "rcpt_cap", RCPT_CAP, RCPT_CAP_MAX)
        f.update({"smtp.limits.rcpt_cap": cap, "smtp.limits.rcpt_tested": False, "smtp.limits.rcpt_accepted": 0,
                  "smtp.limits.rcpt_limit": None, "smtp.limits.rcpt_stop_code": None, "smtp.limits.rcpt_stop_text": None})
        domain = local_domain(prior, endpoint, ctx)
        candidates = ([f"postmaster@{domain}"] if domain else []) + ["Postmaster"]
        async with session(endpoint, ctx, transcript, result) as s:
            if not (await s.client.command("MAIL FROM:<>")).positive:
                return
            address = None
            for candidate in candidates:
                reply = await s.client.command(f"RCPT TO:<{candidate}>")
                if reply.positive:
                    address = candidate
                    break
                if reply.code == 421:
                    return
            if address is None:
                return
            f["smtp.limits.rcpt_tested"] = True
            accepted, stop = 1, None
            deadline = time.monotonic() + PHASE_SECONDS
            batch = BATCH if s.caps.has("PIPELINING") else 1
            while accepted < cap and stop is None and time.monotonic() < deadline:
                n = min(batch, cap - accepted)
                await s.client.send_lines([f"RCPT TO:<{address}>"] * n)
                for _ in range(n):
                    if stop is not None and stop.code == 421:
                        break  # the server is hanging up: read nothing more
                    reply = await s.client.read_reply()
                    if reply.positive and stop is None:
                        accepted += 1
                    elif stop is None:
                        stop = reply
            f["smtp.limits.rcpt_accepted"] = accepted
            if stop is None and accepted < cap:
                # Stopped by the phase's time budget before the cap, with no refusal: neither a
                # limit nor its absence was seen, so the verdict fact goes (no-recipient-limit
                # would otherwise fire from a deadline).
                f.pop("smtp.limits.rcpt_tested", None)
                transcript.add("*", f"recipient test stopped by its {PHASE_SECONDS:g} s budget after {accepted} "
                                    f"accepted (cap {cap}): no verdict", s.client.conn)
            if stop is not None:
                f["smtp.limits.rcpt_limit"] = accepted
                f["smtp.limits.rcpt_stop_code"] = stop.code
                f["smtp.limits.rcpt_stop_text"] = short(stop)
            if stop is None or stop.code != 421:
                await s.client.command("RSET")

    # ------------------------------------------------------------------ errors
    async def _errors(self, endpoint: Endpoint, ctx: ProbeContext, result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        cap = _cap(ctx, "errors_cap", ERRORS_CAP, ERRORS_CAP_MAX)
        f.update({"smtp.limits.errors_cap": cap, "smtp.limits.errors_sent": 0, "smtp.limits.errors_limit": None,
                  "smtp.limits.errors_limit_code": None, "smtp.limits.errors_tarpit_after": None})
        deadline = time.monotonic() + PHASE_SECONDS
        async with session(endpoint, ctx, transcript, result) as s:
            # A command every server answers at once: the baseline a tarpitted reply stands out from
            # even when the very first error is already delayed.
            t0 = time.monotonic()
            await s.client.command("NOOP")
            base = time.monotonic() - t0
            for i in range(cap):
                if time.monotonic() > deadline:
                    break
                t0 = time.monotonic()
                try:
                    reply: Reply | None = await s.client.command(BAD_COMMAND)
                except ConnectionClosed:
                    reply = None
                latency = time.monotonic() - t0
                f["smtp.limits.errors_sent"] = i + 1
                if reply is None or reply.code == 421:
                    # The server hung up or said 421: its error limit, counted in errors it answered.
                    await s.client.close()
                    if i > 0:
                        # Before any error was answered it counts nothing: a crash, a restart or a
                        # "go away" (busy, shutting down) look the same. No verdict then.
                        f["smtp.limits.errors_limit"] = i
                        f["smtp.limits.errors_limit_code"] = None if reply is None else 421
                        f["smtp.limits.errors_unlimited"] = False
                    return
                if latency >= base + TARPIT_EXTRA:
                    # The first delayed reply is the tarpit: waiting for more would only cost seconds each.
                    f["smtp.limits.errors_tarpit_after"] = i
                    f["smtp.limits.errors_unlimited"] = False
                    transcript.add("*", f"reply delayed {latency:.2f}s (baseline {base:.3f}s): error tarpit after {i} errors",
                                   s.client.conn)
                    await s.client.quit()
                    return
            # Cut short by the time budget: inconclusive, neither limited nor unlimited: the verdict
            # fact stays absent so its rule is not evaluated (a null would read as "limited").
            if f["smtp.limits.errors_sent"] >= cap:
                f["smtp.limits.errors_unlimited"] = True

    # ------------------------------------------------------------------ early talker
    async def _early_talker(self, endpoint: Endpoint, ctx: ProbeContext, result: ProbeResult, transcript: Transcript) -> None:
        """Up to EARLY_TALKER_ATTEMPTS connections that speak first; the first refusal decides.

        Against a server that greets at once (Postfix without postscreen) whether our EHLO
        arrives before its greeting is a race: Postfix with smtpd_forbid_unauth_pipelining refused
        70-95 % of single attempts in the lab, so one attempt made early-talker-accepted come and
        go run to run. A refusal is evidence of a check and ends the test; "served" is concluded
        only when every attempt was served (for that Postfix about 0.3**4, under 1 %). An attempt
        that proves nothing (silence, a 4xx greeting such as 421 busy) leaves the verdict absent.
        """
        f = result.facts
        f.update({"smtp.limits.early_talker_rejected": None, "smtp.limits.early_talker_reply": None,
                  "smtp.limits.greeting_delay": None})
        evidence: list[str] = []
        verdict: bool | None = None
        for attempt in range(EARLY_TALKER_ATTEMPTS):
            outcome, text, delay = await self._early_attempt(endpoint, ctx, result, transcript)
            evidence.append(text)
            if attempt == 0:
                f["smtp.limits.greeting_delay"] = delay
            if outcome != EARLY_SERVED:
                verdict = True if outcome == EARLY_REFUSED else None
                break
        else:
            verdict = False
        f["smtp.limits.early_talker_reply"] = evidence[0] if len(evidence) == 1 else " ; ".join(
            f"attempt {i}: {t}" for i, t in enumerate(evidence, 1))
        if verdict is None:
            # Silence or a temporary refusal is not a refusal: the verdict fact is absent (not evaluated).
            f.pop("smtp.limits.early_talker_rejected", None)
        else:
            f["smtp.limits.early_talker_rejected"] = verdict

    async def _early_attempt(
        self, endpoint: Endpoint, ctx: ProbeContext, result: ProbeResult, transcript: Transcript
    ) -> tuple[str, str, float | None]:
        """One connection that sends EHLO before the greeting: (outcome, replies as text, greeting delay)."""
        conn = result.connections
        result.connections += 1
        t0 = time.monotonic()
        # Deliberately speaking before the greeting: this is the test. The EHLO leaves with the
        # connection (see SmtpClient.open's ``early``): sent a few event-loop turns later, it lost
        # the race against the lab Postfix's greeting in 15-90 % of attempts.
        ehlo, shown = f"EHLO {ctx.ehlo_name}\r\n".encode(), f"EHLO {ctx.ehlo_name}  [sent before the greeting]"
        client = await SmtpClient.open(endpoint, ctx, transcript, conn=conn, early=ehlo)
        replies: list[Reply] = []
        delay: float | None = None
        try:
            if client.tls_active:  # implicit TLS: the handshake comes first, then we speak early
                await client.send_raw(ehlo, shown=shown)
            else:
                transcript.add("C", shown, conn)
            try:
                replies.append(await client.read_greeting())
                delay = round(time.monotonic() - t0, 3)
                if replies[0].code == 220:
                    replies.append(await client.read_reply())
            except ConnectionClosed:
                pass
            except ReplyTimeout:
                return EARLY_UNDECIDED, _replies_text(replies) or "no reply", delay
        finally:
            await client.quit()
        codes = [r.code for r in replies]
        text = _replies_text(replies) or "connection closed"
        if not codes:
            # Closed without a word: refusals come with a reply (Postfix 554, Exim 554, postscreen
            # 521); a bare hang-up could as well be a crash or a connection limit.
            return EARLY_UNDECIDED, text, delay
        if len(codes) == 2 and codes[0] == 220 and codes[1] is not None and 200 <= codes[1] < 300:
            return EARLY_SERVED, text, delay
        if any(c is not None and 400 <= c < 500 for c in codes):
            return EARLY_UNDECIDED, text, delay  # 421 busy, a greylisting 450: temporary, not a check
        return EARLY_REFUSED, text, delay

    # ------------------------------------------------------------------ idle timeout
    async def _idle(self, endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript, result: ProbeResult) -> tuple[Session | None, float]:
        conn = result.connections
        result.connections += 1
        try:
            s = await open_session(endpoint, ctx, transcript, conn=conn)
        except ProbeError:
            return None, time.monotonic()
        return s, time.monotonic()


def _replies_text(replies: list[Reply]) -> str:
    """The early talker's replies as evidence: code and first line of each."""
    return " | ".join(f"{r.code} {(r.lines[0] if r.lines else '')[:100]}" for r in replies)


async def _finish_idle(idle: tuple[Session | None, float], watch: float) -> tuple[float | None, float]:
    """Wait (up to ``watch`` more seconds) for the idle connection to be closed; (timeout or None, seconds watched)."""
    s, since = idle
    if s is None:
        return None, 0.0
    try:
        remaining = max(0.05, watch)
        try:
            # A server closing an idle connection sends 421 or just closes; either ends this read.
            reply = await asyncio.wait_for(s.client.reader.read(512), timeout=remaining)
            text = reply.decode("utf-8", "replace").strip()
            s.client.transcript.add("S" if text else "*", text[:200] or "idle connection closed by server", s.client.conn)
            return round(time.monotonic() - since, 1), time.monotonic() - since
        except asyncio.TimeoutError:
            return None, time.monotonic() - since
        except (ConnectionError, OSError):
            return round(time.monotonic() - since, 1), time.monotonic() - since
    finally:
        await s.client.quit()
