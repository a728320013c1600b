"""Every socket a probe opens to a scanned host goes through here, and takes one per-host slot.

``--per-host N`` is a promise to the server's operator: never more than N connections from us at
once. The promise is kept at the only place where sockets are made, not by each probe: a slot is
taken before ``connect()`` and given back when the writer is closed. Slots a probe forgot to give
back (a cancelled task, a bug) are reclaimed when its endpoint finishes, so a leak can never
starve another endpoint of the same host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import socket
import struct
from typing import Any, Protocol


class HostSlots:
    """At most ``limit`` open sockets to one host; remembers the peak for the report and the tests.

    Probes do not take sockets from here one by one: a probe first *reserves* the number of
    sockets it may hold at once (``reserve``), all at once, and opens its connections inside that
    budget. Nobody waits for a slot while holding one, so two endpoints of one host can never
    deadlock each other (each holding one socket and waiting for a second).
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self._free = self.limit
        self._cond = asyncio.Condition()
        self.in_use = 0  # sockets open right now
        self.peak = 0
        self.opened = 0

    def opened_socket(self) -> None:
        self.in_use += 1
        self.opened += 1
        self.peak = max(self.peak, self.in_use)

    def closed_socket(self) -> None:
        self.in_use -= 1

    async def reserve(self, count: int, minimum: int | None = None) -> "Budget":
        """Wait until ``count`` slots (capped at the limit) are free, take them together.

        With ``minimum``, take as many as are free once at least ``minimum`` are: a probe that
        merely runs faster with more sockets starts beside a long one instead of after it.
        """
        count = max(1, min(int(count), self.limit))
        least = count if minimum is None else max(1, min(int(minimum), count))
        async with self._cond:
            await self._cond.wait_for(lambda: self._free >= least)
            taken = min(count, self._free)
            self._free -= taken
        return Budget(self, taken)

    async def give_back(self, count: int) -> None:
        async with self._cond:
            self._free += count
            self._cond.notify_all()


class Budget:
    """The sockets one probe may hold at once: ``limit`` of its host's slots, reserved together."""

    def __init__(self, parent: HostSlots, limit: int) -> None:
        self.parent = parent
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self.returned = False

    async def acquire(self) -> None:
        await self._sem.acquire()
        self.parent.opened_socket()

    def release(self) -> None:
        self.parent.closed_socket()
        self._sem.release()

    async def close(self) -> None:
        """Give the reserved slots back to the host (once)."""
        if not self.returned:
            self.returned = True
            await self.parent.give_back(self.limit)


class SocketSlots(Protocol):
    """What a connection needs from a budget: a Budget, or any semaphore (library use, tests)."""

    async def acquire(self) -> Any: ...

    def release(self) -> None: ...


class Lease:
    """One taken slot; released exactly once."""

    def __init__(self, slots: "SocketSlots | None") -> None:
        self._slots = slots
        self.released = slots is None
        self.writer: asyncio.StreamWriter | None = None

    def release(self) -> None:
        if not self.released:
            self.released = True
            assert self._slots is not None
            self._slots.release()


class Leases:
    """The slots held by one endpoint's probes, so the endpoint can reclaim them when it ends."""

    def __init__(self) -> None:
        self._open: set[Lease] = set()

    def add(self, lease: Lease) -> None:
        self._open.add(lease)

    def discard(self, lease: Lease) -> None:
        self._open.discard(lease)

    def reclaim(self) -> int:
        """Close every socket still open and give its slot back; returns how many there were."""
        count = 0
        for lease in list(self._open):
            if not lease.released:
                count += 1
                if lease.writer is not None:
                    try:
                        lease.writer.close()
                    except Exception:  # noqa: BLE001 - the socket may already be broken
                        pass
                lease.release()
        self._open.clear()
        return count


class SlottedWriter:
    """A StreamWriter whose ``close()`` also gives the host slot back (everything else is delegated)."""

    def __init__(self, writer: asyncio.StreamWriter, lease: Lease, leases: Leases | None) -> None:
        self._writer = writer
        self._lease = lease
        self._leases = leases
        lease.writer = writer

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._lease.release()
            if self._leases is not None:
                self._leases.discard(self._lease)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


