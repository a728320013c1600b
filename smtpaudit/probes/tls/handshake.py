"""Complete TLS handshakes with OpenSSL (pyOpenSSL over memory BIOs on asyncio streams).

A hand-made ClientHello only shows what a server *selects*; a handshake that completes shows
what a client can *use*. This module runs a real client handshake on streams positioned for a
ClientHello, optionally pinned to one protocol version and a cipher list, and reports how it
ended: completed, refused by the server (alert, close, reset: an observation), or not
attemptable because the local OpenSSL lacks the version or every offered suite.
Nothing here knows SMTP; nothing here raises for server behaviour.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

# How a handshake ended.
COMPLETED = "completed"
FAILED = "failed"  # the server answered but the handshake did not complete (its doing)
TIMEOUT = "timeout"  # no decision within the deadline (unknown: maybe the network)
LOCAL = "local"  # this OpenSSL cannot offer what was asked (version or suites): nothing was sent

# Authenticated suites only: what every client that checks certificates offers.
AUTHENTICATED_CIPHERS = "ALL:COMPLEMENTOFALL:!aNULL:!eNULL:@SECLEVEL=0"
# Everything the local OpenSSL can do (anonymous and NULL encryption included).
EVERY_CIPHER = "ALL:COMPLEMENTOFALL:@SECLEVEL=0"
# TLS 1.3 suite names as OpenSSL spells them (set_tls13_ciphersuites).
TLS13_ALL = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256"


@dataclass
class HandshakeResult:
    outcome: str  # COMPLETED | FAILED | TIMEOUT | LOCAL
    detail: str = ""
    version: str | None = None  # negotiated, OpenSSL's name (TLSv1.2)
    cipher: str | None = None  # negotiated, OpenSSL's name
    chain: list[bytes] = field(default_factory=list)  # DER, leaf first, as served (also after a failure)
    received: int = 0  # bytes the server sent (0 with TIMEOUT: it never spoke)

    @property
    def completed(self) -> bool:
        return self.outcome == COMPLETED

    @property
    def silent(self) -> bool:
        """Timed out without a byte from the server: silence, not a failed handshake."""
        return self.outcome == TIMEOUT and not self.received


def _version_constant(protocol: str) -> int | None:
    from OpenSSL import SSL

    return {
        "SSLv3": getattr(SSL, "SSL3_VERSION", None),
        "TLSv1.0": SSL.TLS1_VERSION,
        "TLSv1.1": SSL.TLS1_1_VERSION,
        "TLSv1.2": SSL.TLS1_2_VERSION,
        "TLSv1.3": SSL.TLS1_3_VERSION,
    }.get(protocol)


def client_connection(
    *, protocol: str | None, ciphers: str, tls13_ciphers: str | None, server_name: str | None
) -> tuple[Any | None, str]:
    """An OpenSSL client connection set up as asked, or (None, why not) when this OpenSSL cannot."""
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
    # OpenSSL 3 clients refuse servers without RFC 5746 renegotiation_info; older clients (and
    # most MTAs' libraries) do not. Whether the server *can* finish is the question here; the
    # missing extension is judged on its own (tls-insecure-renegotiation).
    ctx.set_options(getattr(SSL, "OP_LEGACY_SERVER_CONNECT", 0x4))
    try:
        if protocol is None:
            ctx.set_min_proto_version(SSL.TLS1_VERSION)
        else:
            const = _version_constant(protocol)
            if const is None:
                return None, f"the local OpenSSL has no {protocol}"
            ctx.set_min_proto_version(const)
            ctx.set_max_proto_version(const)
    except SSL.Error as exc:
        return None, f"the local OpenSSL cannot pin {protocol}: {_ssl_text(exc)}"
    try:
        ctx.set_cipher_list(ciphers.encode("ascii"))
    except SSL.Error:
        if protocol != "TLSv1.3":
            return None, "the local OpenSSL knows none of the suites to offer"
    if tls13_ciphers is not None:
        try:
            ctx.set_tls13_ciphersuites(tls13_ciphers.encode("ascii"))
        except (SSL.Error, AttributeError):
            if protocol == "TLSv1.3":
                return None, "the local OpenSSL knows none of the TLS 1.3 suites to offer"
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    if server_name:
        try:
            conn.set_tlsext_host_name(server_name.encode("idna"))
        except (UnicodeError, ValueError):
            pass
    # A protocol pinned at the version floor may still be refused locally (SECLEVEL, build options):
    # OpenSSL then offers nothing and fails before writing; detected in run_handshake.
    return conn, ""


async def run_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    server_name: str | None,
    timeout: float,
    protocol: str | None = None,
    ciphers: str = AUTHENTICATED_CIPHERS,
    tls13_ciphers: str | None = TLS13_ALL,
    max_bytes: int = 1_000_000,
) -> HandshakeResult:
    """Drive one client handshake to its end. Never raises for what the server does."""
    from OpenSSL import SSL

    conn, why_not = client_connection(protocol=protocol, ciphers=ciphers, tls13_ciphers=tls13_ciphers, server_name=server_name)
    if conn is None:
        return HandshakeResult(LOCAL, why_not)
    deadline = time.monotonic() + timeout
    received = 0
    sent_any = False
    while True:
        try:
            conn.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        except SSL.Error as exc:
            sent_any |= await _flush(conn, writer)
            text = _ssl_text(exc)
            if not sent_any and received == 0:
                # Nothing went on the wire: the local library refused (e.g. no shared version).
                return HandshakeResult(LOCAL, f"the local OpenSSL refused to start: {text}")
            return HandshakeResult(FAILED, f"TLS handshake failed: {text}", chain=_chain(conn))
        sent_any |= await _flush(conn, writer)
        if done:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return HandshakeResult(TIMEOUT, _timed_out(received), chain=_chain(conn), received=received)
        try:
            data = await asyncio.wait_for(reader.read(16384), timeout=remaining)
        except (asyncio.TimeoutError, TimeoutError):
            return HandshakeResult(TIMEOUT, _timed_out(received), chain=_chain(conn), received=received)
        except OSError as exc:
            return HandshakeResult(FAILED, f"connection lost during the TLS handshake: {exc}", chain=_chain(conn))
        if not data:
            return HandshakeResult(FAILED, "server closed the connection during the TLS handshake", chain=_chain(conn))
        received += len(data)
        if received > max_bytes:
            return HandshakeResult(FAILED, f"server sent more than {max_bytes} bytes during the handshake", chain=_chain(conn))
        conn.bio_write(data)
    return HandshakeResult(
        COMPLETED,
        "",
        version=conn.get_protocol_version_name(),
        cipher=conn.get_cipher_name(),
        chain=_chain(conn),
    )


def _timed_out(received: int) -> str:
    return "TLS handshake timed out" + ("" if received else " (the server sent nothing)")


def _chain(conn: Any) -> list[bytes]:
    """The certificates the server sent so far (a TLS <= 1.2 Certificate arrives before a failure)."""
    try:
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
    except Exception:  # noqa: BLE001 - nothing received yet, or an OpenSSL state without a chain
        return []
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.DER) for c in chain]


async def _flush(conn: Any, writer: asyncio.StreamWriter) -> bool:
    from OpenSSL import SSL

    out = b""
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            break
        except SSL.Error:
            break
        if not chunk:
            break
        out += chunk
    if out:
        writer.write(out)
        try:
            await asyncio.wait_for(writer.drain(), timeout=10)
        except (OSError, asyncio.TimeoutError, TimeoutError):
            pass
    return bool(out)


def _ssl_text(exc: Exception) -> str:
    parts = []
    for arg in exc.args:
        if isinstance(arg, list):
            parts += [str(e[-1]) if isinstance(e, tuple) else str(e) for e in arg]
        else:
            parts.append(str(arg))
    return "; ".join(p for p in parts if p) or type(exc).__name__
