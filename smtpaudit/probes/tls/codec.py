"""TLS/SSL wire codec: build ClientHellos by hand, parse a server's first flight from untrusted bytes.

Sans-I/O: builders return bytes; ``FlightParser.feed`` takes whatever bytes arrived and returns
what could be parsed so far. Hostile input (garbage, huge lengths, truncated structures) raises
``Malformed`` with a short reason, never anything else. The network side lives in ``wire.py``.

Covers what a scanner needs and no more: SSLv2 CLIENT-HELLO/SERVER-HELLO/ERROR, SSLv3..TLS 1.2
ClientHello with chosen suites/compression/extensions, TLS 1.3 ClientHello (supported_versions,
key_share), and on the server side ServerHello / HelloRetryRequest, Certificate (TLS <= 1.2, in
clear), ServerKeyExchange (DHE prime size, ECDHE named curve), ServerHelloDone and alerts.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Iterable

# Record content types.
CT_CHANGE_CIPHER_SPEC = 20
CT_ALERT = 21
CT_HANDSHAKE = 22
CT_APPLICATION_DATA = 23
CONTENT_TYPES = (CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA, 24)  # 24 = heartbeat

# Handshake message types.
HT_CLIENT_HELLO = 1
HT_SERVER_HELLO = 2
HT_NEW_SESSION_TICKET = 4
HT_CERTIFICATE = 11
HT_SERVER_KEY_EXCHANGE = 12
HT_CERTIFICATE_REQUEST = 13
HT_SERVER_HELLO_DONE = 14
HT_CERTIFICATE_STATUS = 22

# Extension types.
EXT_SERVER_NAME = 0
EXT_STATUS_REQUEST = 5
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_HEARTBEAT = 15
EXT_ALPN = 16
EXT_PADDING = 21
EXT_ENCRYPT_THEN_MAC = 22
EXT_EXTENDED_MASTER_SECRET = 23
EXT_SESSION_TICKET = 35
EXT_SUPPORTED_VERSIONS = 43
EXT_PSK_KEY_EXCHANGE_MODES = 45
EXT_KEY_SHARE = 51
EXT_RENEGOTIATION_INFO = 0xFF01

# Signalling cipher suite values (RFC 5746, RFC 7507): never negotiated, only offered.
SCSV_RENEGOTIATION = 0x00FF
SCSV_FALLBACK = 0x5600

# RFC 8446 4.1.3: a HelloRetryRequest is a ServerHello whose random is SHA-256("HelloRetryRequest").
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
# RFC 8446 4.1.3: a TLS 1.3 server negotiating <= 1.2 puts these in the last 8 bytes of its random.
DOWNGRADE_TLS12 = b"DOWNGRD\x01"
DOWNGRADE_TLS11 = b"DOWNGRD\x00"

ALERT_DESCRIPTIONS: dict[int, str] = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed",
    22: "record_overflow", 30: "decompression_failure", 40: "handshake_failure", 41: "no_certificate",
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 60: "export_restriction",
    70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 100: "no_renegotiation",
    109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 115: "unknown_psk_identity", 116: "certificate_required",
    120: "no_application_protocol",
}

# Caps on what we accept from a server. TLSCiphertext may be 2^14 + 2048 bytes (RFC 5246 6.2.3);
# anything longer is not TLS.
MAX_RECORD = 2**14 + 2048
MAX_HANDSHAKE_MESSAGE = 256 * 1024  # a certificate chain bigger than this is hostile, not useful
MAX_SSLV2_RECORD = 2**15 - 1


class Malformed(ValueError):
    """Bytes from the server are not the protocol we expect. ``reason`` is a short token."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- builders


def u8(n: int) -> bytes:
    return struct.pack("!B", n)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u24(n: int) -> bytes:
    return struct.pack("!I", n)[1:]


def vec8(b: bytes) -> bytes:
    return u8(len(b)) + b


def vec16(b: bytes) -> bytes:
    return u16(len(b)) + b


def extension(ext_type: int, body: bytes) -> bytes:
    return u16(ext_type) + vec16(body)


def ext_server_name(host: str) -> bytes:
    name = host.encode("idna") if not host.isascii() else host.encode("ascii")
    return extension(EXT_SERVER_NAME, vec16(u8(0) + vec16(name)))


