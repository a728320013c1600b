"""The SMTP session probe: greeting, EHLO identity and capabilities, HELP, STARTTLS, AUTH before TLS.

Connection 0 does greeting -> EHLO (HELO fallback) -> HELP -> AUTH without a credential (only
before TLS: does the server ask for a password in clear? cancelled with "*") -> STARTTLS -> EHLO
again -> QUIT. If the server hangs up
after the AUTH attempt, STARTTLS is observed on a fresh connection.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import (
    ConnectionClosed,
    ProbeContext,
    ProbeError,
    ProbeResult,
    ReplyTimeout,
    ServiceUnavailable,
    TlsHandshakeFailed,
)
from smtpaudit.probes.smtp.behaviour import run_guarded
from smtpaudit.probes.smtp.client import Reply, SmtpClient, Transcript
from smtpaudit.probes.smtp.ehlo import Capabilities, parse_ehlo
from smtpaudit.probes.smtp.fingerprint import identify, reply_text
from smtpaudit.targets import Endpoint, Mode

ENHANCED_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3463 status code


def classify_auth_reply(code: int) -> str:
    """Name what a reply to an AUTH attempt with an invalid credential tells us (RFC 4954 section 6)."""
    if code in (235,):
        return "accepted_invalid_credential"
    if code in (535, 454, 334):
        return "credentials_checked"
    if code in (530, 538):
        return "encryption_required"
    if code in (500, 502, 503, 504):
        return "not_supported"
    return "other"


async def _handshake(client: SmtpClient, result: ProbeResult) -> tuple[Reply, Capabilities]:
    """Greeting, then EHLO with HELO fallback. Raises ServiceUnavailable on 421/554 greetings."""
    t0 = time.monotonic()
    greeting = await client.read_greeting()
    result.facts.setdefault("smtp.greeting.seconds", round(time.monotonic() - t0, 3))
    if greeting.code != 220:
        raise ServiceUnavailable(f"{client.endpoint.id}: greeting {greeting.code} {greeting.text[:200]}")
    reply = client.not_closing("EHLO", await client.ehlo())
    if reply.code == 250:
        return greeting, parse_ehlo(reply)
    result.facts["smtp.ehlo.supported"] = False
    helo = await client.command(f"HELO {client.ctx.ehlo_name}")
    if helo.code != 250:
        raise ProbeError(f"{client.endpoint.id}: neither EHLO nor HELO accepted ({reply.code}, {helo.code})")
    caps = Capabilities(hostname=(helo.lines[0].split() or [None])[0] if helo.lines else None)
    return greeting, caps


async def _auth_probe(client: SmtpClient, caps: Capabilities, seen: dict[str, bool]) -> Reply:
    """AUTH before TLS without ever sending a credential: does the server ask for one in clear?

    PLAIN goes without an initial response (RFC 4954 section 4 requires servers to support that
    form) so that, like LOGIN, the server has to ask for the credential with 334 first.
    ``seen["challenged"]`` is set when it did: a server that asks for a password on an
    unencrypted connection has accepted to process it there, whatever it would answer afterwards.
    The exchange is then cancelled with "*" (RFC 4954 section 4) and the 334 is the answer: no
    password, not even an invalid one, is sent, so no failed login lands in the server's logs and
    there is no failed-login penalty to wait out (Dovecot delays each failure 2 s, then longer for
    the same client: up to 15 s on every scan's critical path, since every probe waits for this one).
    """
    reply = await client.command("AUTH PLAIN" if ("PLAIN" in caps.auth or "LOGIN" not in caps.auth) else "AUTH LOGIN")
    if reply.code == 334:
        seen["challenged"] = True
        await client.command("*")
    return reply


def plaintext_processed(outcome: str | None, code: int | None, challenged: bool) -> bool | None:
    """Did the server process a credential sent before TLS? None = the exchange does not tell.

    Yes when it judged the credential (535, 235) or asked for it with 334 (then said nothing, or
    hung up); no when it refused AUTH itself (530/538 encryption required, 5xx not supported), or
    gave any other final 2xx/5xx answer to the AUTH command without ever asking for the
    credential (none was sent, so none was processed); anything else (no reply to the command
    itself, 4xx) proves neither.
    """
    if outcome in ("credentials_checked", "accepted_invalid_credential"):
        return True
    if outcome in ("encryption_required", "not_supported"):
        return False
    if challenged:
        return True if outcome in ("no_reply", "connection_closed") else None
    if outcome == "other" and code is not None and (200 <= code < 300 or code >= 500):
        return False
    return None


class SessionProbe:
    """Observes one ordinary SMTP session and the STARTTLS upgrade."""

    name: ClassVar[str] = "smtp.session"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ()

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        async def body(result: ProbeResult, transcript: Transcript) -> None:
            await self._observe(endpoint, ctx, result, transcript)

        # No prior: this probe is the one that decides whether the endpoint is usable at all.
        result = await run_guarded(self.name, ctx, body)
        self._fingerprint(result)
        return result

    @staticmethod
    def _fingerprint(result: ProbeResult) -> None:
        f = result.facts
        if "smtp.greeting.text" not in f:
            return
        def lines(key: str) -> list[str]:
            return (f.get(key) or "").split("\n")

        fp = identify(
            reply_text(f.get("smtp.greeting.code"), lines("smtp.greeting.text")),
            reply_text(250, lines("smtp.ehlo.text")) if f.get("smtp.ehlo.text") else "",
            reply_text(f.get("smtp.help.code"), lines("smtp.help.text")) if f.get("smtp.help.text") else "",
        )
        f["software.product"] = fp.product
        f["software.version"] = fp.version
        f["software.version_source"] = fp.source if fp.version else None
        f["software.evidence"] = fp.evidence
        f["software.distribution"] = fp.distribution

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        implicit = endpoint.mode is Mode.IMPLICIT
        result.connections += 1
        client = await SmtpClient.open(endpoint, ctx, transcript, conn=0)
        try:
            f["smtp.implicit_tls"] = implicit
            if implicit:
                f["smtp.tls.version"] = client.tls_version
                f["smtp.tls.cipher"] = client.tls_cipher
            try:
                greeting, caps = await _handshake(client, result)
            finally:
                # Record what the greeting was even when it was a refusal.
                self._record_greeting(client, transcript, f)
            self._record_ehlo(f, caps, "smtp.ehlo")
            f.setdefault("smtp.ehlo.supported", True)
            f["smtp.auth.mechanisms"] = caps.auth
            f["smtp.auth.mechanisms_before_tls"] = None if implicit else caps.auth
            starttls_offered = caps.has("STARTTLS")
            f["smtp.starttls.offered"] = None if implicit else starttls_offered

            help_reply = await client.command("HELP")
            f["smtp.help.code"] = help_reply.code
            # Kept whatever the code: a refusal's wording identifies software too (Postfix has no HELP).
            f["smtp.help.text"] = help_reply.text[:2000] if help_reply.code is not None else None

            if implicit:
                f["smtp.auth.plaintext_probe"] = None
                f["smtp.auth.plaintext_probe_code"] = None
                f["smtp.auth.plaintext_processed"] = None
                f["smtp.auth.mechanisms_after_tls"] = caps.auth
                f["smtp.starttls.works"] = None
                await client.quit()
                return

            seen: dict[str, bool] = {}
            try:
                auth_reply = await _auth_probe(client, caps, seen)
            except ConnectionClosed:
                f["smtp.auth.plaintext_probe"] = "connection_closed"
                f["smtp.auth.plaintext_probe_code"] = None
                await client.close()
            except ReplyTimeout:
                # Servers that slow down failed logins (Dovecot's auth penalty grows per client IP)
                # may not answer within the command timeout (aiosmtpd never answers a wrong one):
                # by itself unknown; plaintext_processed below decides with the 334 it saw or not.
                f["smtp.auth.plaintext_probe_inconclusive"] = "no_reply"
                f["smtp.auth.plaintext_probe_code"] = None
                await client.close()
            else:
                f["smtp.auth.plaintext_probe"] = classify_auth_reply(auth_reply.code)
                f["smtp.auth.plaintext_probe_code"] = auth_reply.code
                f["smtp.auth.plaintext_probe_text"] = auth_reply.text[:300]
                if auth_reply.code == 421:
                    await client.close()
            f["smtp.auth.plaintext_challenged"] = bool(seen.get("challenged"))
            outcome = f.get("smtp.auth.plaintext_probe") or f.get("smtp.auth.plaintext_probe_inconclusive")
            processed = plaintext_processed(outcome, f.get("smtp.auth.plaintext_probe_code"), bool(seen.get("challenged")))
            if processed is not None:  # absent when the exchange proves nothing: "not evaluated"
                f["smtp.auth.plaintext_processed"] = processed
        except BaseException:
            await client.close()
            raise
        if not f.get("smtp.starttls.offered"):
            f["smtp.starttls.works"] = None
            f["smtp.auth.mechanisms_after_tls"] = None
            await client.quit()
            return
        if client.closed:
            result.connections += 1
            client = await SmtpClient.open(endpoint, ctx, transcript, conn=1)
            await _handshake(client, result)
        await self._starttls(client, f)

    @staticmethod
    def _record_greeting(client: SmtpClient, transcript: Transcript, f: dict[str, Any]) -> None:
        greeting_lines = [ln for ln in transcript.lines if ln.direction == "S" and ln.conn == client.conn]
        if not greeting_lines or "smtp.greeting.code" in f:
            return
        first = greeting_lines[0].text
        code = int(first[:3]) if first[:3].isascii() and first[:3].isdigit() else None
        # The greeting reply: all leading S lines with the first line's code.
        texts = []
        final = False
        for ln in greeting_lines:
            if ln.text[:3] != first[:3]:
                break
            texts.append(ln.text[4:])
            if ln.text[3:4] != "-":
                final = True
                break
        if not final:
            # A greeting that never ended (dripped, cut) is no greeting: nothing to record.
            return
        f["smtp.greeting.code"] = code
        f["smtp.greeting.text"] = "\n".join(texts)[:2000]
        words = texts[0].split() if texts else []
        if words and ENHANCED_CODE.fullmatch(words[0]):
            words = words[1:]  # "421 4.7.0 host ..." : the enhanced status code is not a name
        # Only a 220 greeting names the server (RFC 5321 4.2); a refusal's text is free-form.
        f["smtp.greeting.hostname"] = words[0] if words and code == 220 else None

    @staticmethod
    def _record_ehlo(f: dict[str, Any], caps: Capabilities, prefix: str) -> None:
        f[f"{prefix}.hostname"] = caps.hostname
        f[f"{prefix}.keywords"] = caps.keywords
        f[f"{prefix}.size"] = caps.size
        if prefix == "smtp.ehlo":
            f["smtp.ehlo.text"] = "\n".join(
                [caps.hostname or ""] + [" ".join([k, *caps.params.get(k, [])]) for k in caps.keywords]
            )

    async def _starttls(self, client: SmtpClient, f: dict[str, Any]) -> None:
        try:
            await self._upgrade(client, f)
        except BaseException:
            await client.close()
            raise

    async def _upgrade(self, client: SmtpClient, f: dict[str, Any]) -> None:
        try:
            reply = await client.starttls()
        except TlsHandshakeFailed as exc:
            f["smtp.starttls.code"] = 220
            f["smtp.starttls.works"] = False
            f["smtp.starttls.error"] = exc.message
            f["smtp.auth.mechanisms_after_tls"] = None
            await client.close()
            return
        f["smtp.starttls.code"] = reply.code
        client.not_closing("STARTTLS", reply)  # 421: works stays unknown (fail closed)
        if reply.code != 220:
            f["smtp.starttls.works"] = False
            f["smtp.starttls.error"] = f"STARTTLS answered {reply.code} {reply.text[:200]}"
            f["smtp.auth.mechanisms_after_tls"] = None
            await client.quit()
            return
        f["smtp.tls.version"] = client.tls_version
        f["smtp.tls.cipher"] = client.tls_cipher
        try:
            ehlo = await client.ehlo()
        except ReplyTimeout:
            raise  # silence after the handshake proves nothing either way: works stays unknown
        except ProbeError as exc:
            f["smtp.starttls.works"] = False
            f["smtp.starttls.error"] = f"no usable SMTP session after the TLS handshake: {exc.message}"
            f["smtp.auth.mechanisms_after_tls"] = None
            await client.close()
            return
        client.not_closing("EHLO after TLS", ehlo)  # leaving before saying what it offers: no verdict
        f["smtp.starttls.works"] = ehlo.code == 250
        f["smtp.starttls.error"] = None if ehlo.code == 250 else f"EHLO after TLS answered {ehlo.code}"
        caps = parse_ehlo(ehlo) if ehlo.code == 250 else Capabilities()
        self._record_ehlo(f, caps, "smtp.ehlo_tls")
        f["smtp.auth.mechanisms_after_tls"] = caps.auth
        f["smtp.starttls.offered_after_tls"] = caps.has("STARTTLS") if ehlo.code == 250 else None
        await client.quit()
