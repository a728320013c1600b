"""A 421 greeting from a busy server (Exim's smtp_accept_max counts closed connections it has not
reaped yet) gets a fresh connection a moment later; one that keeps saying 421 still ends the probe."""

from __future__ import annotations

import asyncio

from smtpaudit.probes.base import ProbeContext, Timeouts
from smtpaudit.probes.smtp import client as client_mod
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.targets import parse_target


async def _server(busy_first: int) -> tuple[asyncio.AbstractServer, list[int]]:
    seen = [0]

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen[0] += 1
        w.write(b"421 Too many concurrent SMTP connections; please try again later\r\n" if seen[0] <= busy_first
                else b"220 mx.example.test ESMTP\r\n")
        await w.drain()
        w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), seen


def _open(server: asyncio.AbstractServer) -> "asyncio.Future[tuple[SmtpClient, object]]":
    ep = parse_target(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    ctx = ProbeContext(timeouts=Timeouts(connect=2, greeting=2, command=2, tls=2))
    return SmtpClient.open_greeted(ep, ctx, Transcript(), conn=0)


def test_busy_greeting_is_retried(monkeypatch) -> None:
    monkeypatch.setattr(client_mod, "busy_delay", lambda attempt: 0.01)

    async def main() -> None:
        server, seen = await _server(busy_first=2)
        async with server:
            client, greeting = await _open(server)
            await client.close()
        assert greeting.code == 220 and client.busy_retries == 2 and seen[0] == 3

    asyncio.run(main())


def test_a_server_that_keeps_saying_421_is_not_retried_forever(monkeypatch) -> None:
    monkeypatch.setattr(client_mod, "busy_delay", lambda attempt: 0.01)

    async def main() -> None:
        server, seen = await _server(busy_first=99)
        async with server:
            client, greeting = await _open(server)
            await client.close()
        assert greeting.code == 421 and seen[0] == 1 + client_mod.BUSY_RETRIES

    asyncio.run(main())