def ext_supported_groups(groups: Iterable[int]) -> bytes:
    return extension(EXT_SUPPORTED_GROUPS, vec16(b"".join(u16(g) for g in groups)))


def ext_ec_point_formats(formats: Iterable[int] = (0, 1, 2)) -> bytes:
    return extension(EXT_EC_POINT_FORMATS, vec8(bytes(formats)))


def ext_signature_algorithms(schemes: Iterable[int]) -> bytes:
    return extension(EXT_SIGNATURE_ALGORITHMS, vec16(b"".join(u16(s) for s in schemes)))


def ext_renegotiation_info() -> bytes:
    return extension(EXT_RENEGOTIATION_INFO, vec8(b""))


def ext_supported_versions(versions: Iterable[int]) -> bytes:
    return extension(EXT_SUPPORTED_VERSIONS, vec8(b"".join(u16(v) for v in versions)))


def ext_key_share(shares: Iterable[tuple[int, bytes]]) -> bytes:
    return extension(EXT_KEY_SHARE, vec16(b"".join(u16(g) + vec16(k) for g, k in shares)))


def ext_psk_key_exchange_modes() -> bytes:
    return extension(EXT_PSK_KEY_EXCHANGE_MODES, vec8(b"\x01"))  # psk_dhe_ke


def ext_padding(n: int) -> bytes:
    return extension(EXT_PADDING, b"\x00" * n)


