"""The ``tls.starttls_injection`` probe: CVE-2011-0411-class STARTTLS command injection.

``STARTTLS\\r\\nNOOP\\r\\n`` goes out in one segment. A correct server discards what followed
STARTTLS in the plaintext buffer; a vulnerable one executes NOOP and sends its ``250`` *inside*
the new TLS session, where the client would take it as authentic. One connection.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Mapping

from smtpaudit.outcomes import ProbeStatus, Reason
from smtpaudit.probes.base import ProbeContext, ProbeError, ProbeResult, ReplyTimeout
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.targets import Endpoint, Mode

# How long to wait inside TLS for an answer we never asked for.
UNSOLICITED_WAIT = 2.0


class StarttlsInjectionProbe:
    name: ClassVar[str] = "tls.starttls_injection"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        result = ProbeResult(probe=self.name)
        started = time.monotonic()
        transcript = Transcript(ctx.secrets)
        f = result.facts
        if endpoint.mode is Mode.IMPLICIT or prior.get("smtp.starttls.offered") is False:
            f["tls.starttls_injection.vulnerable"] = None
            f["tls.starttls_injection.evidence"] = None
            result.status, result.error_reason = ProbeStatus.SKIPPED, Reason.NO_TLS
            result.error_message = "implicit TLS endpoint" if endpoint.mode is Mode.IMPLICIT else "STARTTLS is not offered"
            return result
        client: SmtpClient | None = None
        try:
            try:
                result.connections += 1
                client = await SmtpClient.open(endpoint, ctx, transcript, conn=1)
                await self._observe(client, f)
            finally:
                if client is not None:
                    await client.close()
        except ProbeError as exc:
            result.status, result.error_reason, result.error_message = "error", exc.reason, exc.message
        finally:
            result.transcript = transcript.lines
            result.duration = time.monotonic() - started
        return result

    async def _observe(self, client: SmtpClient, f: dict[str, Any]) -> None:
        greeting = await client.read_greeting()
        if greeting.code != 220:
            raise ProbeError(f"greeting {greeting.code}", reason="service_unavailable")
        ehlo = await client.ehlo()
        if ehlo.code != 250:
            raise ProbeError(f"EHLO answered {ehlo.code}")
        await client.send_raw(b"STARTTLS\r\nNOOP\r\n", shown="STARTTLS\\r\\nNOOP\\r\\n (one segment)")
        reply = await client.read_reply()
        f["tls.starttls_injection.starttls_code"] = reply.code
        if reply.code != 220:
            f["tls.starttls_injection.vulnerable"] = None
            f["tls.starttls_injection.evidence"] = f"STARTTLS answered {reply.code}"
            return
        # A reply to NOOP already waiting in plaintext is a different (benign) behaviour; it must not
        # be mistaken for data inside TLS, so it is recorded and dropped before the handshake.
        buffered = bytes(client.reader._buffer)  # type: ignore[attr-defined]
        f["tls.starttls_injection.plaintext_after_220"] = bool(buffered)
        if buffered:
            client.transcript.add("S", buffered[:200].decode("utf-8", "replace"), client.conn)
            client.reader._buffer.clear()  # type: ignore[attr-defined]
        await client.upgrade_tls()
        try:
            unsolicited = await client.read_reply(timeout=UNSOLICITED_WAIT)
        except ReplyTimeout:
            f["tls.starttls_injection.vulnerable"] = False
            f["tls.starttls_injection.evidence"] = f"nothing arrived inside TLS within {UNSOLICITED_WAIT:g}s"
            await client.quit()
            return
        except ProbeError:
            # The connection failed inside TLS: nothing was observed either way (the probe errs,
            # its verdict stays absent) rather than "not vulnerable".
            f.pop("tls.starttls_injection.vulnerable", None)
            raise
        f["tls.starttls_injection.vulnerable"] = True
        f["tls.starttls_injection.evidence"] = f"unsolicited reply inside TLS: {unsolicited.code} {unsolicited.text[:200]}"
