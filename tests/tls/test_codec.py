"""The wire codec: ClientHellos we build parse back to what was asked; hostile server bytes become Malformed."""

from __future__ import annotations

import struct

import pytest

from smtpaudit.probes.tls import codec
from smtpaudit.probes.tls.codec import FlightParser, HelloSpec, Malformed
from smtpaudit.probes.tls.registry import load_registry
from tests.tls import fakes


def test_tls12_client_hello_round_trip() -> None:
    spec = HelloSpec(version=0x0303, suites=[0xC02F, 0x009C], server_name="mx.example.net", groups=[29, 23], sigalgs=[0x0403, 0x0804], compression=[1, 0])
    ch = codec.parse_client_hello(codec.build_client_hello(spec))
    assert ch.version == 0x0303
    assert ch.suites == [0xC02F, 0x009C]
    assert ch.compression == [1, 0]
    assert ch.server_name == "mx.example.net"
    assert ch.groups == [29, 23]
    assert codec.EXT_RENEGOTIATION_INFO in ch.extensions
    assert codec.EXT_SUPPORTED_VERSIONS not in ch.extensions


def test_scsvs_are_appended_and_sslv3_has_no_extensions() -> None:
    raw = codec.build_client_hello(HelloSpec(version=0x0300, suites=[0x000A], extensions=False, renegotiation_scsv=True, fallback_scsv=True))
    assert raw[1:3] == b"\x03\x00"  # SSLv3 record version
    ch = codec.parse_client_hello(raw)
    assert ch.suites == [0x000A, codec.SCSV_RENEGOTIATION, codec.SCSV_FALLBACK]
    assert ch.extensions == {}


def test_tls13_hello_has_versions_key_shares_and_compat_session_id() -> None:
    shares = [(29, codec.key_share_for(29)), (23, codec.key_share_for(23))]
    spec = HelloSpec(version=0x0303, suites=[0x1301], groups=[29, 23], sigalgs=[0x0403], tls13_versions=[0x0304], key_shares=shares)  # type: ignore[list-item]
    ch = codec.parse_client_hello(codec.build_client_hello(spec))
    assert ch.supported_versions == [0x0304]
    assert ch.key_share_groups == [29, 23]
    assert len(ch.session_id) == 32
    assert len(shares[0][1]) == 32 and len(shares[1][1]) == 65  # X25519 raw, P-256 uncompressed


def test_empty_key_share_is_present_but_empty() -> None:
    spec = HelloSpec(version=0x0303, suites=[0x1301], groups=[29], tls13_versions=[0x0304], key_shares=[])
    assert codec.parse_client_hello(codec.build_client_hello(spec)).key_share_groups == []


@pytest.mark.parametrize("n_suites", range(60, 200, 7))
def test_padding_avoids_the_256_to_511_byte_handshake_length(n_suites: int) -> None:
    raw = codec.build_client_hello(HelloSpec(version=0x0303, suites=list(range(1, n_suites + 1)), groups=[29], sigalgs=[0x0403]))
    hs_len = int.from_bytes(raw[6:9], "big") + 4
    assert not 256 <= hs_len < 512


def test_whole_registry_fits_one_record() -> None:
    reg = load_registry()
    raw = codec.build_client_hello(HelloSpec(version=0x0303, suites=[s.code for s in reg.legacy_tls_suites()], groups=[g.code for g in reg.groups], sigalgs=list(reg.sigalgs)))
    assert struct.unpack("!H", raw[3:5])[0] == len(raw) - 5 <= 2**14
    assert len(codec.parse_client_hello(raw).suites) == len(reg.legacy_tls_suites())


def test_sslv2_client_hello_layout() -> None:
    raw = codec.build_sslv2_client_hello([0x010080, 0x0700C0], challenge=b"C" * 16)
    assert raw[0] & 0x80 and ((raw[0] & 0x7F) << 8 | raw[1]) == len(raw) - 2
    assert raw[2] == 1 and raw[3:5] == b"\x00\x02"
    ch = codec.parse_client_hello(raw)
    assert ch.sslv2 and ch.suites == [0x010080, 0x0700C0] and ch.random == b"C" * 16


def test_parser_byte_by_byte_server_hello_certificate_ske_done() -> None:
    flight = (
        fakes.server_hello(0x0303, 0x009E, extensions=[(codec.EXT_RENEGOTIATION_INFO, b"\x00")])
        + fakes.certificate_msg([b"A" * 100, b"B" * 50])
        + fakes.ske_dhe(1024)
        + fakes.server_hello_done()
    )
    p = FlightParser()
    events: list[object] = []
    for i in range(len(flight)):
        events += p.feed(flight[i : i + 1])
    types = [e.msg_type for e in events]  # type: ignore[attr-defined]
    assert types == [2, 11, 12, 14]
    sh = codec.parse_server_hello(events[0].body)  # type: ignore[attr-defined]
    assert sh.cipher_suite == 0x009E and sh.secure_renegotiation and not sh.is_hrr
    assert codec.parse_certificate_list(events[1].body) == [b"A" * 100, b"B" * 50]  # type: ignore[attr-defined]
    ske = codec.parse_server_key_exchange(events[2].body, "DHE")  # type: ignore[attr-defined]
    assert ske.dh_prime_bits == 1024 and ske.dh_generator == 2


def test_handshake_message_split_across_records_and_two_in_one() -> None:
    sh = fakes.server_hello(0x0303, 0xC02F)[5:]
    done = fakes.server_hello_done()[5:]
    payload = sh + done
    records = codec.build_records(22, 0x0303, payload[:10]) + codec.build_records(22, 0x0303, payload[10:])
    events = FlightParser().feed(records)
    assert [e.msg_type for e in events] == [2, 14]  # type: ignore[attr-defined]


