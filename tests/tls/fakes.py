"""In-process fake TLS servers for the TLS scanner tests, on 127.0.0.1.

``FakeTls`` models a server's negotiation policy (versions incl. SSLv2/SSLv3, suites with or
without server preference, TLS 1.3 groups via HelloRetryRequest, ECDHE curves and DH sizes in a
ServerKeyExchange, fallback SCSV, compression, secure renegotiation) and answers each ClientHello
with the exact bytes a real server would send for its first flight, then waits for the client to
hang up. ``serve`` runs any handler (for byte-by-byte hostile scripts) and counts connections.
"""

from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from smtpaudit.probes.tls import codec
from smtpaudit.probes.tls.codec import u8, u16, u24, vec8, vec16
from smtpaudit.probes.tls.registry import VERSION_NAME, load_registry

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --------------------------------------------------------------------------- server-side builders


def server_hello(
    version: int,
    suite: int,
    *,
    compression: int = 0,
    extensions: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    random: bytes | None = None,
    session_id: bytes = b"",
    record_version: int | None = None,
) -> bytes:
    """A ServerHello record. For TLS 1.3 pass version=0x0303 and a supported_versions extension."""
    body = u16(version) + (random or os.urandom(32)) + vec8(session_id) + u16(suite) + u8(compression)
    if extensions:
        body += vec16(b"".join(u16(t) + vec16(d) for t, d in extensions))
    return handshake(codec.HT_SERVER_HELLO, body, record_version or min(version, 0x0303))


def handshake(msg_type: int, body: bytes, record_version: int = 0x0303) -> bytes:
    return codec.build_records(codec.CT_HANDSHAKE, record_version, u8(msg_type) + u24(len(body)) + body)


def certificate_msg(certs: list[bytes], record_version: int = 0x0303) -> bytes:
    return handshake(codec.HT_CERTIFICATE, vec24(b"".join(vec24(c) for c in certs)), record_version)


def vec24(b: bytes) -> bytes:
    return u24(len(b)) + b


