"""A minimal SMTP server with real STARTTLS or implicit TLS (Python's ssl), on 127.0.0.1, for TLS probe tests.

``inject_vulnerable=True`` keeps plaintext bytes pipelined after STARTTLS and answers them inside
TLS, like servers affected by CVE-2011-0411; otherwise the buffer is discarded as RFC 3207 4.2 requires.
"""

from __future__ import annotations

import asyncio
import ssl


class SmtpTlsServer:
    def __init__(self, tls: ssl.SSLContext, *, implicit: bool = False, inject_vulnerable: bool = False, hostname: str = "mail.example.test") -> None:
        self.tls = tls
        self.implicit = implicit
        self.inject_vulnerable = inject_vulnerable
        self.hostname = hostname
        self.connections = 0
        self.port = 0
        self.server: asyncio.base_events.Server | None = None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        tls_on = self.implicit
        try:
            writer.write(f"220 {self.hostname} ESMTP test\r\n".encode())
            await writer.drain()
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return
                cmd = line.decode("ascii", "replace").strip().upper()
                if cmd.startswith("EHLO"):
                    ext = [] if tls_on else ["STARTTLS"]
                    lines = [self.hostname, "PIPELINING", *ext]
                    writer.write("".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n" for i, t in enumerate(lines)).encode())
                elif cmd == "STARTTLS" and not tls_on:
                    writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                    await writer.drain()
                    if not self.inject_vulnerable:
                        reader._buffer.clear()  # type: ignore[attr-defined]
                    await writer.start_tls(self.tls)
                    tls_on = True
                    continue
                elif cmd == "NOOP":
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif cmd == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 Error: command not recognized\r\n")
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.TimeoutError, TimeoutError, ConnectionError):
            return
        finally:
            writer.close()

    async def start(self) -> "SmtpTlsServer":
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0, ssl=self.tls if self.implicit else None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
