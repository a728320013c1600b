"""SilenceWatch: what counts as silence, what disarms it, and what is refused once it gave up.

The watch must never fire on a server that merely answers late (Postfix's postscreen greets after
a pause, a server busy after a connection burst greets late): only a dripped greeting line or a
step that got nothing back within its whole timeout counts, and one answer at a step disarms it.
"""

from __future__ import annotations

import asyncio

import pytest

from smtpaudit.probes.base import ProbeContext, ReplyTimeout, SilenceWatch, Silenced, Timeouts
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.targets import Endpoint, Mode, Role
from tests.fakes.smtp import Delay, FakeSmtpServer, Send, Silence, simple_responder


def test_three_silences_at_a_step_never_answered_give_up() -> None:
    w = SilenceWatch(3)
    for _ in range(2):
        w.silent("tls")
    assert not w.gave_up("tls")
    w.silent("tls")
    assert w.gave_up("tls") and not w.gave_up("ehlo")
    assert "3 connections" in w.why("tls")


def test_one_answer_disarms_a_step_for_good() -> None:
    w = SilenceWatch(3)
    w.answered("tls")  # e.g. the session's STARTTLS handshake completed
    for _ in range(10):
        w.silent("tls")  # then SSLv3 hellos went unanswered: specific, not a silent server
    assert not w.gave_up("tls")


def _ctx(command: float = 0.6) -> ProbeContext:
    return ProbeContext(timeouts=Timeouts(connect=2, greeting=4, command=command, tls=2), silence=SilenceWatch(3))


async def _greetings(server: FakeSmtpServer, ctx: ProbeContext, n: int) -> list[str]:
    """Open ``n`` connections one after another and read each greeting; what happened to each."""
    out = []
    async with server:
        ep = Endpoint(server.host, server.port, Mode.STARTTLS, Role.MX, spec=server.target)
        for i in range(n):
            try:
                client = await SmtpClient.open(ep, ctx, Transcript(), conn=i)
            except Silenced:
                out.append("refused")
                continue
            try:
                reply = await client.read_greeting()
                out.append(str(reply.code))
            except ReplyTimeout:
                out.append("timeout")
            finally:
                await client.close()
    return out


@pytest.mark.parametrize("script", [
    [Delay(1.3), Send(b"220 late.example.test ESMTP\r\n")],  # late, whole: postscreen, a busy server
    [Send(b"220-late.example.test\r\n"), Delay(1.3), Send(b"220 ESMTP\r\n")],  # whole lines, a pause between
], ids=["late", "late-second-line"])
def test_a_late_greeting_is_waited_for_every_time(script: list) -> None:
    ctx = _ctx()
    server = FakeSmtpServer(script=script)
    assert asyncio.run(_greetings(server, ctx, 4)) == ["220"] * 4
    assert ctx.silence is not None and ctx.silence.heard["greeting"] and not ctx.silence.gave_up("greeting")


def test_a_dripped_greeting_gives_up_after_three_connections() -> None:
    ctx = _ctx()
    server = FakeSmtpServer(script=[Send(b"22"), Delay(0.6), Send(b"0 drip.example"), Delay(0.6), Send(b".test\r\n")])
    # Each dripped greeting still arrives and is read; the fourth connection is not opened.
    assert asyncio.run(_greetings(server, ctx, 4)) == ["220", "220", "220", "refused"]
    assert server.connections == 3


async def _ehlos(server: FakeSmtpServer, ctx: ProbeContext, n: int) -> list[str]:
    out = []
    async with server:
        ep = Endpoint(server.host, server.port, Mode.STARTTLS, Role.MX, spec=server.target)
        for i in range(n):
            try:
                client = await SmtpClient.open(ep, ctx, Transcript(), conn=i)
            except Silenced:
                out.append("refused")
                continue
            try:
                await client.read_greeting()
                out.append(str((await client.ehlo()).code))
            except ReplyTimeout:
                out.append("timeout")
            finally:
                await client.close()
    return out


def test_silence_at_ehlo_gives_up_after_three_connections() -> None:
    ctx = _ctx()
    quiet = simple_responder()
    server = FakeSmtpServer(script=[Send(b"220 quiet.example.test ESMTP\r\n")],
                            responder=lambda line: Silence() if line.upper().startswith("EHLO") else quiet(line))
    assert asyncio.run(_ehlos(server, ctx, 5)) == ["timeout", "timeout", "timeout", "refused", "refused"]
    assert server.connections == 3


def test_a_server_that_answered_ehlo_once_is_always_waited_for() -> None:
    ctx = _ctx()
    answered = {"n": 0}
    normal = simple_responder()

    def respond(line: str):
        if line.upper().startswith("EHLO"):
            answered["n"] += 1
            if answered["n"] > 1:
                return Silence()
        return normal(line)

    server = FakeSmtpServer(script=[Send(b"220 flaky.example.test ESMTP\r\n")], responder=respond)
    assert asyncio.run(_ehlos(server, ctx, 5)) == ["250", "timeout", "timeout", "timeout", "timeout"]


def test_a_probe_s_own_short_wait_is_not_silence() -> None:
    """Only a full command timeout counts: probes that wait less on purpose prove nothing."""
    ctx = _ctx(command=0.6)
    quiet = simple_responder()
    server = FakeSmtpServer(script=[Send(b"220 quiet.example.test ESMTP\r\n")],
                            responder=lambda line: Silence() if line.upper().startswith("NOOP") else quiet(line))

    async def go() -> None:
        async with server:
            ep = Endpoint(server.host, server.port, Mode.STARTTLS, Role.MX, spec=server.target)
            for i in range(4):
                client = await SmtpClient.open(ep, ctx, Transcript(), conn=i)
                await client.read_greeting()
                await client.ehlo()
                with pytest.raises(ReplyTimeout):
                    await client.command("NOOP", timeout=0.2)
                await client.close()

    asyncio.run(go())
    assert ctx.silence is not None and ctx.silence.silences["after_ehlo"] == 0