async def open_connection(
    host: str,
    port: int,
    *,
    slots: "SocketSlots | None",
    leases: Leases | None = None,
    timeout: float,
    first_bytes: bytes | None = None,
    **kwargs: Any,
) -> tuple[asyncio.StreamReader, SlottedWriter]:
    """``asyncio.open_connection`` that first waits for a slot of ``host``; the slot is held until close.

    ``timeout`` bounds the connect (and handshake) only, not the wait for a slot: a host busy with
    our own other probes must not look like a host that does not answer. The wait for a slot is
    bounded by the endpoint deadline. Raises ``asyncio.TimeoutError`` when the connect times out.

    ``first_bytes`` (plain TCP only) are sent the instant the connection is up, from a worker
    thread with a blocking socket: through the event loop they leave a few loop turns later,
    late enough that a server which greets at once usually greets first (the early-talker test
    then measures our latency, not the server's check).
    """
    lease = Lease(slots)
    if slots is not None:
        await slots.acquire()
    try:
        if first_bytes is not None:
            sock = await _in_connect_thread(host, port, first_bytes, timeout)
            try:
                reader, writer = await asyncio.open_connection(sock=sock, **kwargs)
            except BaseException:
                sock.close()
                raise
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, **kwargs), timeout=timeout)
    except BaseException:
        lease.release()
        raise
    slotted = SlottedWriter(writer, lease, leases)
    if leases is not None:
        leases.add(lease)
    return reader, slotted


# Blocking connects get their own threads: in the default executor a few hosts that stop
# answering SYNs would hold its threads for a connect timeout each, and every other endpoint's
# name resolution (loop.getaddrinfo) would queue behind them. Threads are made on demand.
_CONNECT_THREADS: concurrent.futures.ThreadPoolExecutor | None = None


async def _in_connect_thread(host: str, port: int, data: bytes, timeout: float) -> socket.socket:
    """``_connect_and_send`` in a connect thread; a socket finished after we stopped waiting
    (the endpoint deadline cancelled us) is closed, not leaked."""
    global _CONNECT_THREADS
    if _CONNECT_THREADS is None:
        _CONNECT_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="smtpaudit-connect")
    job = _CONNECT_THREADS.submit(_connect_and_send, host, port, data, timeout)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        job.add_done_callback(_close_result)  # a connect in progress cannot be stopped: close what it makes
        raise


def _close_result(job: "concurrent.futures.Future[socket.socket]") -> None:
    if not job.cancelled() and job.exception() is None:
        job.result().close()


def _connect_and_send(host: str, port: int, data: bytes, timeout: float) -> socket.socket:
    """Connect and send ``data`` at once; the socket is handed back non-blocking for asyncio.

    Where the kernel allows it, connect and send are one blocking ``sendto(MSG_FASTOPEN)``: the
    bytes leave right after the handshake (in the SYN when the server has given a Fast Open
    cookie), with no Python between the two, so neither this thread waiting for the GIL nor the
    event loop can make them late. Otherwise a blocking connect, then sendall.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    fastopen = getattr(socket, "MSG_FASTOPEN", 0)
    if fastopen:
        sock = socket.socket(family, kind, proto)
        try:
            # A blocking socket (a Python timeout would make it non-blocking); the kernel's send
            # timeout bounds the connect inside sendto.
            # (A zero timeval would mean "wait forever".)
            wait = max(timeout, 0.001)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(wait), int(wait % 1 * 1e6)))
            sent = sock.sendto(data, fastopen, addr)
            sock.settimeout(timeout)
            sock.sendall(data[sent:])
            sock.setblocking(False)
            return sock
        except BlockingIOError:
            sock.close()
            raise TimeoutError(f"no TCP connection within {timeout:g}s") from None
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOPROTOOPT):
                raise
        except BaseException:
            sock.close()
            raise
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(data)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
