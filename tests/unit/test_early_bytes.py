"""net.open_connection(first_bytes=...): bytes that leave with the connection (the early-talker test)."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from smtpaudit.probes import net


async def _server_sees_before_speaking() -> bytes:
    """A server that, the moment it accepts, looks for bytes already there (without sending any)."""
    seen: list[bytes] = []
    ready = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await asyncio.wait_for(reader.readline(), timeout=2))
        finally:
            ready.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await net.open_connection("127.0.0.1", port, slots=None, timeout=2, first_bytes=b"EHLO early.example.net\r\n")
        await asyncio.wait_for(ready.wait(), timeout=3)
        writer.close()
    finally:
        server.close()
    return seen[0]


def test_first_bytes_arrive_without_waiting_for_the_server() -> None:
    assert asyncio.run(_server_sees_before_speaking()) == b"EHLO early.example.net\r\n"


def test_first_bytes_without_fast_open_support(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform without MSG_FASTOPEN connects, then sends."""
    monkeypatch.delattr(socket, "MSG_FASTOPEN", raising=False)
    assert asyncio.run(_server_sees_before_speaking()) == b"EHLO early.example.net\r\n"


def test_refused_connection_is_reported_as_refused() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now

    async def go() -> None:
        await net.open_connection("127.0.0.1", port, slots=None, timeout=2, first_bytes=b"EHLO x\r\n")

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(go())


def test_the_slot_is_given_back_when_the_connect_fails() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    async def go() -> int:
        slots = asyncio.Semaphore(1)
        with pytest.raises(ConnectionRefusedError):
            await net.open_connection("127.0.0.1", port, slots=slots, timeout=2, first_bytes=b"EHLO x\r\n")
        return slots._value  # type: ignore[attr-defined]

    assert asyncio.run(go()) == 1


def _unanswering_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A port whose accept queue is full: the kernel drops further SYNs, so a connect hangs
    (what a host that stopped answering looks like, without leaving loopback)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(2):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    return server, fillers


def test_a_connect_that_hangs_times_out_and_a_cancelled_one_leaks_no_socket() -> None:
    import time

    server, fillers = _unanswering_listener()
    port = server.getsockname()[1]
    try:
        async def timed_out() -> float:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await net.open_connection("127.0.0.1", port, slots=None, timeout=0.5, first_bytes=b"EHLO x\r\n")
            return time.monotonic() - t0

        assert asyncio.run(timed_out()) < 2.0

        async def cancelled() -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(net.open_connection("127.0.0.1", port, slots=None, timeout=3, first_bytes=b"EHLO x\r\n"), 0.1)
            # Now the queue drains: the kernel's SYN retry (about 1 s) connects the abandoned socket,
            # whose thread then hands it over to nobody: it must be closed, not left to the GC.
            accepted = [server.accept()[0] for _ in range(2)]
            await asyncio.sleep(2.0)
            for a in accepted:
                a.close()

        server.setblocking(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            asyncio.run(cancelled())
            gc.collect()
        leaks = [w for w in caught if issubclass(w.category, ResourceWarning) and "socket" in str(w.message)]
        assert not leaks, [str(w.message) for w in leaks]
    finally:
        for c in fillers:
            c.close()
        server.close()