def ske_dhe(bits: int, record_version: int = 0x0303) -> bytes:
    p = (1 << (bits - 1)) | 1  # shape only: the scanner measures, never computes
    pb = p.to_bytes((bits + 7) // 8, "big")
    body = vec16(pb) + vec16(b"\x02") + vec16(os.urandom(len(pb))) + u16(0x0401) + vec16(os.urandom(64))
    return handshake(codec.HT_SERVER_KEY_EXCHANGE, body, record_version)


def ske_ecdhe(curve: int, record_version: int = 0x0303) -> bytes:
    body = u8(3) + u16(curve) + vec8(b"\x04" + os.urandom(64)) + u16(0x0401) + vec16(os.urandom(64))
    return handshake(codec.HT_SERVER_KEY_EXCHANGE, body, record_version)


def server_hello_done(record_version: int = 0x0303) -> bytes:
    return handshake(codec.HT_SERVER_HELLO_DONE, b"", record_version)


def alert(description: int, record_version: int = 0x0303) -> bytes:
    return codec.build_alert(2, description, record_version)


def sslv2_server_hello(specs: list[int], cert: bytes = b"\x30\x03\x02\x01\x00", version: int = 0x0002) -> bytes:
    spec_bytes = b"".join(struct.pack("!I", c)[1:] for c in specs)
    conn_id = os.urandom(16)
    msg = u8(4) + u8(0) + u8(1) + u16(version) + u16(len(cert)) + u16(len(spec_bytes)) + u16(len(conn_id))
    msg += cert + spec_bytes + conn_id
    return u16(0x8000 | len(msg)) + msg


async def read_client_hello(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Read exactly one ClientHello (SSLv2 or record framing, possibly several records)."""
    head = await asyncio.wait_for(reader.readexactly(2), timeout)
    if head[0] & 0x80:
        length = ((head[0] & 0x7F) << 8) | head[1]
        return head + await asyncio.wait_for(reader.readexactly(length), timeout)
    data = bytearray(head)
    data += await asyncio.wait_for(reader.readexactly(3), timeout)
    need = struct.unpack("!H", data[3:5])[0]
    data += await asyncio.wait_for(reader.readexactly(need), timeout)
    hs_len = int.from_bytes(data[6:9], "big") + 4
    got = need
    while got < hs_len:
        hdr = await asyncio.wait_for(reader.readexactly(5), timeout)
        n = struct.unpack("!H", hdr[3:5])[0]
        data += hdr + await asyncio.wait_for(reader.readexactly(n), timeout)
        got += n
    return bytes(data)


# --------------------------------------------------------------------------- servers


class Served:
    """A running fake server: its port and how many connections it accepted."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.hellos: list[codec.ClientHello] = []
        self.server: asyncio.base_events.Server | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def serve(handler: Handler) -> Served:
    served = Served()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.connections += 1
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, TimeoutError):
            pass
        finally:
            writer.close()

    served.server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    served.port = served.server.sockets[0].getsockname()[1]
    return served


@dataclass
class FakeTls:
    """A server negotiation policy; ``handler`` answers one ClientHello the way such a server would."""

    versions: set[int] = field(default_factory=lambda: {0x0303})
    suites: list[int] = field(default_factory=lambda: [0xC02F, 0xC030, 0x009C])  # server preference order
    tls13_suites: list[int] = field(default_factory=lambda: [0x1301, 0x1302])
    server_preference: bool = True
    tls13_groups: list[int] = field(default_factory=lambda: [29, 23])
    curves: list[int] = field(default_factory=lambda: [29, 23, 24])
    dh_bits: int = 2048
    fallback_scsv: bool = True
    compression: bool = False
    secure_renegotiation: bool = True
    sslv2_specs: list[int] = field(default_factory=list)
    cert: bytes = b"\x30\x82\x00\x00"
    seen: list[codec.ClientHello] = field(default_factory=list)

    def _pick(self, offered: list[int], mine: list[int]) -> int | None:
        if self.server_preference:
            return next((s for s in mine if s in offered), None)
        return next((s for s in offered if s in mine), None)

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = await read_client_hello(reader)
        ch = codec.parse_client_hello(raw)
        self.seen.append(ch)
        answer = self.answer(ch)
        if not answer:
            return  # hang up, as most servers do on a hello they cannot parse
        writer.write(answer)
        await writer.drain()
        await asyncio.wait_for(reader.read(1), 5)  # until the scanner hangs up

    def answer(self, ch: codec.ClientHello) -> bytes:
        if ch.sslv2 and ch.version == 0x0002:
            if 0x0002 not in self.versions:
                return b""  # like most servers: just hang up on SSLv2
            common = [c for c in self.sslv2_specs if c in ch.suites]
            return sslv2_server_hello(common) if common else b"\x80\x03\x00\x00\x01"  # SSLv2 ERROR no-cipher
        offered13 = ch.supported_versions
        if 0x0304 in offered13 and 0x0304 in self.versions:
            return self._answer13(ch)
        legacy = sorted(v for v in self.versions if 0x0300 <= v <= 0x0303)
        if not legacy:
            return alert(70)
        version = min(ch.version, legacy[-1])
        if version not in self.versions:
            return alert(70, 0x0301)
        if codec.SCSV_FALLBACK in ch.suites and self.fallback_scsv and version < max(self.versions):
            return alert(86, version)
        reg = load_registry()
        name = VERSION_NAME[version]
        usable = [s for s in self.suites if reg.suite(s) is not None and name in reg.suite(s).protocols]
        suite = self._pick(ch.suites, usable)
        if suite is None:
            return alert(40, version)
        exts: list[tuple[int, bytes]] = []
        if self.secure_renegotiation and (codec.EXT_RENEGOTIATION_INFO in ch.extensions or codec.SCSV_RENEGOTIATION in ch.suites):
            exts.append((codec.EXT_RENEGOTIATION_INFO, b"\x00"))
        comp = 1 if self.compression and 1 in ch.compression else 0
        out = server_hello(version, suite, compression=comp, extensions=exts, record_version=version)
        out += certificate_msg([self.cert], version)
        kx = reg.suite(suite).kx
        if kx == "DHE":
            out += ske_dhe(self.dh_bits, version)
        elif kx == "ECDHE":
            curve = self._pick(ch.groups, self.curves) if ch.groups else self.curves[0]
            if curve is None:
                return alert(40, version)
            out += ske_ecdhe(curve, version)
        return out + server_hello_done(version)

    def _answer13(self, ch: codec.ClientHello) -> bytes:
        suite = self._pick(ch.suites, self.tls13_suites)
        if suite is None:
            return alert(40)
        shares = ch.key_share_groups or []
        group = next((g for g in self.tls13_groups if g in shares), None) if self.server_preference else next((g for g in shares if g in self.tls13_groups), None)
        sv = (codec.EXT_SUPPORTED_VERSIONS, u16(0x0304))
        if group is not None:
            ks = (codec.EXT_KEY_SHARE, u16(group) + vec16(os.urandom(32)))
            return server_hello(0x0303, suite, extensions=[sv, ks], session_id=ch.session_id)
        wanted = self._pick(ch.groups, self.tls13_groups)
        if wanted is None:
            return alert(40)
        return server_hello(0x0303, suite, extensions=[sv, (codec.EXT_KEY_SHARE, u16(wanted))], random=codec.HRR_RANDOM, session_id=ch.session_id)
