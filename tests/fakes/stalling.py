"""Fake SMTP servers that go silent or drip, one thread per connection, real TLS where they answer.

Each ``Behaviour`` is one way a server wastes a scanner's time:

* ``silent_tls``: STARTTLS answered 220, then nothing, ever (the ClientHello is read and ignored).
* ``picky_tls``: a working TLS 1.2/1.3 server (Python's ``ssl``) that never answers SSLv2 or
  SSLv3 hellos (it peeks at the ClientHello and stays silent): those versions are undetermined,
  everything else must be scanned as usual.
* ``picky_tls13``: the same working TLS 1.2/1.3 server, silent to hellos that offer TLS 1.3 and
  nothing else (the scanner's TLS 1.3 hellos; a default client offering 1.2 too is answered): TLS
  1.3 is undetermined, never "not supported".
* ``picky_features``: the same server, silent to the feature probes' hellos (DEFLATE offered, or
  TLS_FALLBACK_SCSV): compression and fallback protection stay unknown.
* ``picky_suites``: the same server, silent to a TLS 1.2 suite-enumeration hello (many suites,
  fewer than the biggest offer seen): the enumeration is cut short after the first suite found.
* ``picky_curves``: the same server, silent to a TLS 1.2 ECDHE hello with few suites that does not
  offer x25519 (the scanner's curve enumeration once x25519 was found): curves left unknown.
* ``drip``: the greeting arrives one byte every ``drip`` seconds; the rest is a normal server.
* ``greeting_then_silence``: a 220 greeting, then nothing.
* ``silent_after_ehlo``: greeting and EHLO (with STARTTLS) answered, then nothing.
* ``silent_starttls``: answers every command but STARTTLS, which it never answers.
* ``slow``: not silent, a tarpit: the greeting and every reply come ``drip`` seconds late, whole.

Blocking sockets, not asyncio: peeking at the ClientHello before the TLS library reads it needs
``MSG_PEEK``. Runnable for measurements: ``python3 -m tests.fakes.stalling silent_tls`` prints
``port N`` and serves until killed.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smtpaudit.probes.tls.codec import ClientHello

BEHAVIOURS = ("silent_tls", "picky_tls", "picky_tls13", "picky_features", "picky_suites", "picky_curves", "drip", "greeting_then_silence", "silent_after_ehlo", "silent_starttls", "slow")
GREETING = b"220 stall.example.test ESMTP\r\n"


@dataclass
class Behaviour:
    kind: str
    drip: float = 0.1  # seconds per greeting byte (``drip``), or before every reply (``slow``)


def _silence(server: "_Server", sock: socket.socket | ssl.SSLSocket) -> None:
    """Read and discard until the client hangs up."""
    server.silences += 1
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def _old_hello(sock: socket.socket, wait: float = 5.0) -> bool:
    """True when the ClientHello waiting on ``sock`` is SSLv2 or asks for SSLv3 (peeked, not read)."""
    end = time.monotonic() + wait
    head = b""
    while len(head) < 11 and time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            head = sock.recv(11, socket.MSG_PEEK)
        except OSError:
            return False
        if not head:
            return False
        if len(head) < 11:
            time.sleep(0.01)
    sock.settimeout(None)
    if head[:1] and head[0] & 0x80:
        return True  # SSLv2 record header
    # TLS record (5 bytes), handshake header (4), then client_version.
    return len(head) >= 11 and head[0] == 0x16 and head[9:11] == b"\x03\x00"


def _tls13_only_hello(sock: socket.socket, wait: float = 5.0) -> bool:
    """True when the ClientHello waiting on ``sock`` offers TLS 1.3 and no other version (peeked)."""
    hello = _peek_hello(sock, wait)
    return hello is not None and hello.supported_versions == [0x0304]


def _feature_hello(sock: socket.socket, wait: float = 5.0) -> bool:
    """True when the ClientHello waiting on ``sock`` offers DEFLATE or TLS_FALLBACK_SCSV (peeked)."""
    from smtpaudit.probes.tls import codec

    hello = _peek_hello(sock, wait)
    return hello is not None and (1 in hello.compression or codec.SCSV_FALLBACK in hello.suites)


def _later_suite_hello(server: "_Server", sock: socket.socket, wait: float = 5.0) -> bool:
    """True for a TLS 1.2 hello with many suites but fewer than the biggest such offer seen: the
    scanner's second enumeration hello (its first offers every suite; the feature hellos offer
    every suite too, confirmations and curve tests only a few)."""
    hello = _peek_hello(sock, wait)
    if hello is None or hello.version != 0x0303 or hello.supported_versions or len(hello.suites) <= 20:
        return False
    with server.lock:
        later = len(hello.suites) < server.max_suites
        server.max_suites = max(server.max_suites, len(hello.suites))
    return later


def _curve_hello_without_x25519(sock: socket.socket, wait: float = 5.0) -> bool:
    """True for a TLS 1.2 hello with few suites whose supported_groups leave out x25519 (29)."""
    hello = _peek_hello(sock, wait)
    if hello is None or hello.version != 0x0303 or hello.supported_versions or len(hello.suites) > 20:
        return False
    raw = hello.extensions.get(10, b"")  # supported_groups: u16 length, then u16 group codes
    groups = {int.from_bytes(raw[i:i + 2], "big") for i in range(2, len(raw) - 1, 2)}
    return bool(groups) and 29 not in groups


def _peek_hello(sock: socket.socket, wait: float) -> "ClientHello | None":
    """The ClientHello waiting on ``sock``, parsed without reading it (None: not one we can parse)."""
    from smtpaudit.probes.tls import codec

    end = time.monotonic() + wait
    head = b""
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            head = sock.recv(16384, socket.MSG_PEEK)
        except OSError:
            return None
        if not head or head[0] != 0x16:
            return None  # closed, or not a TLS record (an SSLv2 hello): answered as usual
        if len(head) >= 5 and len(head) >= 5 + int.from_bytes(head[3:5], "big"):
            break
        time.sleep(0.01)
    sock.settimeout(None)
    try:
        return codec.parse_client_hello(head)
    except Exception:  # noqa: BLE001 - not a hello this fake understands: answer it normally
        return None


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        b = self.server.behaviour
        self.server.connections += 1
        sock: socket.socket | ssl.SSLSocket = self.request
        late = b.drip if b.kind == "slow" else 0.0
        try:
            time.sleep(late)
            if b.kind == "drip":
                for i in range(len(GREETING)):
                    sock.sendall(GREETING[i:i + 1])
                    time.sleep(b.drip)
            else:
                sock.sendall(GREETING)
            if b.kind == "greeting_then_silence":
                return _silence(self.server, sock)
            tls = False
            buf = b""
            while True:
                while b"\n" not in buf:
                    data = sock.recv(4096)
                    if not data:
                        return
                    buf += data
                    if len(buf) > 65536:
                        return
                line, buf = buf.split(b"\n", 1)
                time.sleep(late)
                verb = line.strip().split(b" ", 1)[0].upper()
                if verb in (b"EHLO", b"HELO"):
                    kws = [b"stall.example.test", b"PIPELINING", b"SIZE 10000000", b"8BITMIME", b"ENHANCEDSTATUSCODES"]
                    if not tls:
                        kws.append(b"STARTTLS")
                    if verb == b"HELO":
                        kws = kws[:1]
                    sock.sendall(b"".join((b"250 " if i == len(kws) - 1 else b"250-") + k + b"\r\n" for i, k in enumerate(kws)))
                    if b.kind == "silent_after_ehlo":
                        return _silence(self.server, sock)
                    continue
                if verb == b"STARTTLS" and b.kind == "silent_starttls":
                    return _silence(self.server, sock)
                if verb == b"STARTTLS" and not tls:
                    sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                    buf = b""  # RFC 3207: whatever was pipelined after STARTTLS is discarded
                    if b.kind == "silent_tls" or (b.kind == "picky_tls" and _old_hello(sock)) or (
                            b.kind == "picky_tls13" and _tls13_only_hello(sock)) or (
                            b.kind == "picky_features" and _feature_hello(sock)) or (
                            b.kind == "picky_suites" and _later_suite_hello(self.server, sock)) or (
                            b.kind == "picky_curves" and _curve_hello_without_x25519(sock)):
                        return _silence(self.server, sock)
                    try:
                        sock = self.server.tls.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError):
                        return
                    tls = True
                    continue
                reply = {
                    b"MAIL": b"250 2.1.0 Ok\r\n",
                    b"RCPT": b"554 5.7.1 Relay access denied\r\n",
                    b"RSET": b"250 2.0.0 Ok\r\n",
                    b"NOOP": b"250 2.0.0 Ok\r\n",
                    b"VRFY": b"252 2.0.0 Cannot VRFY user\r\n",
                    b"HELP": b"214 2.0.0 see RFC 5321\r\n",
                    b"DATA": b"503 5.5.1 Error: need RCPT command\r\n",
                    b"QUIT": b"221 2.0.0 Bye\r\n",
                }.get(verb, b"502 5.5.2 Error: command not recognized\r\n")
                sock.sendall(reply)
                if verb == b"QUIT":
                    return
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: Behaviour, tls: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.tls = tls
        self.connections = 0
        self.silences = 0  # connections on which it went silent
        self.max_suites = 0  # picky_suites: the biggest TLS 1.2 offer seen
        self.lock = threading.Lock()


class StallingServer:
    """One fake on 127.0.0.1 (a free port) in a background thread; ``close()`` stops it."""

    def __init__(self, kind: str, *, drip: float = 0.1, cert_dir: Path | None = None) -> None:
        if kind not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {kind!r}; one of {', '.join(BEHAVIOURS)}")
        from tests.fakes.certs import server_context

        self._srv = _Server(Behaviour(kind, drip), server_context(cert_dir))
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        return self._srv.connections

    @property
    def silences(self) -> int:
        return self._srv.silences

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> "StallingServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "silent_tls"
    drip = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    server = StallingServer(kind, drip=drip)
    print(f"port {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()
