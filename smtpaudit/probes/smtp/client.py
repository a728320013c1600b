"""A cautious asyncio SMTP client: reads replies correctly from untrusted servers and logs everything.

It assembles multi-line replies (``250-...`` / ``250 ...``), tolerates bare LF, caps line length,
lines per reply and bytes per session, puts a timeout on every read, and records a transcript
with relative timestamps and redacted secrets. It never speaks before the server's greeting.
It knows nothing about what is good or bad.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Iterable

from smtpaudit.probes.net import open_connection
from smtpaudit.probes.base import (
    BUSY_RETRIES,
    ConnectFailed,
    ConnectionClosed,
    ConnectTimeout,
    Limits,
    ProbeContext,
    ReplyTimeout,
    ReplyTooLarge,
    ServiceUnavailable,
    Silenced,
    SmtpProtocolError,
    TlsHandshakeFailed,
    TranscriptLine,
    busy_delay,
)
from smtpaudit.targets import Endpoint, Mode

_REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -]?)(.*)$", re.DOTALL)
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
REDACTED = "[redacted]"
# A reply line whose bytes take longer than this from the first to the last is dripped on purpose
# (a tarpit): servers write a line at once, even when they send it late.
DRIP_SECONDS = 1.0


@dataclass
class Reply:
    """One complete SMTP reply: a code and its text lines (without the code prefix)."""

    code: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        m = _ENHANCED.match(self.lines[0]) if self.lines else None
        return m.group(1) if m else None

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "text": self.text}


class Transcript:
    """The C:/S: record of one probe's connections, shared by all of them; secrets are scrubbed."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.lines: list[TranscriptLine] = []
        self._t0 = time.monotonic()
        self._secrets = [s for s in secrets if s]

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def add(self, direction: str, text: str, conn: int = 0) -> None:
        # Server text is kept verbatim (escaped only at render time) but bounded in length.
        if len(text) > 1000:
            text = text[:1000] + f"... [{len(text) - 1000} more characters]"
        self.lines.append(TranscriptLine(time.monotonic() - self._t0, direction, self._scrub(text), conn))


def _printable(raw: bytes) -> str:
    """Decode server bytes for the record without letting control characters through."""
    text = raw.decode("utf-8", errors="replace")
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch):02x}" for ch in text)


def _sni(host: str) -> str | None:
    """RFC 6066 section 3: IP literals are not sent as server names."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return host


def permissive_tls_context() -> ssl.SSLContext:
    """A context that completes handshakes with anything, for observing (certificates are judged elsewhere)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    return ctx


