"""Pacing for probes that provoke error replies: stay under a server's error tarpit.

One job: decide, from error counts and reply delays, when a behaviour probe should move to a
fresh connection. Mail servers slow down a session that makes many errors (Postfix: after
``smtpd_soft_error_limit`` errors, default 10, hardening guides say 5, every error reply waits
``smtpd_error_sleep_time``, 1 s; at ``smtpd_hard_error_limit`` it says 421). A probe that walks
into that tarpit pays a second per attempt; one that opens a fresh connection before it does not.

Postfix delays *every* reply once the session's error count reaches the soft limit (the 6th
error with a limit of 5, but also the RSET or QUIT after the 5th), so the pacer starts with a
budget of errors per connection below the soft limits people set (:data:`DEFAULT_BUDGET`). A
reply that arrives :data:`TARPIT_EXTRA` seconds later than the session's usual replies after some
errors is a tarpit: its error count is the server's limit, and the budget shrinks to one less,
so later connections stop before it (and the tarpitted connection is left without waiting for 221). When even the first error of a
fresh connection is slow, the delay is not per session and new connections would not help: the
pacer then stops asking for them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from smtpaudit.probes.smtp.client import Reply, SmtpClient

# Below Postfix's soft limit in hardened configurations (5): with 4 errors made, no reply waits.
DEFAULT_BUDGET = 4
# A reply this much slower than the session's prompt replies counts as delayed on purpose.
TARPIT_EXTRA = 0.5
# Prompt replies remembered for the baseline (a median, so one slow reply does not move it).
BASELINE_SAMPLES = 5


@dataclass
class ErrorPacer:
    """Counts error replies per connection and learns the server's tarpit from delayed replies."""

    budget: int = DEFAULT_BUDGET
    extra: float = TARPIT_EXTRA
    errors: int = 0  # error replies on the current connection
    connections: int = 0
    delayed: bool = False  # the current connection answered an error late
    tarpit_after: int | None = None  # prompt errors per connection before the first delayed one
    per_session: bool = True  # False once a fresh connection was slow from its first error
    delays: list[float] = field(default_factory=list)  # seconds of each delayed reply
    _prompt: list[float] = field(default_factory=list)

    def new_connection(self) -> None:
        self.connections += 1
        self.errors = 0
        self.delayed = False

    def exhausted(self) -> bool:
        """True when the current connection should be replaced before the next error-prone attempt."""
        if not self.per_session:
            return False  # every connection is slow from the start: reconnecting only costs more
        return self.delayed or self.errors >= self.budget

    def baseline(self) -> float | None:
        return statistics.median(self._prompt) if self._prompt else None

    def observe(self, reply: Reply, seconds: float) -> None:
        """Account for one reply and how long it took."""
        base = self.baseline()
        error = reply.code >= 400
        late = base is not None and seconds >= base + self.extra
        if late and (error or self.errors):
            self.delays.append(round(seconds, 3))
            if not self.delayed:
                self.delayed = True
                if self.errors == 0:
                    # Slow from the first error of a connection: not a per-session tarpit.
                    self.per_session = False
                else:
                    # The errors made so far trigger the delay (the reply before was prompt, so the
                    # limit is exactly this count); one fewer keeps every reply, QUIT's too, prompt.
                    limit = self.errors
                    self.tarpit_after = limit if self.tarpit_after is None else min(self.tarpit_after, limit)
                    self.budget = max(1, min(self.budget, limit - 1))
        elif not late and len(self._prompt) < BASELINE_SAMPLES:
            self._prompt.append(seconds)
        if error:
            self.errors += 1

    def seed(self, seconds: float) -> None:
        """A prompt reply seen outside ``command`` (greeting, EHLO) to start the baseline."""
        if len(self._prompt) < BASELINE_SAMPLES:
            self._prompt.append(seconds)

    async def command(self, client: SmtpClient, line: str) -> Reply:
        """Send one command, time its reply and account for it."""
        t0 = time.monotonic()
        reply = await client.command(line)
        self.observe(reply, time.monotonic() - t0)
        return reply

    def facts(self) -> dict[str, object]:
        return {"tarpit_after": self.tarpit_after, "tarpit_per_session": self.per_session if self.delays else None,
                "delayed_replies": len(self.delays)}


async def paced(s: object, line: str) -> Reply:
    """``s.client.command(line)``, timed and counted by ``s.pacer`` when the session has one."""
    pacer: ErrorPacer | None = getattr(s, "pacer", None)
    client: SmtpClient = s.client  # type: ignore[attr-defined]
    if pacer is None:
        return await client.command(line)
    return await pacer.command(client, line)
