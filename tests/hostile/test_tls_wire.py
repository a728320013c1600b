"""One hello exchange against scripted, byte-by-byte fake servers: every server behaviour is a typed outcome."""

from __future__ import annotations

import asyncio

import pytest

from smtpaudit.probes.tls import codec, wire
from smtpaudit.probes.tls.codec import HelloSpec
from tests.tls import fakes

HELLO = codec.build_client_hello(HelloSpec(version=0x0303, suites=[0xC02F, 0x009E], groups=[29]))


async def run(handler: fakes.Handler, *, timeout: float = 1.0, full_flight: bool = True, sslv2: bool = False, data: bytes = HELLO) -> wire.HelloOutcome:
    served = await fakes.serve(handler)
    try:
        reader, writer = await served.connect()
        out = await wire.exchange(reader, writer, data, timeout=timeout, full_flight=full_flight, sslv2=sslv2, kx_for=lambda c: {0x009E: "DHE", 0xC02F: "ECDHE"}.get(c, ""))
        writer.close()
        return out
    finally:
        await served.close()


def script(*chunks: bytes, delay: float = 0.0, then: str = "wait") -> fakes.Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await fakes.read_client_hello(reader)
        for c in chunks:
            writer.write(c)
            await writer.drain()
            if delay:
                await asyncio.sleep(delay)
        if then == "close":
            return
        if then == "reset":
            writer.transport.abort()
            return
        await asyncio.sleep(5)

    return handler


def dribble(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_full_flight_byte_by_byte() -> None:
    flight = fakes.server_hello(0x0303, 0x009E) + fakes.certificate_msg([b"X" * 300]) + fakes.ske_dhe(1024) + fakes.server_hello_done()
    out = asyncio.run(run(script(*dribble(flight))))
    assert out.kind == wire.HELLO and out.accepted
    assert out.server_hello.cipher_suite == 0x009E
    assert out.certificates == [b"X" * 300]
    assert out.key_exchange.dh_prime_bits == 1024


def test_ecdhe_curve_from_server_key_exchange() -> None:
    flight = fakes.server_hello(0x0303, 0xC02F) + fakes.certificate_msg([b"X"]) + fakes.ske_ecdhe(23) + fakes.server_hello_done()
    out = asyncio.run(run(script(flight)))
    assert out.key_exchange.curve == 23


def test_alert_is_a_rejection() -> None:
    out = asyncio.run(run(script(fakes.alert(40))))
    assert out.kind == wire.ALERT and out.rejected and out.alert.name == "handshake_failure"


def test_close_without_answer() -> None:
    out = asyncio.run(run(script(then="close")))
    assert out.kind == wire.CLOSED and out.rejected


def test_reset() -> None:
    out = asyncio.run(run(script(then="reset")))
    assert out.kind in (wire.RESET, wire.CLOSED) and out.rejected


def test_silence_times_out() -> None:
    out = asyncio.run(run(script(), timeout=0.3))
    assert out.kind == wire.TIMEOUT and not out.accepted and not out.rejected
    assert 0.25 < out.elapsed < 2


def test_plaintext_smtp_answer_is_garbage_with_evidence() -> None:
    out = asyncio.run(run(script(b"500 5.5.1 command unrecognized\r\n")))
    assert out.kind == wire.GARBAGE and out.first_bytes.startswith(b"500 5.5.1")


def test_huge_record_length_is_garbage() -> None:
    out = asyncio.run(run(script(b"\x16\x03\x03\xff\xf0" + b"\x00" * 100)))
    assert out.kind == wire.GARBAGE and "record_too_large" in out.detail


def test_huge_handshake_length_is_garbage() -> None:
    out = asyncio.run(run(script(b"\x16\x03\x03\x00\x04\x02\x7f\xff\xff")))
    assert out.kind == wire.GARBAGE and "message_too_large" in out.detail


def test_endless_stream_is_capped() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await fakes.read_client_hello(reader)
        rec = codec.build_records(22, 0x0303, b"\x0b\x00\x40\x00" + b"\x00" * 16000)  # a 16 KiB "certificate" that never ends
        for _ in range(200):
            writer.write(rec[:5] + rec[5:])
            await writer.drain()

    served_out = asyncio.run(run(flood))
    assert served_out.kind == wire.GARBAGE


def test_truncated_hello_then_close() -> None:
    sh = fakes.server_hello(0x0303, 0xC02F)
    out = asyncio.run(run(script(sh[:20], then="close")))
    assert out.kind == wire.CLOSED and "after 20 bytes" in out.detail


def test_hello_then_silence_keeps_the_hello() -> None:
    out = asyncio.run(run(script(fakes.server_hello(0x0303, 0xC02F)), timeout=0.3))
    assert out.kind == wire.HELLO and out.server_hello.cipher_suite == 0xC02F


def test_hello_then_garbage_keeps_the_hello() -> None:
    out = asyncio.run(run(script(fakes.server_hello(0x0303, 0xC02F) + b"\x99garbage", then="close")))
    assert out.kind == wire.HELLO and "unparsable" in out.detail


def test_hello_then_alert_keeps_the_hello_and_the_alert() -> None:
    out = asyncio.run(run(script(fakes.server_hello(0x0303, 0xC02F) + fakes.alert(80))))
    assert out.kind == wire.HELLO and out.alert.name == "internal_error"


def test_wrong_first_handshake_message() -> None:
    out = asyncio.run(run(script(fakes.server_hello_done())))
    assert out.kind == wire.GARBAGE


def test_application_data_first() -> None:
    out = asyncio.run(run(script(codec.build_records(23, 0x0303, b"abc"))))
    assert out.kind == wire.GARBAGE


def test_tls13_stops_at_server_hello() -> None:
    sh = fakes.server_hello(0x0303, 0x1301, extensions=[(43, b"\x03\x04"), (51, b"\x00\x1d\x00\x20" + b"k" * 32)])
    out = asyncio.run(run(script(sh + codec.build_records(20, 0x0303, b"\x01") + codec.build_records(23, 0x0303, b"enc" * 50))))
    assert out.kind == wire.HELLO and out.server_hello.negotiated_version == 0x0304 and out.server_hello.selected_group == 29


def test_sslv2_server_hello() -> None:
    data = codec.build_sslv2_client_hello([0x010080])
    out = asyncio.run(run(script(*dribble(fakes.sslv2_server_hello([0x010080]))), sslv2=True, data=data))
    assert out.kind == wire.SSLV2_HELLO and out.sslv2.cipher_specs == [0x010080]


def test_sslv2_error() -> None:
    data = codec.build_sslv2_client_hello([0x010080])
    out = asyncio.run(run(script(b"\x80\x03\x00\x00\x01"), sslv2=True, data=data))
    assert out.kind == wire.ALERT


def test_peer_that_never_reads() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    out = asyncio.run(run(deaf, timeout=0.3))
    assert out.kind == wire.TIMEOUT