def test_hello_retry_request_and_tls13_fields() -> None:
    rec = fakes.server_hello(0x0303, 0x1302, random=codec.HRR_RANDOM, extensions=[(43, b"\x03\x04"), (51, b"\x11\xec")])
    sh = codec.parse_server_hello(FlightParser().feed(rec)[0].body)  # type: ignore[attr-defined]
    assert sh.is_hrr and sh.negotiated_version == 0x0304 and sh.selected_group == 0x11EC


def test_ecdhe_named_curve_and_explicit_curve() -> None:
    body = fakes.ske_ecdhe(24)[9:]
    assert codec.parse_server_key_exchange(body, "ECDHE").curve == 24
    explicit = codec.parse_server_key_exchange(b"\x01" + b"\x00" * 10, "ECDHE")
    assert explicit.curve is None and explicit.curve_type == 1


def test_sslv2_server_hello_and_error() -> None:
    events = FlightParser(expect_sslv2=True).feed(fakes.sslv2_server_hello([0x010080, 0x0700C0], cert=b"CERT"))
    hello = events[0]
    assert isinstance(hello, codec.SSLv2ServerHello)
    assert hello.cipher_specs == [0x010080, 0x0700C0] and hello.certificate == b"CERT" and hello.version == 2
    err = FlightParser(expect_sslv2=True).feed(b"\x80\x03\x00\x00\x01")[0]
    assert isinstance(err, codec.SSLv2Error) and err.code == 1


def test_alert_record() -> None:
    a = FlightParser().feed(fakes.alert(70))[0]
    assert isinstance(a, codec.Alert) and a.name == "protocol_version" and a.level == 2


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"220 mx.example.net ESMTP\r\n", "garbage"),
        (b"\x16\x03\x03\xff\xff", "record_too_large"),
        (b"\x16\x05\x00\x00\x01\x00", "garbage"),
        (b"\x63\x03\x03\x00\x01\x00", "garbage"),
        (b"\x15\x03\x03\x00\x01\x02", "bad_alert"),
        (b"\x16\x03\x03\x00\x04\x02\xff\xff\xff", "message_too_large"),
        (b"\x16\x03\x03\x00\x00", "garbage"),
        (b"\xff\xff\x00", "garbage"),
    ],
)
def test_hostile_bytes_are_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as info:
        FlightParser().feed(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x03\x03" + b"\x00" * 10,
        b"\x03\x03" + b"\x00" * 32 + b"\x40" + b"\x00" * 64 + b"\xc0\x2f\x00",  # session id > 32
        b"\x03\x03" + b"\x00" * 32 + b"\x00\xc0\x2f\x00\x00\x10\xff\x01",  # extension block overruns
        b"\x03\x03" + b"\x00" * 32 + b"\x00\xc0\x2f\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00",  # repeated ext
        b"\x07\x07" + b"\x00" * 40,  # not SSL3/TLS
    ],
)
def test_malformed_server_hello(body: bytes) -> None:
    with pytest.raises(Malformed):
        codec.parse_server_hello(body)


def test_truncated_structures_inside_complete_messages() -> None:
    with pytest.raises(Malformed):
        codec.parse_certificate_list(b"\x00\x00\x10\x00\x00\x05ab")
    with pytest.raises(Malformed):
        codec.parse_server_key_exchange(b"\x01\x00\xff", "DHE")
    with pytest.raises(Malformed):
        codec.parse_sslv2_message(b"\x04\x00\x01\x00\x02\x00\x05\x00\x04\x00\x00ab")  # specs not multiple of 3
    with pytest.raises(Malformed):
        codec.parse_sslv2_message(b"\x04\x00\x01\x00\x02\xff\xff\x00\x00\x00\x00")


def test_total_byte_cap() -> None:
    p = FlightParser(max_bytes=100)
    with pytest.raises(Malformed) as info:
        p.feed(codec.build_records(23, 0x0303, b"x" * 200))
    assert info.value.reason == "too_large"


def test_random_garbage_never_raises_anything_but_malformed() -> None:
    import random

    rng = random.Random(1234)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        if rng.random() < 0.5:
            data = bytes([22, 3, rng.randrange(5)]) + data
        p = FlightParser(expect_sslv2=rng.random() < 0.2)
        try:
            for ev in p.feed(data):
                if isinstance(ev, codec.HandshakeMessage) and ev.msg_type == 2:
                    codec.parse_server_hello(ev.body)
                elif isinstance(ev, codec.HandshakeMessage) and ev.msg_type == 12:
                    codec.parse_server_key_exchange(ev.body, "DHE")
        except Malformed:
            pass


def test_registry_integrity() -> None:
    reg = load_registry()
    assert len(reg.suites) >= 380
    names = {s.iana for s in reg.suites}
    for must in ("TLS_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_NULL_MD5", "TLS_RSA_EXPORT_WITH_RC4_40_MD5", "SSL_CK_RC4_128_WITH_MD5", "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"):
        assert must in names
    assert reg.suite(0x0004).flags >= {"rc4", "md5"}
    assert "fs" not in reg.suite(0x002F).flags and "cbc" in reg.suite(0x002F).flags
    assert reg.suite(0xC02F).flags >= {"aead", "fs"}
    assert "3des" in reg.suite(0x000A).flags and "anon" in reg.suite(0x0034).flags
    assert "export" in reg.suite(0x0003).flags and "null" in reg.suite(0x0001).flags
    assert reg.group_by_code[0x11EC].name == "X25519MLKEM768"
    assert len(reg.suites_for("SSLv2")) >= 7
