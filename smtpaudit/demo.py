"""`smtpaudit demo`: a deliberately weak SMTP server on a loopback port, scanned end to end.

The server discloses an old Exim version, offers AUTH PLAIN/LOGIN without STARTTLS, and answers
VRFY/EXPN truthfully: everything a hardened server must not do. It delivers nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

DEMO_HOST = "127.0.0.1"


@dataclass
class WeakServerConfig:
    banner: str = "demo.smtpaudit.test ESMTP Exim 4.91 #1 ready"
    hostname: str = "demo.smtpaudit.test"
    auth: tuple[str, ...] = ("PLAIN", "LOGIN")
    users: tuple[str, ...] = ("postmaster", "root")
    extra_keywords: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 52428800", "HELP")
    commands: list[str] = field(default_factory=list)  # what clients sent, for tests


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: WeakServerConfig) -> None:
    def send(line: str) -> None:
        writer.write(line.encode() + b"\r\n")

    send(f"220 {cfg.banner}")
    try:
        while True:
            raw = await asyncio.wait_for(reader.readline(), timeout=30)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            cfg.commands.append(line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                lines = [cfg.hostname + " Hello " + arg, *cfg.extra_keywords]
                if cfg.auth:
                    lines.append("AUTH " + " ".join(cfg.auth))
                for i, text in enumerate(lines):
                    send(("250 " if i == len(lines) - 1 else "250-") + text)
            elif verb == "HELO":
                send(f"250 {cfg.hostname}")
            elif verb == "HELP":
                send("214-Commands supported:")
                send("214 HELO EHLO MAIL RCPT DATA NOOP QUIT RSET HELP VRFY EXPN AUTH")
            elif verb == "AUTH":
                if arg.upper().startswith("LOGIN"):
                    send("334 " + base64.b64encode(b"Username:").decode())
                    await reader.readline()
                    send("334 " + base64.b64encode(b"Password:").decode())
                    await reader.readline()
                send("535 5.7.8 Incorrect authentication data")
            elif verb in ("VRFY", "EXPN"):
                name = arg.strip().strip("<>").split("@")[0].lower()
                if name in cfg.users:
                    send(f"250 {name.capitalize()} <{name}@{cfg.hostname}>")
                else:
                    send(f"550 5.1.1 <{arg.strip()}>: no such user")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                send("250 OK")
            elif verb == "DATA":
                send("554 5.3.0 this demo server accepts no mail")
            elif verb == "QUIT":
                send("221 bye")
                await writer.drain()
                return
            elif verb == "STARTTLS":
                send("454 4.7.0 TLS not available")
            else:
                send("500 5.5.1 unrecognised command")
            await writer.drain()
    except (asyncio.TimeoutError, ConnectionError):
        return
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def weak_server(cfg: WeakServerConfig | None = None, host: str = DEMO_HOST, port: int = 0) -> AsyncIterator[int]:
    """Serve the weak server on ``host``; yields the port it listens on."""
    cfg = cfg or WeakServerConfig()
    server = await asyncio.start_server(lambda r, w: _session(r, w, cfg), host, port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def run_demo(output: str) -> int:
    """Start the weak server, scan it through the API in the same event loop, write the JSON report,
    print the summary. Exit 0 when the scan was complete (its findings are the point of the demo)."""
    from smtpaudit import api
    from smtpaudit.report import model, text
    from smtpaudit.workflows import write_text

    ruleset = api.load_ruleset()

    async def go() -> dict:
        async with weak_server() as port:
            sys.stdout.write(f"demo: deliberately weak SMTP server listening on {DEMO_HOST}:{port}\n")
            return await api.scan_async([f"{DEMO_HOST}:{port}"], ruleset,
                                        api.ScanOptions(fail_on="critical", argv=("demo",)))

    report = asyncio.run(go())
    text.render(report, sys.stdout)
    write_text(output, model.dumps(report))
    sys.stdout.write(f"demo: the full JSON report (facts, transcript, findings) is in {output}\n")
    return 0 if report["gate"]["exit_code"] in (0, 1) else int(report["gate"]["exit_code"])