class SmtpClient:
    """One SMTP connection. Create with ``await SmtpClient.open(...)``; always ``await close()``."""

    def __init__(
        self,
        endpoint: Endpoint,
        ctx: ProbeContext,
        transcript: Transcript,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: int,
    ) -> None:
        self.endpoint = endpoint
        self.ctx = ctx
        self.transcript = transcript
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.limits: Limits = ctx.limits
        self.bytes_read = 0
        self.tls_active = False
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.closed = False
        self.busy_retries = 0  # connections that got a 421 greeting before this one (open_greeted)
        # The SilenceWatch steps the next reply read belongs to ("ehlo", "after_ehlo", "starttls").
        self._steps: tuple[str, ...] = ()
        # While a greeting is read: the longest first-to-last-byte time of its lines, and when the
        # first byte of a line still unfinished came (read_greeting's drip detection).
        self._spread: float | None = None
        self._dripping: float | None = None

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        ctx: ProbeContext,
        transcript: Transcript,
        *,
        conn: int = 0,
        implicit_tls: bool | None = None,
        tls_context: ssl.SSLContext | None = None,
        early: bytes | None = None,
    ) -> "SmtpClient":
        """Connect (and for implicit-TLS endpoints, handshake). Does not read the greeting.

        ``early``: bytes sent the moment the TCP connection is up, before any greeting can have
        been read (the early-talker test; plain connections only). The caller records them."""
        use_tls = endpoint.mode is Mode.IMPLICIT if implicit_tls is None else implicit_tls
        watch = ctx.silence
        given_up = [s for s in ("greeting", "ehlo", "after_ehlo") if watch is not None and watch.gave_up(s)]
        if watch is not None and given_up:
            # Every SMTP dialogue passes that step: another connection would only stall there too.
            transcript.add("*", f"no connection opened: {watch.why(given_up[0])}", conn)
            raise Silenced(f"{endpoint.id}: no connection opened: {watch.why(given_up[0])}")
        transcript.add("*", f"connect {endpoint.connect_host}:{endpoint.port}" + (" (implicit TLS)" if use_tls else ""), conn)
        try:
            reader, writer = await open_connection(
                endpoint.connect_host,
                endpoint.port,
                slots=ctx.host_slots,
                leases=ctx.leases,
                timeout=ctx.timeouts.connect + (ctx.timeouts.tls if use_tls else 0),
                limit=ctx.limits.max_line + 2,
                ssl=(tls_context or permissive_tls_context()) if use_tls else None,
                server_hostname=_sni(endpoint.host) if use_tls else None,
                ssl_handshake_timeout=ctx.timeouts.tls if use_tls else None,
                first_bytes=None if use_tls else early,
            )
        except asyncio.TimeoutError:
            transcript.add("*", "connect timed out", conn)
            raise ConnectTimeout(f"{endpoint.id}: no TCP connection within {ctx.timeouts.connect:g}s") from None
        except ssl.SSLError as exc:
            transcript.add("*", f"TLS handshake failed: {exc.reason or exc}", conn)
            raise TlsHandshakeFailed(f"{endpoint.id}: implicit TLS handshake failed: {exc.reason or exc}") from None
        except ConnectionRefusedError:
            transcript.add("*", "connection refused", conn)
            raise ConnectFailed(f"{endpoint.id}: connection refused", reason="connect_refused") from None
        except socket.gaierror as exc:
            transcript.add("*", f"name resolution failed: {exc.strerror}", conn)
            raise ConnectFailed(f"{endpoint.host}: cannot resolve host name ({exc.strerror})", reason="dns") from None
        except OSError as exc:
            transcript.add("*", f"connect failed: {exc.strerror or exc}", conn)
            raise ConnectFailed(f"{endpoint.id}: {exc.strerror or exc}") from None
        client = cls(endpoint, ctx, transcript, reader, writer, conn)
        if use_tls:
            client._note_tls()
        return client

    def _note_tls(self) -> None:
        ssl_obj = self.writer.get_extra_info("ssl_object")
        self.tls_active = True
        if ssl_obj is not None:
            self.tls_version = ssl_obj.version()
            cipher = ssl_obj.cipher()
            self.tls_cipher = cipher[0] if cipher else None
        self.transcript.add("*", f"TLS established: {self.tls_version} {self.tls_cipher}", self.conn)

    async def _timed_line(self) -> bytes:
        """One line, noting how long its bytes took from the first to the last (``self._spread``)."""
        first = await self.reader.readexactly(1)
        t_first = time.monotonic()
        self._dripping = t_first  # a byte came: a timeout from here on is a drip, not silence
        rest = b"" if first == b"\n" else await self.reader.readuntil(b"\n")
        self._dripping = None
        self._spread = max(self._spread or 0.0, time.monotonic() - t_first)
        return first + rest

    async def _read_line(self, timeout: float, *, charged: bool = False) -> bytes:
        # Only waits nobody asked for are charged to the stall budget (greetings; the TLS handshake
        # in upgrade_tls): probes that wait on purpose (smuggling, idle watch) must not spend it.
        stall = self.ctx.stall if charged else None
        wanted = timeout
        if stall is not None:
            timeout = stall.cap(timeout)
        t0 = time.monotonic()
        try:
            if self._spread is None:
                raw = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout=timeout)
            else:
                raw = await asyncio.wait_for(self._timed_line(), timeout=timeout)
        except asyncio.TimeoutError:
            if stall is not None:
                stall.charge(time.monotonic() - t0)
            if timeout < wanted:
                self.transcript.add("*", f"no reply within {timeout:g}s (the server already stalled this scan too long)", self.conn)
                raise ReplyTimeout(f"{self.endpoint.id}: server stalled: sent nothing for {timeout:g}s after "
                                   "earlier slow or silent replies used up the wait budget") from None
            self.transcript.add("*", f"no reply within {timeout:g}s", self.conn)
            raise ReplyTimeout(f"{self.endpoint.id}: server sent nothing for {timeout:g}s") from None
        except asyncio.LimitOverrunError:
            self.transcript.add("*", f"reply line longer than {self.limits.max_line} bytes", self.conn)
            raise ReplyTooLarge(f"{self.endpoint.id}: reply line longer than {self.limits.max_line} bytes") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self.transcript.add("S", _printable(exc.partial), self.conn)
            self.transcript.add("*", "connection closed by server", self.conn)
            raise ConnectionClosed(f"{self.endpoint.id}: server closed the connection") from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.transcript.add("*", f"connection error: {exc}", self.conn)
            raise ConnectionClosed(f"{self.endpoint.id}: connection lost ({exc})") from None
        if stall is not None:
            stall.charge(time.monotonic() - t0)
        self.bytes_read += len(raw)
        if self.bytes_read > self.limits.max_session_bytes:
            raise ReplyTooLarge(f"{self.endpoint.id}: server sent more than {self.limits.max_session_bytes} bytes")
        return raw

    async def read_reply(self, timeout: float | None = None, *, charged: bool = False) -> Reply:
        """Read one complete (possibly multi-line) reply, or raise a ProbeError.

        The replies to EHLO, to the first command after it and to STARTTLS are watched steps
        (``SilenceWatch``): a full command timeout there is reported as silence, any reply as an
        answer; once the endpoint has gone silent there often enough and never answered, the wait
        is not made."""
        timeout = self.ctx.timeouts.command if timeout is None else timeout
        self._refuse_given_up()
        steps, self._steps = self._steps, ()
        watch = self.ctx.silence
        if watch is None or not steps:
            return await self._read_full_reply(timeout, charged=charged)
        try:
            reply = await self._read_full_reply(timeout, charged=charged)
        except ReplyTimeout:
            # Only a full wait is silence: a probe's own shorter wait proves nothing.
            if timeout >= self.ctx.timeouts.command:
                for step in steps:
                    watch.silent(step)
            raise
        for step in steps:
            watch.answered(step)
        return reply

    def _refuse_given_up(self) -> None:
        """Raise Silenced when the next reply belongs to a step the endpoint was given up at."""
        watch = self.ctx.silence
        for step in self._steps if watch is not None else ():
            if watch.gave_up(step):
                self._steps = ()
                why = watch.why(step)
                self.transcript.add("*", why, self.conn)
                raise Silenced(f"{self.endpoint.id}: {why}")

    def watch_next(self, step: str) -> None:
        """The next reply read also belongs to ``step`` of the ``SilenceWatch`` (for commands sent
        with send_raw, or a STARTTLS that is also the first command after EHLO)."""
        if step not in self._steps:
            self._steps += (step,)

    async def _read_full_reply(self, timeout: float, *, charged: bool = False) -> Reply:
        deadline = time.monotonic() + timeout
        code: int | None = None
        lines: list[str] = []
        while True:
            remaining = max(0.05, deadline - time.monotonic())
            raw = await self._read_line(remaining, charged=charged)
            self.transcript.add("S", _printable(raw.rstrip(b"\r\n")), self.conn)
            m = _REPLY_LINE.match(raw.rstrip(b"\r\n"))
            if m is None:
                raise SmtpProtocolError(
                    f"{self.endpoint.id}: malformed reply line {_printable(raw[:80].rstrip())!r}"
                )
            line_code = int(m.group(1))
            if code is None:
                code = line_code
            elif line_code != code:
                raise SmtpProtocolError(f"{self.endpoint.id}: reply code changed from {code} to {line_code} mid-reply")
            lines.append(_printable(m.group(3)))
            if len(lines) > self.limits.max_reply_lines:
                raise ReplyTooLarge(f"{self.endpoint.id}: reply longer than {self.limits.max_reply_lines} lines")
            if m.group(2) != b"-":
                return Reply(code, lines)

    @classmethod
    async def open_greeted(
        cls, endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript, *, conn: int = 0, **kwargs: object
    ) -> tuple["SmtpClient", Reply]:
        """``open`` + ``read_greeting``, with a fresh connection after a 421 greeting (up to
        BUSY_RETRIES times, waiting busy_delay(n): 2 s in all). A busy server says 421 at the greeting when it
        still counts our previous, already closed connections (Exim's ``smtp_accept_max``, 20 by
        default, counts children it has not reaped yet; Postfix's anvil limits): a moment later it
        answers again. A server that keeps saying 421 gets the last 421 back, as before."""
        attempt = 0
        while True:
            client = await cls.open(endpoint, ctx, transcript, conn=conn, **kwargs)  # type: ignore[arg-type]
            try:
                greeting = await client.read_greeting()
            except BaseException:
                await client.close()
                raise
            if greeting.code != 421 or attempt >= BUSY_RETRIES:
                client.busy_retries = attempt
                return client, greeting
            wait = busy_delay(attempt)
            attempt += 1
            await client.close()
            transcript.add("*", f"greeting 421 (server busy): new connection in {wait:g}s", conn)
            await asyncio.sleep(wait)

    async def read_greeting(self) -> Reply:
        """Wait (up to the greeting timeout) for the banner; we never speak first.

        A late greeting is normal (Postfix's postscreen, a server busy after a burst) and is
        waited for; a *dripped* one (a line whose bytes take more than DRIP_SECONDS from first to
        last: a tarpit) is a ``SilenceWatch`` step: after a few such connections the endpoint's
        remaining greetings are not waited for (``open`` refuses new connections; a connection
        already open reads its greeting: probes that judge a missing greeting, the early-talker
        test, must never see a greeting that was not waited for)."""
        watch = self.ctx.silence
        if watch is None:
            return await self.read_reply(self.ctx.timeouts.greeting)
        self._spread, self._dripping = 0.0, None
        try:
            reply = await self.read_reply(self.ctx.timeouts.greeting)
        except ReplyTimeout:
            if self._dripping is not None:
                watch.silent("greeting")  # bytes came, the line never ended
            raise
        finally:
            spread, self._spread = self._spread or 0.0, None
        watch.saw("greeting", silent=spread > DRIP_SECONDS)
        return reply

    async def send_line(self, line: str, *, shown: str | None = None) -> None:
        """Send one command line; ``shown`` replaces it in the transcript (for secrets)."""
        await self.send_lines([line], shown=shown)

    async def send_lines(self, lines: list[str], *, shown: str | None = None) -> None:
        """Send command lines in one write (pipelined, RFC 2920): written one by one, each reply
        group waits on the peer's delayed ACK (Nagle), ~40 ms per batch against Postfix.
        ``shown`` replaces a single line in the transcript (for secrets)."""
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("command lines must not contain CR or LF")
        for line in lines:
            self.transcript.add("C", shown if shown is not None else line, self.conn)
        await self.send_raw("".join(line + "\r\n" for line in lines).encode("utf-8", errors="replace"))

    async def send_raw(self, data: bytes, *, shown: str | None = None) -> None:
        if shown is not None:
            self.transcript.add("C", shown, self.conn)
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout=self.ctx.timeouts.command)
            self._ack_now()
        except asyncio.TimeoutError:
            raise ReplyTimeout(f"{self.endpoint.id}: server stopped reading our data") from None
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.transcript.add("*", f"connection error while sending: {exc}", self.conn)
            raise ConnectionClosed(f"{self.endpoint.id}: connection lost while sending ({exc})") from None

    def _ack_now(self) -> None:
        """Acknowledge what has arrived at once rather than with the next delayed ACK.

        After a TLS 1.3 handshake the server's session tickets sit unacknowledged in our buffer;
        the reply to our next command then waits behind them (Nagle on the server) for our
        delayed ACK: ~42 ms on the first command after STARTTLS against Postfix. Linux resets
        TCP_QUICKACK by itself, so it is set again after each write; elsewhere this does nothing.
        """
        quickack = getattr(socket, "TCP_QUICKACK", None)
        sock = self.writer.get_extra_info("socket")
        if quickack is None or sock is None:
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except OSError:
            pass

    def not_closing(self, what: str, reply: Reply) -> Reply:
        """``reply``, unless it is 421: a server closing the channel answered nothing that was
        asked, so no verdict may be drawn from it; the probe ends service_unavailable instead."""
        if reply.code == 421:
            raise ServiceUnavailable(f"{self.endpoint.id}: {what} answered 421 {reply.text[:200]}")
        return reply

    async def command(self, line: str, *, shown: str | None = None, timeout: float | None = None) -> Reply:
        self._refuse_given_up()  # not even sent: its reply would not be waited for
        await self.send_line(line, shown=shown)
        return await self.read_reply(timeout)

    async def ehlo(self, name: str | None = None) -> Reply:
        self._steps = ("ehlo",)
        reply = await self.command(f"EHLO {name or self.ctx.ehlo_name}")
        self._steps = ("after_ehlo",)
        return reply

    async def starttls(self, tls_context: ssl.SSLContext | None = None) -> Reply:
        """Send STARTTLS; on 220 upgrade the connection. Raises TlsHandshakeFailed if the handshake fails."""
        self.watch_next("starttls")
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return reply
        await self.upgrade_tls(tls_context)
        return reply

    async def upgrade_tls(self, tls_context: ssl.SSLContext | None = None) -> None:
        if self.reader._buffer:  # type: ignore[attr-defined]
            # Bytes the server sent after its 220 but before the handshake are an injection risk.
            extra = bytes(self.reader._buffer)  # type: ignore[attr-defined]
            self.transcript.add("*", f"server sent {len(extra)} bytes after 220 before TLS", self.conn)
        stall, watch = self.ctx.stall, self.ctx.silence
        if watch is not None and watch.gave_up("tls"):
            self.transcript.add("*", f"TLS handshake {watch.why('tls')}", self.conn)
            raise Silenced(f"{self.endpoint.id}: STARTTLS handshake {watch.why('tls')}")
        limit = stall.cap(self.ctx.timeouts.tls, "tls") if stall is not None else self.ctx.timeouts.tls
        t0 = time.monotonic()
        try:
            await self.writer.start_tls(
                tls_context or permissive_tls_context(),
                server_hostname=_sni(self.endpoint.host),
                ssl_handshake_timeout=limit,
            )
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
            elapsed = time.monotonic() - t0
            if stall is not None:
                stall.charge(elapsed, "tls")
            # asyncio does not say whether any byte came back, and reports its own handshake
            # timeout as ConnectionAbortedError: a handshake that ran out its whole time is a
            # timeout, one that ended earlier (alert, reset, garbage) is the server's answer.
            timed_out = isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or elapsed >= limit - 0.05
            if watch is not None:
                watch.saw("tls", silent=timed_out)
            text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            self.transcript.add("*", f"TLS handshake failed: {text}", self.conn)
            if timed_out:
                # No verdict from a deadline: whether TLS works stays unknown (fail closed).
                raise ReplyTimeout(f"{self.endpoint.id}: STARTTLS handshake did not finish within {limit:g} s") from None
            raise TlsHandshakeFailed(f"{self.endpoint.id}: STARTTLS handshake failed: {text}") from None
        if stall is not None:
            stall.charge(time.monotonic() - t0, "tls")
        if watch is not None:
            watch.answered("tls")
        self._note_tls()

    async def raw_streams_after_starttls(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Greeting, EHLO, STARTTLS and its 220, then hand back the raw streams for a hand-made handshake.

        For implicit-TLS endpoints open the client with ``implicit_tls=False`` and call
        ``raw_streams()`` instead.
        """
        greeting = await self.read_greeting()
        if greeting.code == 421:
            raise ServiceUnavailable(f"{self.endpoint.id}: greeting 421 {greeting.text[:200]}")
        if greeting.code != 220:
            raise SmtpProtocolError(f"{self.endpoint.id}: greeting {greeting.code}")
        reply = await self.ehlo()
        if reply.code != 250:
            raise SmtpProtocolError(f"{self.endpoint.id}: EHLO refused with {reply.code}")
        self.watch_next("starttls")
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise SmtpProtocolError(f"{self.endpoint.id}: STARTTLS refused with {reply.code} {reply.text}")
        return self.reader, self.writer

    def raw_streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return self.reader, self.writer

    async def quit(self, *, wait: bool = False) -> None:
        """Say goodbye if the connection is still usable; never raises.

        QUIT is sent, its 221 is not waited for by default: the 221 proves nothing, Exim 4.96
        holds it back 200 ms (a corked socket flushed by the kernel's timer) and a tarpit delays
        it by seconds, on every one of a scan's sequential connections. ``wait=True`` reads it.
        """
        if self.closed:
            return
        try:
            await self.send_line("QUIT")
            if wait:
                await self.read_reply(timeout=min(5.0, self.ctx.timeouts.command))
        except Exception:  # noqa: BLE001 - a rude goodbye is not an error worth reporting
            pass
        await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), timeout=2.0)
        except Exception:  # noqa: BLE001 - closing a broken socket may fail in many ways
            pass
