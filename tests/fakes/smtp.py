"""A scriptable fake SMTP server on 127.0.0.1, byte by byte, for edge and hostile cases.

Two ways to drive it:

* ``Script`` items, played in order on each connection: ``Send(b"...")``, ``Delay(seconds)``,
  ``Expect()`` (read one line from the client), ``Close()`` (close), ``Reset()`` (RST via SO_LINGER 0),
  ``Silence()`` (read and never answer).
* A ``responder(line) -> bytes | None`` called for every client line after the scripted greeting
  (``None`` closes the connection), for servers that must answer whole sessions.

Every line the client sent is recorded in ``server.received`` (per connection), so tests can prove
what the scanner did or did not send (e.g. never DATA).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Union


@dataclass
class Send:
    data: bytes


@dataclass
class Delay:
    seconds: float


@dataclass
class Expect:
    """Read one client line (recorded)."""


@dataclass
class Close:
    pass


@dataclass
class Reset:
    pass


@dataclass
class Silence:
    """Keep the connection open, read everything, answer nothing."""


Item = Union[Send, Delay, Expect, Close, Reset, Silence]
Responder = Callable[[str], Union[bytes, "Silence", None]]  # None closes; Silence() stalls


@dataclass
class FakeSmtpServer:
    script: list[Item] = field(default_factory=list)
    responder: Responder | None = None
    received: list[list[str]] = field(default_factory=list)
    connections: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    # When set, "STARTTLS" is answered 220 and the connection upgraded (server side) with this context.
    tls_context: ssl.SSLContext | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        lines: list[str] = []
        self.received.append(lines)
        try:
            for item in self.script:
                if isinstance(item, Send):
                    writer.write(item.data)
                    await writer.drain()
                elif isinstance(item, Delay):
                    await asyncio.sleep(item.seconds)
                elif isinstance(item, Expect):
                    raw = await reader.readline()
                    if not raw:
                        return
                    lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                elif isinstance(item, Close):
                    return
                elif isinstance(item, Reset):
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                elif isinstance(item, Silence):
                    while await reader.read(4096):
                        pass
                    return
            if self.responder is None:
                return
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line)
                if self.tls_context is not None and line.upper() == "STARTTLS":
                    writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                    await writer.drain()
                    try:
                        await writer.start_tls(self.tls_context)
                    except (ssl.SSLError, OSError):
                        return
                    continue
                answer = self.responder(line)
                if answer is None:
                    return
                if isinstance(answer, Silence):
                    # Stall: keep the connection open, read on, answer nothing more.
                    while await reader.read(4096):
                        pass
                    return
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def start(self) -> "FakeSmtpServer":
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()

    async def __aenter__(self) -> "FakeSmtpServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class ThreadedFake:
    """Run a FakeSmtpServer in a background thread with its own loop (for CLI tests that call asyncio.run)."""

    def __init__(self, server: FakeSmtpServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeSmtpServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(5)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def simple_responder(
    *,
    ehlo: list[str] | None = None,
    replies: dict[str, bytes] | None = None,
    default: bytes = b"250 OK\r\n",
) -> Responder:
    """Answer EHLO with ``ehlo`` lines, verbs in ``replies`` (upper-case verb -> bytes), QUIT with 221+close."""
    ehlo = ehlo or ["fake.example.test", "PIPELINING", "SIZE 1000000"]
    replies = replies or {}

    def respond(line: str) -> bytes | None:
        verb = line.split(" ", 1)[0].upper()
        if verb in replies:
            return replies[verb]
        if verb == "EHLO":
            return b"".join(
                (b"250 " if i == len(ehlo) - 1 else b"250-") + text.encode() + b"\r\n" for i, text in enumerate(ehlo)
            )
        if verb == "QUIT":
            return None
        return default

    return respond
