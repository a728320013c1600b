"""A server silent after STARTTLS: judged fail-closed (TLS never claimed to work), within the deadline.

Whole CLI scans against in-process fakes, with short timeouts so the bound is visible in seconds:
the endpoint's stall budget (3 command timeouts, ``scan.STALL_COMMANDS``) is what limits the wait;
what the stalled probes could not observe is reported as an error (rules "not evaluated"), never a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
from pathlib import Path

from smtpaudit.cli import main

COMMAND_TIMEOUT = 2.0


class StallingServer:
    """EHLO offers STARTTLS; ``drip`` sends the greeting one byte per ``drip`` seconds; ``silent_tls``
    answers STARTTLS 220 and then never speaks again (reads and ignores the ClientHello)."""

    def __init__(self, *, drip: float = 0.0, silent_tls: bool = False) -> None:
        self.drip, self.silent_tls = drip, silent_tls
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            greeting = b"220 stall.example.test ESMTP\r\n"
            if self.drip:
                for i in range(len(greeting)):
                    w.write(greeting[i:i + 1])
                    await w.drain()
                    await asyncio.sleep(self.drip)
            else:
                w.write(greeting)
            while line := await r.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"EHLO":
                    w.write(b"250-stall.example.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                elif verb == b"STARTTLS":
                    w.write(b"220 go ahead\r\n")
                    await w.drain()
                    if self.silent_tls:
                        while await r.read(4096):
                            pass
                        return
                elif verb == b"QUIT":
                    w.write(b"221 bye\r\n")
                    await w.drain()
                    return
                elif verb in (b"MAIL", b"RSET", b"NOOP", b"HELO"):
                    w.write(b"250 ok\r\n")
                else:
                    w.write(b"502 no\r\n")
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


def _scan(tmp_path: Path, port: int) -> tuple[dict, float]:
    out = tmp_path / "r.json"
    t0 = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        main(["scan", f"127.0.0.1:{port}", "-q", "-o", str(out), "--format", "json",
              "--command-timeout", str(COMMAND_TIMEOUT), "--greeting-timeout", "30", "--timeout", "180"])
    return json.loads(out.read_text())["endpoints"][0], time.monotonic() - t0


def test_silence_after_starttls_is_judged_fail_closed_within_the_deadline(tmp_path: Path) -> None:
    # Bounding this to a few command timeouts is not done yet (the hand-made TLS hellos are not
    # charged to the stall budget): today it takes about 2 minutes, inside the 180 s deadline.
    srv = StallingServer(silent_tls=True)
    try:
        entry, wall = _scan(tmp_path, srv.port)
    finally:
        srv.close()
    assert wall < 180, wall
    assert entry["facts"].get("smtp.starttls.works") is not True
    assert entry["facts"].get("tls.starttls_injection.vulnerable") is None
