"""One hand-made TLS/SSL hello exchange over an already-open stream, turned into a typed outcome.

``exchange`` writes a ClientHello and reads the server's answer with a deadline and byte caps,
until it has what the caller asked for (the ServerHello, or the whole first flight up to
ServerHelloDone). Whatever the server does — answer, alert, garbage, a huge record, a reset,
silence — the result is a ``HelloOutcome`` whose ``kind`` says which; nothing is raised.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable
from dataclasses import dataclass, field

from smtpaudit.probes.tls import codec
from smtpaudit.probes.tls.codec import (
    Alert,
    HandshakeMessage,
    Malformed,
    Record,
    ServerHello,
    ServerKeyExchange,
    SSLv2Error,
    SSLv2ServerHello,
)

# Outcome kinds. "hello" and "sslv2_hello" mean the server picked something from our offer.
HELLO = "hello"
SSLV2_HELLO = "sslv2_hello"
ALERT = "alert"  # TLS alert or SSLv2 ERROR instead of a hello
CLOSED = "closed"  # EOF before a complete hello
RESET = "reset"
TIMEOUT = "timeout"
GARBAGE = "garbage"  # not TLS (reason in detail): bad bytes, huge lengths, truncated structures

REJECTIONS = (ALERT, CLOSED, RESET)


@dataclass
class HelloOutcome:
    kind: str
    detail: str = ""
    server_hello: ServerHello | None = None
    sslv2: SSLv2ServerHello | None = None
    alert: Alert | None = None
    certificates: list[bytes] = field(default_factory=list)
    key_exchange: ServerKeyExchange | None = None
    ocsp_stapled: bool = False
    certificate_request: bool = False
    bytes_received: int = 0
    elapsed: float = 0.0
    first_bytes: bytes = b""  # the start of what the server sent, for evidence

    @property
    def accepted(self) -> bool:
        return self.kind in (HELLO, SSLV2_HELLO)

    @property
    def silent(self) -> bool:
        """Timed out without a byte from the server after our hello."""
        return self.kind == TIMEOUT and not self.bytes_received

    @property
    def rejected(self) -> bool:
        """The server clearly said no (alert, orderly close or reset right after our hello)."""
        return self.kind in REJECTIONS

    def describe(self) -> str:
        if self.kind == HELLO and self.server_hello is not None:
            sh = self.server_hello
            what = "HelloRetryRequest" if sh.is_hrr else "ServerHello"
            return f"{what} version=0x{sh.negotiated_version:04X} suite=0x{sh.cipher_suite:04X}"
        if self.kind == SSLV2_HELLO and self.sslv2 is not None:
            return f"SSLv2 SERVER-HELLO with {len(self.sslv2.cipher_specs)} cipher specs"
        if self.kind == ALERT and self.alert is not None:
            return f"alert {self.alert.name} (level {self.alert.level})"
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


# Silence tolerated after the ServerHello before the answer counts as decided without its tail:
# at least TAIL_MIN seconds, or TAIL_FACTOR times as long as the ServerHello took to come.
TAIL_MIN = 1.0
TAIL_FACTOR = 4.0


async def exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hello: bytes,
    *,
    timeout: float,
    full_flight: bool = False,
    kx_for: Callable[[int], str] | None = None,
    sslv2: bool = False,
    max_bytes: int = 512 * 1024,
) -> HelloOutcome:
    """Send ``hello`` and read the answer.

    ``full_flight``: for TLS <= 1.2, keep reading after the ServerHello until ServerHelloDone to
    collect the certificate chain and the ServerKeyExchange; ``kx_for`` maps the chosen suite to
    its key-exchange family (from the registry), needed to decode the latter. Returns as soon as the answer is
    decided: the caller closes the connection.
    """
    started = time.monotonic()
    deadline = started + timeout
    parser = codec.FlightParser(expect_sslv2=sslv2, max_bytes=max_bytes)
    out = HelloOutcome(kind=TIMEOUT)
    seen = bytearray()

    def finish(kind: str, detail: str = "") -> HelloOutcome:
        out.kind = kind
        out.detail = detail
        out.elapsed = time.monotonic() - started
        out.bytes_received = parser.total
        out.first_bytes = bytes(seen[:64])
        return out

    try:
        writer.write(hello)
        await asyncio.wait_for(writer.drain(), timeout=max(deadline - time.monotonic(), 0.001))
    except (ConnectionResetError, BrokenPipeError) as exc:
        return finish(RESET, f"while sending hello: {exc.__class__.__name__}")
    except (asyncio.TimeoutError, TimeoutError):
        return finish(TIMEOUT, "server did not take our hello")
    except OSError as exc:
        return finish(RESET, f"while sending hello: {exc}")

    got_hello = False
    tail = timeout  # after the ServerHello: how long the rest of the flight may pause
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return finish(TIMEOUT, "no complete answer before the deadline" + (" (after ServerHello)" if got_hello else ""))
        try:
            data = await asyncio.wait_for(reader.read(16384), timeout=min(remaining, tail) if got_hello else remaining)
        except (asyncio.TimeoutError, TimeoutError):
            if got_hello:
                # The hello was decided; a missing tail (certificate, SKE) is not a rejection.
                return finish(HELLO, "server stopped sending after ServerHello")
            return finish(TIMEOUT, "server sent nothing" if not parser.total else "server stopped mid-message")
        except (ConnectionResetError, BrokenPipeError) as exc:
            if got_hello:
                return finish(HELLO, "connection reset after ServerHello")
            return finish(RESET, exc.__class__.__name__)
        except OSError as exc:
            if got_hello:
                return finish(HELLO, f"connection error after ServerHello: {exc}")
            return finish(RESET, str(exc))
        if not data:
            if got_hello:
                return finish(HELLO, "connection closed after ServerHello")
            return finish(CLOSED, "connection closed" + (f" after {parser.total} bytes" if parser.total else ""))
        if len(seen) < 64:
            seen += data[: 64 - len(seen)]
        try:
            events = parser.feed(data)
        except Malformed as exc:
            if got_hello:
                return finish(HELLO, f"unparsable data after ServerHello ({exc})")
            return finish(GARBAGE, str(exc))
        for ev in events:
            if isinstance(ev, Alert):
                if got_hello:
                    # An alert after the ServerHello (e.g. no usable certificate) still tells us what
                    # the server picked; keep the hello, note the alert.
                    out.alert = ev
                    return finish(HELLO, f"alert {ev.name} after ServerHello")
                out.alert = ev
                return finish(ALERT, ev.name)
            if isinstance(ev, SSLv2Error):
                return finish(ALERT, f"SSLv2 ERROR code {ev.code}")
            if isinstance(ev, SSLv2ServerHello):
                out.sslv2 = ev
                return finish(SSLV2_HELLO)
            if isinstance(ev, Record):
                if got_hello and ev.content_type in (codec.CT_CHANGE_CIPHER_SPEC, codec.CT_APPLICATION_DATA):
                    return finish(HELLO)
                if ev.content_type == codec.CT_APPLICATION_DATA and not got_hello:
                    return finish(GARBAGE, "application data before ServerHello")
                continue
            assert isinstance(ev, HandshakeMessage)
            try:
                if not got_hello:
                    if ev.msg_type != codec.HT_SERVER_HELLO:
                        return finish(GARBAGE, f"handshake message type {ev.msg_type} before ServerHello")
                    sh = codec.parse_server_hello(ev.body)
                    out.server_hello = sh
                    got_hello = True
                    # A server sends its whole first flight at once: a pause after the ServerHello
                    # is a stall (OpenSMTPD's broken key engine), not worth the full hello timeout.
                    tail = max(TAIL_MIN, TAIL_FACTOR * (time.monotonic() - started))
                    if not full_flight or sh.is_hrr or sh.negotiated_version >= 0x0304:
                        # TLS 1.3: everything after the ServerHello is encrypted.
                        return finish(HELLO)
                    continue
                if ev.msg_type == codec.HT_CERTIFICATE:
                    out.certificates = codec.parse_certificate_list(ev.body)
                elif ev.msg_type == codec.HT_SERVER_KEY_EXCHANGE:
                    kx = kx_for(out.server_hello.cipher_suite) if kx_for and out.server_hello else ""
                    out.key_exchange = codec.parse_server_key_exchange(ev.body, kx)
                elif ev.msg_type == codec.HT_CERTIFICATE_STATUS:
                    out.ocsp_stapled = True
                elif ev.msg_type == codec.HT_CERTIFICATE_REQUEST:
                    out.certificate_request = True
                elif ev.msg_type == codec.HT_SERVER_HELLO_DONE:
                    return finish(HELLO)
            except Malformed as exc:
                if got_hello and out.server_hello is not None:
                    return finish(HELLO, f"malformed {ev.msg_type} after ServerHello ({exc})")
                return finish(GARBAGE, str(exc))
        if parser.error is not None:
            if got_hello:
                return finish(HELLO, f"unparsable data after ServerHello ({parser.error})")
            return finish(GARBAGE, str(parser.error))
