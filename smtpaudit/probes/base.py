"""The probe contract: what every probe receives, returns, and may raise.

A probe connects to one endpoint, observes, and returns facts (plain JSON values under dotted
names declared in ``smtpaudit/facts/*.toml``) plus the transcript behind them. A probe never
decides what is good or bad; that is the rules' job. A failed probe is data (``ProbeResult`` with
``status="error"``), never an exception escaping to the scanner.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol

from smtpaudit.probes.net import Leases, SocketSlots
from smtpaudit.targets import Endpoint


@dataclass(frozen=True)
class Timeouts:
    """Per-phase timeouts in seconds. ``endpoint`` is the overall deadline for all probes of one endpoint."""

    connect: float = 10.0
    greeting: float = 30.0
    command: float = 20.0
    tls: float = 15.0
    # Silence is detected, not waited out (SilenceWatch: 40-61 s for a silent server), so the
    # deadline only cuts servers that answer slowly. Measured (default scan, loopback): lab servers
    # 0.6-26 s, 48 s at most with --intrusive; a server delaying *every* reply by 0.5 s takes
    # 89 s, by 0.75 s 133 s. 120 s keeps all of these but the last, and ends a hopeless one a
    # minute sooner than 180 s did (docs/architecture.md, "Endpoint deadline").
    endpoint: float = 120.0


@dataclass(frozen=True)
class Limits:
    """Caps on what a server may send us: hostile input is normal input."""

    max_line: int = 4096  # RFC 5321 says 512 octets per reply line; real servers exceed it a little
    max_reply_lines: int = 200
    max_session_bytes: int = 1_000_000


class StallBudget:
    """Seconds one endpoint may keep us waiting in stalled TLS handshakes, summed over its connections.

    A server that goes silent after STARTTLS would otherwise cost a full TLS timeout on every
    connection of every probe, up to the endpoint deadline. Each handshake that takes longer than
    ``grace`` is charged (beyond the grace); once the budget is spent, handshakes get only
    ``grace`` seconds, so a prompt server is unaffected and a stalling one fails fast (facts
    absent, rules "not evaluated" with the reason, never a pass). Greetings are not charged yet:
    after an intrusive connection burst, servers legitimately greet late for a while.
    """

    def __init__(self, seconds: float, grace: float = 1.0) -> None:
        # Greetings and TLS handshakes have a budget each: a server whose handshakes stall
        # (OpenSMTPD's broken key engine) still greets promptly, and plain SMTP probes go on.
        self.budget = seconds
        self.remaining = {"greeting": seconds, "tls": seconds}
        self.grace = grace

    def spent(self, kind: str = "greeting") -> bool:
        return self.remaining[kind] <= 0

    def cap(self, timeout: float, kind: str = "greeting") -> float:
        """The timeout a wait of this kind may use now."""
        return min(timeout, max(self.remaining[kind], 0.0) + self.grace)

    def charge(self, waited: float, kind: str = "greeting") -> None:
        if waited > self.grace:
            self.remaining[kind] -= waited - self.grace


class SilenceWatch:
    """Whether an endpoint has shown that it goes silent at a step every server answers at once.

    Steps: ``greeting`` (dripped: its bytes spread over more than a second), ``ehlo`` (the reply
    to EHLO), ``after_ehlo`` (the reply to the first command after EHLO: HELP, STARTTLS, MAIL,
    VRFY...), ``starttls`` (the reply to STARTTLS) and ``tls`` (the server's first TLS bytes after
    220 to STARTTLS or on an implicit-TLS socket, for any hello or handshake). A step that waited
    out its whole timeout with nothing back (or a dripped greeting) is ``silent``; any answer
    there is ``answered`` and disarms the
    step for good: the server does speak there, so a later silence is about what was asked (an
    SSLv3 hello, an AUTH it never answers) and is waited out as usual ("silence is not refusal").
    Once ``limit`` connections were silent at a step the endpoint never answered, ``gave_up`` is
    true and the remaining waits at that step fail at once (``Silenced``, reason read_timeout):
    their facts stay absent, their rules are not evaluated, the endpoint is incomplete.

    Unlike a time budget over every read, this cannot fire on waits a probe makes on purpose, nor
    on a server that is merely slow after an intrusive burst: the session probe's own EHLO, HELP
    and STARTTLS handshake disarm every step on any server that answers them once.
    """

    STEPS = ("greeting", "ehlo", "after_ehlo", "starttls", "tls")

    def __init__(self, limit: int = 3) -> None:
        self.limit = limit
        self.silences = dict.fromkeys(self.STEPS, 0)
        self.heard = dict.fromkeys(self.STEPS, False)

    def silent(self, step: str) -> None:
        self.silences[step] += 1

    def answered(self, step: str) -> None:
        self.heard[step] = True

    def saw(self, step: str, *, silent: bool) -> None:
        """One wait at ``step`` ended: in silence (``silent``) or with an answer."""
        if silent:
            self.silent(step)
        else:
            self.answered(step)

    def gave_up(self, step: str) -> bool:
        return not self.heard[step] and self.silences[step] >= self.limit

    def why(self, step: str) -> str:
        n = self.silences[step]
        if step == "greeting":
            return (f"not waited for: the server dripped its greeting (bytes spread over more than a "
                    f"second) on {n} connections and never sent one at once")
        what = {"ehlo": "to EHLO", "after_ehlo": "to the first command after EHLO", "starttls": "to STARTTLS",
                "tls": "to a TLS hello or handshake"}[step]
        return f"not waited for: the server sent nothing {what} on {n} connections and never answered there"


@dataclass(frozen=True)
class ProbeSettings:
    """What the probes of every endpoint of a scan share: timing, caps, permissions, per-probe options."""

    ehlo_name: str = "smtpaudit.example.net"
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    intrusive: bool = False
    # Endpoints at once. benchmarks/fleet.py, 1,000 loopback endpoints on 2 cores: 16 -> 1,237/min,
    # 64 -> 1,591/min (61 MB peak RSS), 128 -> 1,773/min (73 MB); one process is CPU-bound from here on.
    concurrency: int = 64
    per_host: int = 2
    probe_options: Mapping[str, Any] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


@dataclass
class ProbeContext:
    """Everything a probe may use besides the endpoint. Shared by all probes of one endpoint."""

    ehlo_name: str = "smtpaudit.example.net"
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    intrusive: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    # The sockets this probe may hold at once (its share of --per-host, reserved by the probe
    # template); every connection takes one in probes/net.py. ``leases`` are reclaimed at the end.
    host_slots: SocketSlots | None = None
    leases: Leases = field(default_factory=Leases)
    # Secrets that must never appear in transcripts or reports.
    secrets: tuple[str, ...] = ()
    # Shared by the probes of one endpoint: bounds the time spent waiting on a stalling server.
    stall: StallBudget | None = None
    # Shared by the probes of one endpoint: silence at a step every server answers is detected
    # after a few connections and not waited out again.
    silence: SilenceWatch | None = None


@dataclass
class TranscriptLine:
    """One line of the conversation: ``C`` (we sent), ``S`` (server sent), ``*`` (event, e.g. TLS up)."""

    t: float  # seconds since the probe connection started
    direction: str
    text: str
    conn: int = 0  # connection number within the probe

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "dir": self.direction, "text": self.text, "conn": self.conn}


class ProbeError(Exception):
    """A probe could not finish. ``reason`` is a short machine token, ``message`` says why for humans."""

    reason: str = "protocol"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class ConnectFailed(ProbeError):
    reason = "connect"


class ConnectTimeout(ConnectFailed):
    reason = "connect_timeout"


class ReplyTimeout(ProbeError):
    reason = "read_timeout"


class Silenced(ReplyTimeout):
    """Not waited for: the endpoint already went silent at this step on several connections (SilenceWatch)."""


class ReplyTooLarge(ProbeError):
    reason = "reply_too_large"


class ConnectionClosed(ProbeError):
    reason = "connection_closed"


class SmtpProtocolError(ProbeError):
    reason = "protocol"


class TlsHandshakeFailed(ProbeError):
    reason = "tls_handshake"


class ServiceUnavailable(ProbeError):
    """The server answered 421 (or 554 at greeting): it refuses to talk to us now."""

    reason = "service_unavailable"


# A 421 greeting from a busy server: reconnect after each of these waits (2 s in all), then give up.
# Exim's smtp_accept_max counts children it has not reaped yet, and a child whose TLS negotiation
# did not finish (every hand-made hello of a suite scan) sleeps ~0.45 s before it exits: after a
# quick run of short connections Exim says 421 for up to half a second, so the waits poll that
# half second finely, then grow for a server that really is full.
BUSY_DELAYS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7)
BUSY_RETRIES = len(BUSY_DELAYS)


def busy_delay(attempt: int) -> float:
    """Seconds to wait before reconnection ``attempt`` (0-based) after a 421 greeting."""
    return BUSY_DELAYS[min(attempt, BUSY_RETRIES - 1)]


@dataclass
class ProbeResult:
    """What one probe run produced. Facts are kept even when the probe failed part-way."""

    probe: str
    status: str = "ok"  # ok | error | skipped
    facts: dict[str, Any] = field(default_factory=dict)
    transcript: list[TranscriptLine] = field(default_factory=list)
    error_reason: str | None = None
    error_message: str | None = None
    started: float = field(default_factory=time.time)
    duration: float = 0.0
    connections: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "status": self.status,
            "error_reason": self.error_reason,
            "error_message": self.error_message,
            "duration": round(self.duration, 3),
            "connections": self.connections,
        }


class Probe(Protocol):
    # ``sockets`` (optional class attribute, default 1): how many connections the probe holds at
    # once; the template reserves that many of the host's slots before it starts. ``sockets_min``
    # (optional): start with fewer, down to this many, when the rest are taken by another probe.
    """A probe family. ``name`` matches a ``smtpaudit/facts/<name>.toml`` catalog file.

    ``run`` must return a ProbeResult (facts it managed to gather, plus error fields when it
    failed) and must not raise for anything the server does. ``prior`` holds facts from probes
    that ran earlier for the same endpoint (see ``after``), e.g. the TLS probe reads
    ``smtp.starttls.offered``.
    """

    name: ClassVar[str]
    intrusive: ClassVar[bool]
    after: ClassVar[tuple[str, ...]]

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult: ...
