"""A policy-driven fake MTA on 127.0.0.1 for the behaviour probes (relay, submission, enumeration, limits, smuggling).

Where ``tests/fakes/smtp.py`` plays scripts byte by byte, this one keeps SMTP state and answers by
policy: which domains are local, which users exist, whether it relays, how VRFY answers, after how
many errors / recipients / failed AUTHs it gives up, whether it needs TLS or AUTH, which
end-of-data sequences it accepts. Everything a client sends is recorded (``commands`` per
connection, ``raw`` bytes), so tests can prove what a probe never did (DATA during relay checks,
completing a timed-out message). It delivers nothing: ``messages`` only counts accepted DATA.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class FakeMta:
    hostname: str = "mx.example.test"
    banner: str | None = None
    local_domains: tuple[str, ...] = ("mx.example.test", "example.test")
    users: tuple[str, ...] = ("postmaster", "alice")
    open_relay: bool = False
    relay_if: Callable[[str], bool] | None = None  # relay only foreign recipients this predicate accepts
    accept_all_recipients: bool = False  # a catch-all: every local part of every local domain is accepted
    vrfy: str = "truthful"  # truthful | 252 | 502
    expn: str = "502"  # truthful | 502
    pipelining: bool = True
    enforce_sync: bool = False  # 554 + close when commands arrive pipelined after EHLO (Exim/Postfix forbid_unauth_pipelining)
    error_limit: int | None = None  # 421 + close after this many errors
    error_421_code: bytes = b"421 4.7.0 Too many errors\r\n"
    reject_literal_senders: bool = False  # Exim: 501 "domain literals not allowed" for MAIL FROM:<x@[ip]>
    error_sleep_after: int | None = None  # tarpit: sleep error_sleep seconds per error past this count
    error_sleep: float = 1.0
    recipient_limit: int | None = None  # 452 past this many recipients per message
    auth_mechanisms: tuple[str, ...] = ()
    auth_users: dict[str, str] = field(default_factory=dict)
    auth_requires_tls: bool = True
    auth_fail_delay: float = 0.0  # Dovecot's auth_failure_delay: each failure answered this late
    auth_fail_limit: int | None = None  # 421 + close after this many failed AUTH
    require_tls_for_mail: bool = False  # 530 "Must issue a STARTTLS command first"
    require_auth: bool = False  # 530 for MAIL without AUTH
    tls_context: ssl.SSLContext | None = None
    greeting_delay: float = 0.0
    reject_early_talkers: bool = False
    idle_timeout: float = 60.0
    max_connections: int | None = None  # 421 at greeting past this many concurrent connections
    eod_accepted: tuple[bytes, ...] = (b"\r\n.\r\n",)
    reject_bare_lf: bool = False  # Postfix smtpd_forbid_bare_newline = reject: 521 and hang up  # end-of-data sequences accepted (after a text line)
    # recorded
    commands: list[list[str]] = field(default_factory=list)
    raw: list[bytearray] = field(default_factory=list)
    data_started: int = 0
    messages: int = 0
    connections: int = 0
    active: int = 0
    max_active: int = 0
    host: str = "127.0.0.1"
    port: int = 0

    # ---------------------------------------------------------------- helpers
    def _is_local(self, address: str) -> bool | None:
        """True for an existing local user, False for a local domain's unknown user, None for a foreign domain."""
        addr = address.strip().strip("<>")
        if "@" not in addr:
            local, domain = addr, self.local_domains[0]
        else:
            local, domain = addr.rsplit("@", 1)
        if any(c in local for c in "%!@\"") or addr.startswith("@"):
            return None  # routing tricks: treated as foreign
        if domain.lower() not in self.local_domains:
            return None
        return self.accept_all_recipients or local.lower() in self.users

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        lines: list[str] = []
        raw = bytearray()
        self.commands.append(lines)
        self.raw.append(raw)
        st = {"errors": 0, "rcpts": 0, "mail": False, "tls": False, "auth": False, "auth_fail": 0, "ehlo": False}

        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        async def readline() -> bytes:
            line = await asyncio.wait_for(reader.readline(), timeout=self.idle_timeout)
            raw.extend(line)
            return line

        async def error(reply: bytes) -> bool:
            """Send an error reply; False when the error limit closes the session."""
            st["errors"] += 1
            if self.error_sleep_after is not None and st["errors"] > self.error_sleep_after:
                await asyncio.sleep(self.error_sleep)
            if self.error_limit is not None and st["errors"] >= self.error_limit:
                await send(self.error_421_code)
                return False
            await send(reply)
            return True

        try:
            if self.max_connections is not None and self.active > self.max_connections:
                await send(b"421 4.7.0 Too many concurrent connections\r\n")
                return
            if self.greeting_delay:
                try:
                    early = await asyncio.wait_for(reader.read(1), timeout=self.greeting_delay)
                except asyncio.TimeoutError:
                    early = b""
                if early:
                    raw.extend(early)
                    if self.reject_early_talkers:
                        await send(b"554 5.5.1 SMTP synchronization error\r\n")
                        return
                    rest = await reader.readline()
                    raw.extend(rest)
                    pending = (early + rest).decode("utf-8", "replace")  # answered as the first command
                else:
                    pending = None
            else:
                pending = None
            await send(f"220 {self.banner or self.hostname + ' ESMTP'}\r\n".encode())
            while True:
                if pending is not None:
                    line_b, pending = pending.encode(), None
                else:
                    line_b = await readline()
                if not line_b:
                    return
                line = line_b.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line)
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                if verb in ("EHLO", "HELO"):
                    if self.enforce_sync and reader._buffer:  # type: ignore[attr-defined]
                        await send(b"554 5.5.0 Error: SMTP protocol synchronization\r\n")
                        return
                    st.update(mail=False, rcpts=0, ehlo=True)
                    if verb == "HELO":
                        await send(f"250 {self.hostname}\r\n".encode())
                        continue
                    kws = ["SIZE 10240000"]
                    if self.pipelining:
                        kws.append("PIPELINING")
                    if self.tls_context is not None and not st["tls"]:
                        kws.append("STARTTLS")
                    if self.auth_mechanisms and (st["tls"] or not self.auth_requires_tls):
                        kws.append("AUTH " + " ".join(self.auth_mechanisms))
                    out = [self.hostname] + kws
                    await send(b"".join((b"250-" if i < len(out) - 1 else b"250 ") + t.encode() + b"\r\n" for i, t in enumerate(out)))
                elif verb == "STARTTLS" and self.tls_context is not None and not st["tls"]:
                    await send(b"220 2.0.0 Ready to start TLS\r\n")
                    await writer.start_tls(self.tls_context)
                    st.update(tls=True, mail=False, rcpts=0, ehlo=False)
                elif verb == "AUTH":
                    ok = await self._auth(arg, readline, send, st)
                    if not ok and self.auth_fail_limit is not None and st["auth_fail"] >= self.auth_fail_limit:
                        # the failure that reaches the limit is answered with 421 instead of 535
                        await send(b"421 4.7.0 Too many authentication failures\r\n")
                        return
                elif verb == "MAIL":
                    if self.require_tls_for_mail and not st["tls"]:
                        if not await error(b"530 5.7.0 Must issue a STARTTLS command first\r\n"):
                            return
                    elif self.require_auth and not st["auth"]:
                        if not await error(b"530 5.7.0 Authentication required\r\n"):
                            return
                    elif self.reject_literal_senders and "@[" in arg:
                        if not await error(b"501 <sender>: domain literals not allowed\r\n"):
                            return
                    elif st["mail"]:
                        if not await error(b"503 5.5.1 Error: nested MAIL command\r\n"):
                            return
                    else:
                        st.update(mail=True, rcpts=0)
                        await send(b"250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    addr = arg.split(":", 1)[1] if ":" in arg else arg
                    local = self._is_local(addr)
                    if not st["mail"]:
                        if not await error(b"503 5.5.1 Error: need MAIL command\r\n"):
                            return
                    elif self.recipient_limit is not None and st["rcpts"] >= self.recipient_limit:
                        await send(b"452 4.5.3 Error: too many recipients\r\n")
                    elif local is True or st["auth"] or (local is None and (self.open_relay or (
                            self.relay_if is not None and self.relay_if(addr.strip().strip("<>"))))):
                        st["rcpts"] += 1
                        await send(b"250 2.1.5 Ok\r\n")
                    elif local is False:
                        if not await error(f"550 5.1.1 <{addr.strip('<> ')}>: Recipient address rejected: User unknown\r\n".encode()):
                            return
                    else:
                        if not await error(f"554 5.7.1 <{addr.strip('<> ')}>: Relay access denied\r\n".encode()):
                            return
                elif verb == "DATA":
                    if not st["rcpts"]:
                        if not await error(b"554 5.5.1 Error: no valid recipients\r\n"):
                            return
                        continue
                    self.data_started += 1
                    await send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    if not await self._data(reader, raw, send):
                        return
                    st.update(mail=False, rcpts=0)
                elif verb in ("VRFY", "EXPN"):
                    mode = self.vrfy if verb == "VRFY" else self.expn
                    if mode == "502":
                        if not await error(b"502 5.5.1 Command not implemented\r\n"):
                            return
                    elif mode == "252":
                        await send(b"252 2.0.0 Cannot VRFY user, but will accept message\r\n")
                    elif self._is_local(arg) is True:
                        await send(f"250 2.0.0 {arg.strip()} <{arg.strip()}@{self.hostname}>\r\n".encode())
                    elif not await error(f"550 5.1.1 <{arg.strip()}>: User unknown\r\n".encode()):
                        return
                elif verb == "RSET":
                    st.update(mail=False, rcpts=0)
                    await send(b"250 2.0.0 Ok\r\n")
                elif verb == "NOOP":
                    await send(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    await send(b"221 2.0.0 Bye\r\n")
                    return
                elif not await error(b"502 5.5.2 Error: command not recognized\r\n"):
                    return
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError):
            return
        finally:
            self.active -= 1
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def _auth(self, arg: str, readline, send, st: dict) -> bool:  # type: ignore[no-untyped-def]
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        if self.auth_requires_tls and not st["tls"]:
            await send(b"538 5.7.11 Encryption required for requested authentication mechanism\r\n")
            return False
        if mech not in self.auth_mechanisms:
            await send(b"504 5.5.4 Unrecognized authentication type\r\n")
            return False
        user = password = None
        if mech == "PLAIN":
            if not initial:
                await send(b"334 \r\n")
                initial = (await readline()).decode().strip()
            try:
                _, user, password = base64.b64decode(initial).decode().split("\0")
            except ValueError:
                pass
        elif mech == "LOGIN":
            await send(b"334 VXNlcm5hbWU6\r\n")
            user = base64.b64decode((await readline()).strip() or b"").decode("utf-8", "replace")
            await send(b"334 UGFzc3dvcmQ6\r\n")
            password = base64.b64decode((await readline()).strip() or b"").decode("utf-8", "replace")
        elif mech == "CRAM-MD5":
            challenge = b"<1896.697170952@mx.example.test>"
            await send(b"334 " + base64.b64encode(challenge) + b"\r\n")
            answer = base64.b64decode((await readline()).strip() or b"").decode("utf-8", "replace")
            user, _, digest = answer.partition(" ")
            secret = self.auth_users.get(user)
            expected = hmac.new(secret.encode(), challenge, hashlib.md5).hexdigest() if secret is not None else None
            password = secret if digest == expected else None
        if user is not None and password is not None and self.auth_users.get(user) == password:
            st["auth"] = True
            await send(b"235 2.7.0 Authentication successful\r\n")
            return True
        st["auth_fail"] += 1
        await asyncio.sleep(self.auth_fail_delay)
        if self.auth_fail_limit is None or st["auth_fail"] < self.auth_fail_limit:
            await send(b"535 5.7.8 Error: authentication failed\r\n")
        return False

    async def _data(self, reader: asyncio.StreamReader, raw: bytearray, send) -> bool:  # type: ignore[no-untyped-def]
        """Read the message body until an accepted end-of-data sequence (then 250) or the client leaves."""
        body = bytearray()
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), timeout=self.idle_timeout)
            if not chunk:
                return False
            raw.extend(chunk)
            body.extend(chunk)
            if self.reject_bare_lf and any(body[i] == 0x0A and (i == 0 or body[i - 1] != 0x0D) for i in range(len(body))):
                await send(b"521 5.5.2 mx.example.test Error: bare <LF> received\r\n")
                return False
            if any(seq in body for seq in self.eod_accepted):
                self.messages += 1
                await send(b"250 2.0.0 Ok: queued\r\n")
                return True

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> "FakeMta":
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()

    async def __aenter__(self) -> "FakeMta":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def all_commands(self) -> list[str]:
        return [c for conn in self.commands for c in conn]


class ThreadedMta:
    """Serve a FakeMta from a background thread (for tests that run the CLI's own event loop)."""

    def __init__(self, mta: FakeMta) -> None:
        self.mta = mta
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeMta:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.mta.start(), self._loop).result(5)
        return self.mta

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.mta.stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
