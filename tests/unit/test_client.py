"""The SMTP client against scripted hostile servers: multi-line, split reads, delays, 421, garbage, resets, caps."""

import asyncio
import time

import pytest

from smtpaudit.probes.base import (
    ConnectFailed, ConnectionClosed, Limits, ProbeContext, ReplyTimeout, ReplyTooLarge, SmtpProtocolError, Timeouts,
)
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.targets import parse_target
from tests.fakes.smtp import Close, Delay, Expect, FakeSmtpServer, Reset, Send, Silence


def ctx(**kw):
    timeouts = Timeouts(connect=2, greeting=kw.pop("greeting", 2), command=kw.pop("command", 2), tls=2, endpoint=10)
    return ProbeContext(timeouts=timeouts, limits=kw.pop("limits", Limits()), secrets=kw.pop("secrets", ()))


async def greet(script, **kw):
    async with FakeSmtpServer(script=script) as srv:
        tr = Transcript(kw.get("secrets", ()))
        client = await SmtpClient.open(parse_target(srv.target), ctx(**kw), tr)
        try:
            return await client.read_greeting(), tr, client
        finally:
            await client.close()


def test_multiline_greeting_split_across_reads():
    reply, tr, _ = asyncio.run(greet([Send(b"220-mx.exa"), Delay(0.05), Send(b"mple.org ESMTP\r\n220-second\r"), Delay(0.05), Send(b"\n220 last line\r\n")]))
    assert reply.code == 220
    assert reply.lines == ["mx.example.org ESMTP", "second", "last line"]
    assert [ln.text for ln in tr.lines if ln.direction == "S"] == ["220-mx.example.org ESMTP", "220-second", "220 last line"]


def test_bare_lf_and_code_only_lines_are_tolerated():
    reply, _, _ = asyncio.run(greet([Send(b"220-a\n220\n")]))
    assert reply.code == 220 and reply.lines == ["a", ""]


def test_delayed_greeting_within_limit_is_waited_for():
    reply, _, _ = asyncio.run(greet([Delay(0.6), Send(b"220 slow.example.org\r\n")], greeting=3))
    assert reply.code == 220


def test_silent_server_times_out_at_greeting_timeout():
    t0 = time.monotonic()
    with pytest.raises(ReplyTimeout):
        asyncio.run(greet([Silence()], greeting=0.5))
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize(
    "script, error",
    [
        ([Send(b"HTTP/1.1 400 Bad Request\r\n")], SmtpProtocolError),
        ([Send(b"\x16\x03\x01\x00\x02\x02\x28\r\n")], SmtpProtocolError),
        ([Send(b"220-first\r\n250 other code\r\n")], SmtpProtocolError),
        ([Close()], ConnectionClosed),
        ([Send(b"220-partial")], ConnectionClosed),
        ([Reset()], ConnectionClosed),
        ([Send(b"220 " + b"x" * 10000 + b"\r\n")], ReplyTooLarge),
        ([Send(b"220-x\r\n" * 300 + b"220 end\r\n")], ReplyTooLarge),
    ],
)
def test_hostile_greetings_become_typed_errors(script, error):
    with pytest.raises(error):
        asyncio.run(greet(script))


def test_session_byte_cap():
    limits = Limits(max_line=4096, max_reply_lines=10_000, max_session_bytes=2000)
    with pytest.raises(ReplyTooLarge, match="more than 2000 bytes"):
        asyncio.run(greet([Send(b"220-" + b"y" * 100 + b"\r\n")] * 50, limits=limits))


def test_control_characters_are_escaped_in_transcript():
    reply, tr, _ = asyncio.run(greet([Send(b"220 evil\x1b[31m\x00 <script>\r\n")]))
    assert "\x1b" not in tr.lines[-1].text and "\\x1b" in tr.lines[-1].text
    assert "<script>" in reply.lines[0]  # escaping for HTML happens at render time


def test_refused_port_is_connect_failed():
    async def go():
        srv = await FakeSmtpServer().start()
        port = srv.port
        await srv.stop()
        await asyncio.sleep(0.05)
        await SmtpClient.open(parse_target(f"127.0.0.1:{port}"), ctx(), Transcript())

    with pytest.raises(ConnectFailed, match="refused"):
        asyncio.run(go())


def test_secrets_are_redacted_from_transcript():
    async def go():
        async with FakeSmtpServer(script=[Send(b"220 hi\r\n"), Expect(), Send(b"535 no\r\n")]) as srv:
            tr = Transcript(["s3cret-pass"])
            client = await SmtpClient.open(parse_target(srv.target), ctx(), tr)
            await client.read_greeting()
            await client.command("AUTH PLAIN AHVzZXIAczNjcmV0LXBhc3M= s3cret-pass")
            await client.close()
            return tr, srv

    tr, srv = asyncio.run(go())
    assert all("s3cret-pass" not in ln.text for ln in tr.lines)
    assert "s3cret-pass" in srv.received[0][0]  # it was really sent, only the record is scrubbed


def test_quit_does_not_wait_for_a_221_the_server_holds_back():
    # Exim 4.96 holds its 221 for 200 ms, a tarpit for seconds: on every sequential connection of a
    # scan. The QUIT is sent (the server sees a polite goodbye), the 221 is not waited for.
    async def main():
        async with FakeSmtpServer(script=[Send(b"220 mx.example.org\r\n"), Expect(), Delay(3), Send(b"221 bye\r\n")]) as srv:
            client = await SmtpClient.open(parse_target(srv.target), ctx(command=5), Transcript())
            await client.read_greeting()
            t0 = time.monotonic()
            await client.quit()
            elapsed = time.monotonic() - t0
            await asyncio.sleep(0.1)
            return elapsed, srv.received[0]

    elapsed, received = asyncio.run(main())
    assert elapsed < 1.0 and received == ["QUIT"]


def test_pipelined_lines_go_out_in_one_write_and_are_all_in_the_transcript():
    # Written one by one, every reply group of a pipelined batch waited on the peer's delayed ACK
    # (~40 ms per batch against Postfix).
    async def main():
        async with FakeSmtpServer(script=[Send(b"220 mx.example.org\r\n"), Expect(), Expect(), Expect()]) as srv:
            tr = Transcript()
            client = await SmtpClient.open(parse_target(srv.target), ctx(), tr)
            await client.read_greeting()
            writes: list[bytes] = []
            real_write = client.writer.write
            client.writer.write = lambda data: (writes.append(data), real_write(data))[1]  # type: ignore[method-assign]
            await client.send_lines(["RCPT TO:<a@example.org>"] * 3)
            await asyncio.sleep(0.1)
            await client.close()
            return writes, tr, srv.received[0]

    writes, tr, received = asyncio.run(main())
    assert writes == [b"RCPT TO:<a@example.org>\r\n" * 3]
    assert received == ["RCPT TO:<a@example.org>"] * 3
    assert [ln.text for ln in tr.lines if ln.direction == "C"] == ["RCPT TO:<a@example.org>"] * 3
    with pytest.raises(ValueError):
        asyncio.run(SmtpClient.send_lines(None, ["RCPT TO:<a@example.org>\r\nDATA"]))  # type: ignore[arg-type]
