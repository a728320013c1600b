"""The ``tls.starttls_injection`` probe: CVE-2011-0411-class STARTTLS command injection.

``STARTTLS\\r\\nNOOP\\r\\n`` goes out in one segment. A correct server discards what followed
STARTTLS in the plaintext buffer; a vulnerable one executes NOOP and sends its ``250`` *inside*
the new TLS session, where the client would take it as authentic. One connection.

No fixed wait for "nothing arrived": inside TLS we send our own marker command (NOOP) and then
QUIT, one at a time, and count the replies before the 221. A correct server answers once (our
NOOP); a vulnerable one answers twice, its first reply belonging to the injected plaintext NOOP.
Every read waits for a reply that is certain to come, so the test takes a few round trips.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Mapping

from smtpaudit.outcomes import ProbeStatus, Reason
from smtpaudit.probes.base import ConnectionClosed, ProbeContext, ProbeError, ProbeResult
from smtpaudit.probes.smtp.client import Reply, SmtpClient, Transcript
from smtpaudit.targets import Endpoint, Mode

# Replies read after QUIT before giving up on seeing its 221 (a vulnerable server sends one extra).
MAX_REPLIES = 4


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
                client, greeting = await SmtpClient.open_greeted(endpoint, ctx, transcript, conn=1)
                result.connections += client.busy_retries
                await self._observe(client, greeting, f)
            finally:
                if client is not None:
                    await client.close()
        except ProbeError as exc:
            result.status, result.error_reason, result.error_message = "error", exc.reason, exc.message
        finally:
            result.transcript = transcript.lines
            result.duration = time.monotonic() - started
        return result

    async def _observe(self, client: SmtpClient, greeting: Reply, f: dict[str, Any]) -> None:
        if greeting.code != 220:
            raise ProbeError(f"greeting {greeting.code}", reason="service_unavailable")
        ehlo = await client.ehlo()
        if ehlo.code != 250:
            raise ProbeError(f"EHLO answered {ehlo.code}")
        await client.send_raw(b"STARTTLS\r\nNOOP\r\n", shown="STARTTLS\\r\\nNOOP\\r\\n (one segment)")
        client.watch_next("starttls")
        reply = await client.read_reply()
        f["tls.starttls_injection.starttls_code"] = reply.code
        # The server leaving (421): nothing was tested, so no verdict (a null one would pass the rule).
        client.not_closing("STARTTLS", reply)
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
            replies = await self._marker_replies(client)
        except ProbeError:
            # No answer to our own command inside TLS: nothing was observed either way (the probe
            # errs, its verdict stays absent) rather than "not vulnerable".
            f.pop("tls.starttls_injection.vulnerable", None)
            raise
        if len(replies) >= 2:
            first = replies[0]
            f["tls.starttls_injection.vulnerable"] = True
            f["tls.starttls_injection.evidence"] = (f"two replies to one NOOP inside TLS: the first ({first.code} "
                                                    f"{first.text[:200]}) answers the plaintext NOOP injected before the handshake")
        else:
            f["tls.starttls_injection.vulnerable"] = False
            f["tls.starttls_injection.evidence"] = f"one reply to one NOOP inside TLS ({replies[0].code}): the injected plaintext was discarded"

    @staticmethod
    async def _marker_replies(client: SmtpClient) -> list[Reply]:
        """NOOP, then QUIT once it is answered; the replies that came before QUIT's 221 (or the close)."""
        replies = [await client.command("NOOP")]
        await client.send_line("QUIT")
        for _ in range(MAX_REPLIES):
            try:
                reply = await client.read_reply()
            except ConnectionClosed:
                break
            if reply.code == 221:
                break
            replies.append(reply)
        await client.close()  # QUIT was sent and answered (or the server hung up)
        return replies