def key_share_for(group: int) -> bytes | None:
    """A fresh public key for ``group`` (X25519, X448, P-256/384/521), or None if we cannot make one.

    We never finish the handshake, so the private half is thrown away at once.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if group == 29:
        return x25519.X25519PrivateKey.generate().public_key().public_bytes(*raw)
    if group == 30:
        return x448.X448PrivateKey.generate().public_key().public_bytes(*raw)
    curves = {23: ec.SECP256R1, 24: ec.SECP384R1, 25: ec.SECP521R1}
    if group in curves:
        key = ec.generate_private_key(curves[group]()).public_key()
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return None


@dataclass
class HelloSpec:
    """What to put in a ClientHello. ``version`` is the highest version offered (legacy_version for
    <= 1.2); for TLS 1.3 set ``tls13_versions`` (supported_versions) and ``version`` stays 0x0303."""

    version: int
    suites: list[int]
    server_name: str | None = None
    compression: list[int] = field(default_factory=lambda: [0])
    groups: list[int] | None = None  # supported_groups; None = omit the extension
    point_formats: bool = True
    sigalgs: list[int] | None = None
    renegotiation_info: bool = True  # the RFC 5746 extension (empty, initial handshake)
    renegotiation_scsv: bool = False  # TLS_EMPTY_RENEGOTIATION_INFO_SCSV in the suite list instead
    fallback_scsv: bool = False  # RFC 7507 TLS_FALLBACK_SCSV
    extended_master_secret: bool = True
    tls13_versions: list[int] | None = None
    key_shares: list[tuple[int, bytes]] | None = None  # None = no key_share ext; [] = empty (provoke HRR)
    extensions: bool = True  # False: no extension block at all (SSLv3 style)
    pad: bool = True  # RFC 7685 padding around the 256..511-byte handshake length bug
    random: bytes | None = None
    session_id: bytes = b""
    record_version: int | None = None


def build_client_hello(spec: HelloSpec) -> bytes:
    """One handshake record (or several if large) carrying the ClientHello described by ``spec``."""
    suites = list(spec.suites)
    if spec.renegotiation_scsv:
        suites.append(SCSV_RENEGOTIATION)
    if spec.fallback_scsv:
        suites.append(SCSV_FALLBACK)
    random = spec.random if spec.random is not None else os.urandom(32)
    session_id = spec.session_id
    if spec.tls13_versions and not session_id:
        session_id = os.urandom(32)  # middlebox compatibility mode (RFC 8446 D.4)
    exts: list[bytes] = []
    if spec.extensions:
        if spec.server_name:
            exts.append(ext_server_name(spec.server_name))
        if spec.groups:
            exts.append(ext_supported_groups(spec.groups))
            if spec.point_formats:
                exts.append(ext_ec_point_formats())
        if spec.sigalgs and (spec.version >= 0x0303 or spec.tls13_versions):
            exts.append(ext_signature_algorithms(spec.sigalgs))
        if spec.renegotiation_info and not spec.tls13_versions:
            exts.append(ext_renegotiation_info())
        if spec.extended_master_secret:
            exts.append(extension(EXT_EXTENDED_MASTER_SECRET, b""))
        if spec.tls13_versions:
            exts.append(ext_supported_versions(spec.tls13_versions))
            exts.append(ext_psk_key_exchange_modes())
        if spec.key_shares is not None:
            exts.append(ext_key_share(spec.key_shares))
    body = (
        u16(spec.version)
        + random
        + vec8(session_id)
        + vec16(b"".join(u16(s) for s in suites))
        + vec8(bytes(spec.compression))
    )
    if spec.extensions:
        ext_block = b"".join(exts)
        # Some TLS stacks hang on a ClientHello whose handshake length is 256..511 bytes (RFC 7685).
        length = 4 + len(body) + 2 + len(ext_block)
        if spec.pad and 256 <= length < 512:
            pad = 512 - length - 4
            ext_block += ext_padding(max(pad, 0))
        body += vec16(ext_block)
    msg = u8(HT_CLIENT_HELLO) + u24(len(body)) + body
    record_version = spec.record_version or (0x0300 if spec.version == 0x0300 else 0x0301)
    return build_records(CT_HANDSHAKE, record_version, msg)


def build_records(content_type: int, version: int, payload: bytes) -> bytes:
    """Fragment ``payload`` into records of at most 2^14 bytes."""
    out = bytearray()
    for i in range(0, max(len(payload), 1), 2**14):
        chunk = payload[i : i + 2**14]
        out += u8(content_type) + u16(version) + vec16(chunk)
    return bytes(out)


def build_alert(level: int, description: int, version: int = 0x0303) -> bytes:
    return build_records(CT_ALERT, version, bytes([level, description]))


def build_sslv2_client_hello(cipher_specs: Iterable[int], version: int = 0x0002, challenge: bytes | None = None) -> bytes:
    """An SSLv2 CLIENT-HELLO (2-byte record header). With ``version`` 0x0300+ it is the
    SSLv2-compatible hello of RFC 5246 appendix E.2 (TLS suites as 0x00XXYY specs)."""
    challenge = challenge if challenge is not None else os.urandom(16)
    specs = b"".join(struct.pack("!I", c)[1:] for c in cipher_specs)
    msg = u8(1) + u16(version) + u16(len(specs)) + u16(0) + u16(len(challenge)) + specs + challenge
    if len(msg) > 0x7FFF:
        raise ValueError("SSLv2 CLIENT-HELLO too long")
    return u16(0x8000 | len(msg)) + msg


# --------------------------------------------------------------------------- parsed results


@dataclass
class Alert:
    level: int
    description: int

    @property
    def name(self) -> str:
        return ALERT_DESCRIPTIONS.get(self.description, f"alert_{self.description}")


@dataclass
class ServerKeyExchange:
    """What we learn from a TLS <= 1.2 ServerKeyExchange: DH prime size or the ECDHE curve."""

    kind: str  # "dhe" | "ecdhe" | "unknown"
    dh_prime_bits: int | None = None
    dh_prime: int | None = None
    dh_generator: int | None = None
    curve: int | None = None  # named group code
    curve_type: int | None = None  # 3 = named_curve; 1/2 = explicit (insecure, obsolete)


@dataclass
class ServerHello:
    version: int  # legacy_version field
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression: int
    extensions: dict[int, bytes]
    extension_order: list[int]

    @property
    def is_hrr(self) -> bool:
        return self.random == HRR_RANDOM

    @property
    def negotiated_version(self) -> int:
        """supported_versions wins over legacy_version (RFC 8446 4.2.1)."""
        sv = self.extensions.get(EXT_SUPPORTED_VERSIONS)
        if sv is not None and len(sv) == 2:
            return struct.unpack("!H", sv)[0]
        return self.version

    @property
    def selected_group(self) -> int | None:
        """TLS 1.3: the group of the server's key_share (ServerHello) or the one it asks for (HRR)."""
        ks = self.extensions.get(EXT_KEY_SHARE)
        if ks is None or len(ks) < 2:
            return None
        return struct.unpack("!H", ks[:2])[0]

    @property
    def secure_renegotiation(self) -> bool:
        return EXT_RENEGOTIATION_INFO in self.extensions

    @property
    def downgrade_sentinel(self) -> bool:
        return self.random[-8:] in (DOWNGRADE_TLS12, DOWNGRADE_TLS11)


