"""The aiosmtpd lab daemon: `python -m tests.lab.aiosmtpd_server CONFIG.json`, run by tests/lab/aiosmtpd_lab.py.

One process serves three ports (smtp and submission with STARTTLS, smtps with implicit TLS) with
aiosmtpd's own SMTP class, configured only through documented aiosmtpd parameters and handler
hooks, the way an application embedding aiosmtpd would. The config JSON is written from the
variant file (`variants/aiosmtpd-*.toml`). Nothing is delivered: DATA is read and dropped.

The variant switches what a real deployment gets wrong:
- `auth_failure_reply = false`: the authenticator returns `AuthResult(success=False)`, whose
  `handled` defaults to True, so aiosmtpd sends *no reply* to a wrong password (the client waits).
- `recipients = "all"`: every RCPT is accepted (no user or relay check at all).
- `vrfy = "disclose"`: a handle_VRFY hook answers 250 for lab users and 550 for anyone else.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class LabHandler:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.users = {u.lower() for u in cfg["local_users"]}
        self.domains = {d.lower() for d in cfg["domains"]}

    def _local(self, address: str) -> tuple[bool, bool]:
        """(domain is local, user exists)."""
        local, _, domain = address.rpartition("@")
        if not local:  # a bare name: qualified with our own domain
            local, domain = address, self.cfg["hostname"]
        is_local = domain.lower() in self.domains
        return is_local, is_local and local.lower() in self.users

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if self.cfg["recipients"] == "all":
            envelope.rcpt_tos.append(address)
            return "250 OK"
        is_local, exists = self._local(address)
        if is_local and not exists:
            return "550 5.1.1 User unknown"
        if not is_local and not session.authenticated:
            return "554 5.7.1 Relay access denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_VRFY(self, server: SMTP, session: Any, envelope: Any, address: str) -> str:
        if self.cfg["vrfy"] != "disclose":
            return "252 Cannot VRFY user, but will accept message and attempt delivery"
        _, exists = self._local(address)
        return f"250 <{address}>" if exists else "550 5.1.1 User unknown"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        print(f"aiosmtpd lab: discarded a message for {envelope.rcpt_tos} ({len(envelope.content or b'')} bytes)", flush=True)
        return "250 OK discarded (lab)"


def authenticator(cfg: dict[str, Any]):  # type: ignore[no-untyped-def]
    user, password = cfg["auth_user"].encode(), cfg["auth_password"].encode()

    def check(server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password:
            return AuthResult(success=True)
        if cfg["auth_failure_reply"]:
            return AuthResult(success=False, handled=False)
        # The common mistake: `handled` defaults to True, so aiosmtpd itself sends nothing.
        return AuthResult(success=False)

    return check


def tls_context(cfg: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Ciphers first: @SECLEVEL=0 is what lets OpenSSL 3 load the RSA-1024/SHA-1 certificate at all.
    ctx.set_ciphers(cfg["ciphers"])
    ctx.minimum_version = getattr(ssl.TLSVersion, cfg["min_tls"])
    ctx.load_cert_chain(cfg["cert_chain"], cfg["cert_key"])
    return ctx


async def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    handler = LabHandler(cfg)
    ctx = tls_context(cfg)
    common: dict[str, Any] = {
        "hostname": cfg["hostname"],
        "auth_require_tls": cfg["auth_require_tls"],
        "authenticator": authenticator(cfg),
        "timeout": 60,
    }
    if cfg.get("ident"):
        common["ident"] = cfg["ident"]
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda: SMTP(handler, tls_context=ctx, **common), cfg["host"], cfg["smtp_port"]),
        await loop.create_server(lambda: SMTP(handler, tls_context=ctx, require_starttls=cfg["submission_require_tls"], **common),
                                 cfg["host"], cfg["submission_port"]),
        await loop.create_server(lambda: SMTP(handler, **common), cfg["host"], cfg["smtps_port"], ssl=ctx),
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("aiosmtpd lab ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