@dataclass
class SSLv2ServerHello:
    session_id_hit: int
    certificate_type: int
    version: int
    certificate: bytes
    cipher_specs: list[int]
    connection_id: bytes


@dataclass
class SSLv2Error:
    code: int


class _Reader:
    """Bounds-checked reads over one structure; any overrun is ``Malformed``."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Malformed("truncated", f"{self.what}: wanted {n} bytes at {self.pos} of {len(self.data)}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u24(self) -> int:
        b = self.take(3)
        return (b[0] << 16) | (b[1] << 8) | b[2]

    def vec8(self) -> bytes:
        return self.take(self.u8())

    def vec16(self) -> bytes:
        return self.take(self.u16())

    def vec24(self) -> bytes:
        return self.take(self.u24())

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def parse_server_hello(body: bytes) -> ServerHello:
    r = _Reader(body, "ServerHello")
    version = r.u16()
    if version >> 8 != 3:
        raise Malformed("bad_version", f"ServerHello version 0x{version:04X}")
    random = r.take(32)
    session_id = r.vec8()
    if len(session_id) > 32:
        raise Malformed("bad_server_hello", "session id longer than 32 bytes")
    suite = r.u16()
    compression = r.u8()
    extensions: dict[int, bytes] = {}
    order: list[int] = []
    if r.remaining:
        block = _Reader(r.vec16(), "ServerHello extensions")
        while block.remaining:
            etype = block.u16()
            edata = block.vec16()
            if etype in extensions:
                raise Malformed("bad_server_hello", f"extension {etype} repeated")
            extensions[etype] = edata
            order.append(etype)
    return ServerHello(version, random, session_id, suite, compression, extensions, order)


def parse_certificate_list(body: bytes) -> list[bytes]:
    """TLS <= 1.2 Certificate message: DER certificates as served, leaf first."""
    r = _Reader(body, "Certificate")
    inner = _Reader(r.vec24(), "certificate_list")
    certs = []
    while inner.remaining:
        certs.append(inner.vec24())
    return certs


def parse_server_key_exchange(body: bytes, kx: str) -> ServerKeyExchange:
    """Read the public parameters of a DHE or ECDHE ServerKeyExchange (signature not checked:
    we only observe sizes and curves, we never trust them)."""
    r = _Reader(body, "ServerKeyExchange")
    if kx in ("DHE", "DH"):
        p = r.vec16()
        g = r.vec16()
        r.vec16()  # Ys
        p_int = int.from_bytes(p, "big")
        return ServerKeyExchange("dhe", dh_prime_bits=p_int.bit_length(), dh_prime=p_int, dh_generator=int.from_bytes(g, "big"))
    if kx in ("ECDHE", "ECDH"):
        curve_type = r.u8()
        if curve_type == 3:
            return ServerKeyExchange("ecdhe", curve=r.u16(), curve_type=3)
        return ServerKeyExchange("ecdhe", curve_type=curve_type)
    return ServerKeyExchange("unknown")


# --------------------------------------------------------------------------- incremental parser


@dataclass
class HandshakeMessage:
    msg_type: int
    body: bytes


@dataclass
class Record:
    content_type: int
    version: int
    payload: bytes


class FlightParser:
    """Turns a byte stream from the server into records, alerts and handshake messages.

    ``feed`` returns the events completed by the new bytes: ``Alert``, ``HandshakeMessage``,
    ``Record`` (CCS / application data, passed through), ``SSLv2ServerHello`` or ``SSLv2Error``.
    The first bytes decide whether the server answers in SSLv2 or SSLv3+ framing.
    """

    def __init__(self, *, expect_sslv2: bool = False, max_bytes: int = 1_000_000) -> None:
        self.buf = bytearray()
        self.hs_buf = bytearray()
        self.expect_sslv2 = expect_sslv2
        self.framing: str | None = None  # "tls" | "sslv2"
        self.max_bytes = max_bytes
        self.total = 0
        self.record_version: int | None = None
        self.error: Malformed | None = None

    def feed(self, data: bytes) -> list[object]:
        """Parse what arrived. If bytes after a complete event are malformed, the complete events
        are returned first and the error is kept in ``error`` and raised by the next ``feed``."""
        if self.error is not None:
            raise self.error
        self.total += len(data)
        if self.total > self.max_bytes:
            raise Malformed("too_large", f"server sent more than {self.max_bytes} bytes")
        self.buf += data
        events: list[object] = []
        try:
            self._drain(events)
        except Malformed as exc:
            if not events:
                raise
            self.error = exc
        return events

    def _drain(self, events: list[object]) -> None:
        while True:
            if self.framing is None:
                if not self.buf:
                    break
                self.framing = self._sniff()
                if self.framing is None:
                    break
            if self.framing == "sslv2":
                ev = self._next_sslv2()
            else:
                ev = self._next_record()
            if ev is None:
                break
            events.extend(ev)

    def _sniff(self) -> str | None:
        first = self.buf[0]
        if first in CONTENT_TYPES:
            return "tls"
        if first & 0x80 and self.expect_sslv2:
            return "sslv2"
        # An SSLv2 answer to a TLS hello (or anything else) is not something we asked for.
        raise Malformed("garbage", f"first byte 0x{first:02X} is not a TLS record type: {bytes(self.buf[:16])!r}")

    def _next_record(self) -> list[object] | None:
        if len(self.buf) < 5:
            return None
        ctype, version, length = struct.unpack("!BHH", self.buf[:5])
        if ctype not in CONTENT_TYPES:
            raise Malformed("garbage", f"record type {ctype}")
        if version >> 8 != 3 and not (version == 0 and ctype == CT_ALERT):
            raise Malformed("garbage", f"record version 0x{version:04X}")
        if length > MAX_RECORD:
            raise Malformed("record_too_large", f"record length {length}")
        if len(self.buf) < 5 + length:
            return None
        payload = bytes(self.buf[5 : 5 + length])
        del self.buf[: 5 + length]
        if self.record_version is None:
            self.record_version = version
        if ctype == CT_ALERT:
            if len(payload) < 2:
                raise Malformed("bad_alert", f"alert record of {len(payload)} bytes")
            return [Alert(payload[0], payload[1])]
        if ctype == CT_HANDSHAKE:
            if not payload:
                raise Malformed("garbage", "empty handshake record")
            self.hs_buf += payload
            out: list[object] = []
            while len(self.hs_buf) >= 4:
                mtype = self.hs_buf[0]
                mlen = (self.hs_buf[1] << 16) | (self.hs_buf[2] << 8) | self.hs_buf[3]
                if mlen > MAX_HANDSHAKE_MESSAGE:
                    raise Malformed("message_too_large", f"handshake message type {mtype} of {mlen} bytes")
                if len(self.hs_buf) < 4 + mlen:
                    break
                out.append(HandshakeMessage(mtype, bytes(self.hs_buf[4 : 4 + mlen])))
                del self.hs_buf[: 4 + mlen]
            return out
        return [Record(ctype, version, payload)]

    def _next_sslv2(self) -> list[object] | None:
        if len(self.buf) < 2:
            return None
        if self.buf[0] & 0x80:
            length = ((self.buf[0] & 0x7F) << 8) | self.buf[1]
            header = 2
        else:
            # 3-byte header (with padding): length is 14 bits.
            if len(self.buf) < 3:
                return None
            length = ((self.buf[0] & 0x3F) << 8) | self.buf[1]
            header = 3
        if length > MAX_SSLV2_RECORD:
            raise Malformed("record_too_large", f"SSLv2 record length {length}")
        if len(self.buf) < header + length:
            return None
        msg = bytes(self.buf[header : header + length])
        del self.buf[: header + length]
        if not msg:
            raise Malformed("garbage", "empty SSLv2 record")
        return [parse_sslv2_message(msg)]


def parse_sslv2_message(msg: bytes) -> SSLv2ServerHello | SSLv2Error:
    r = _Reader(msg, "SSLv2 message")
    mtype = r.u8()
    if mtype == 0:
        return SSLv2Error(r.u16() if r.remaining >= 2 else -1)
    if mtype != 4:
        raise Malformed("garbage", f"SSLv2 message type {mtype}")
    hit = r.u8()
    cert_type = r.u8()
    version = r.u16()
    cert_len = r.u16()
    specs_len = r.u16()
    conn_id_len = r.u16()
    if specs_len % 3:
        raise Malformed("bad_server_hello", "SSLv2 cipher specs length not a multiple of 3")
    cert = r.take(cert_len)
    specs_raw = r.take(specs_len)
    conn_id = r.take(conn_id_len)
    specs = [int.from_bytes(specs_raw[i : i + 3], "big") for i in range(0, len(specs_raw), 3)]
    return SSLv2ServerHello(hit, cert_type, version, cert, specs, conn_id)


# --------------------------------------------------------------------------- client side, parsed
# Used by the in-process fake servers of the test suite (and handy when reading captures).


@dataclass
class ClientHello:
    version: int
    random: bytes
    session_id: bytes
    suites: list[int]
    compression: list[int]
    extensions: dict[int, bytes]
    sslv2: bool = False

    @property
    def supported_versions(self) -> list[int]:
        data = self.extensions.get(EXT_SUPPORTED_VERSIONS)
        if not data:
            return []
        r = _Reader(data, "supported_versions")
        inner = _Reader(r.vec8(), "supported_versions list")
        return [inner.u16() for _ in range(inner.remaining // 2)]

    @property
    def groups(self) -> list[int]:
        data = self.extensions.get(EXT_SUPPORTED_GROUPS)
        if not data:
            return []
        inner = _Reader(_Reader(data, "supported_groups").vec16(), "groups")
        return [inner.u16() for _ in range(inner.remaining // 2)]

    @property
    def key_share_groups(self) -> list[int] | None:
        data = self.extensions.get(EXT_KEY_SHARE)
        if data is None:
            return None
        inner = _Reader(_Reader(data, "key_share").vec16(), "client_shares")
        out = []
        while inner.remaining:
            out.append(inner.u16())
            inner.vec16()
        return out

    @property
    def server_name(self) -> str | None:
        data = self.extensions.get(EXT_SERVER_NAME)
        if not data:
            return None
        inner = _Reader(_Reader(data, "server_name").vec16(), "server_name_list")
        if inner.u8() != 0:
            return None
        return inner.vec16().decode("ascii", "replace")


def parse_client_hello(data: bytes) -> ClientHello:
    """Parse a whole ClientHello as it came off the wire (one or more records, or SSLv2 framing)."""
    if data and data[0] & 0x80:
        length = ((data[0] & 0x7F) << 8) | data[1]
        r = _Reader(data[2 : 2 + length], "SSLv2 CLIENT-HELLO")
        if r.u8() != 1:
            raise Malformed("garbage", "not an SSLv2 CLIENT-HELLO")
        version = r.u16()
        specs_len, sid_len, chal_len = r.u16(), r.u16(), r.u16()
        specs = r.take(specs_len)
        sid = r.take(sid_len)
        challenge = r.take(chal_len)
        codes = [int.from_bytes(specs[i : i + 3], "big") for i in range(0, len(specs), 3)]
        return ClientHello(version, challenge, sid, codes, [0], {}, sslv2=True)
    parser = FlightParser()
    msgs = [e for e in parser.feed(data) if isinstance(e, HandshakeMessage)]
    if not msgs or msgs[0].msg_type != HT_CLIENT_HELLO:
        raise Malformed("truncated", "no complete ClientHello")
    r = _Reader(msgs[0].body, "ClientHello")
    version = r.u16()
    random = r.take(32)
    session_id = r.vec8()
    suites_raw = r.vec16()
    suites = [struct.unpack("!H", suites_raw[i : i + 2])[0] for i in range(0, len(suites_raw) - 1, 2)]
    compression = list(r.vec8())
    extensions: dict[int, bytes] = {}
    if r.remaining:
        block = _Reader(r.vec16(), "ClientHello extensions")
        while block.remaining:
            etype = block.u16()
            extensions[etype] = block.vec16()
    return ClientHello(version, random, session_id, suites, compression, extensions)
