"""The ``tls.cert`` probe: one complete handshake (pyOpenSSL over memory BIOs on the asyncio
streams) to fetch the chain exactly as served, then ``certs.analyse`` turns it into facts.

A full handshake (not just the hand-made hello) matters: TLS 1.3 encrypts the certificate.
Only authenticated suites are offered: a server that also accepts anonymous suites would
otherwise pick one, send no certificate, and every certificate rule would have nothing to judge.
When the handshake fails after the server sent its Certificate (TLS <= 1.2 sends it in clear,
before the key is used), that chain is still what the server serves and is analysed. No
certificate seen means no certificate facts: the certificate rules are then not evaluated.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Mapping

from smtpaudit.outcomes import ProbeStatus, Reason
from smtpaudit.probes.base import ProbeContext, ProbeResult
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.probes.tls import handshake
from smtpaudit.probes.tls.connect import SilentEndpoint, SmtpTlsConnector, sni_for, starttls_unavailable
from smtpaudit.probes.tls.scanner import ConnectError
from smtpaudit.targets import Endpoint

MAX_CHAIN = 32  # certificates analysed per handshake


def banner_names(prior: Mapping[str, Any]) -> list[str]:
    """The names the server gives for itself (greeting, EHLO), when they look like host names."""
    banner = [prior.get("smtp.greeting.hostname"), prior.get("smtp.ehlo.hostname")]
    return sorted({n.rstrip(".").lower() for n in banner if isinstance(n, str) and "." in n and not n.startswith("[")})


class TlsCertificateProbe:
    """The served certificate chain and what it says (validity, names, key, signature, trust)."""

    name: ClassVar[str] = "tls.cert"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        result = ProbeResult(probe=self.name)
        started = time.monotonic()
        transcript = Transcript(ctx.secrets)
        why_not = starttls_unavailable(endpoint, prior)
        if why_not:
            result.status, result.error_reason, result.error_message = ProbeStatus.SKIPPED, Reason.NO_TLS, why_not
            return result
        connector = SmtpTlsConnector(endpoint, ctx, transcript)
        writer = None
        try:
            try:
                result.connections += 1
                reader, writer = await connector()
                hs = await handshake.run_handshake(
                    reader, writer, server_name=sni_for(endpoint), timeout=ctx.timeouts.tls,
                    ciphers=handshake.AUTHENTICATED_CIPHERS,
                )
                if ctx.silence is not None:
                    ctx.silence.saw("tls", silent=hs.silent)
            finally:
                if writer is not None:
                    writer.close()  # also gives the host slot back (probes/net.py)
            f = result.facts
            if hs.completed:
                transcript.add("*", f"TLS established: {hs.version} {hs.cipher}, {len(hs.chain)} certificate(s)", 1)
                f["tls.cert.handshake_ok"] = True
                f["tls.cert.handshake_protocol"] = hs.version
                f["tls.cert.handshake_cipher"] = hs.cipher
                f["tls.cert.source"] = "handshake"
            else:
                transcript.add("*", f"{hs.detail} ({len(hs.chain)} certificate(s) received before that)", 1)
                if hs.outcome != handshake.FAILED:
                    # Timeout or a local limitation: nothing was learnt about the server.
                    result.status, result.error_reason, result.error_message = (
                        ProbeStatus.ERROR, Reason.READ_TIMEOUT if hs.silent else Reason.TLS_HANDSHAKE, hs.detail)
                    return result
                # The server answered and the handshake failed: an observation, not a probe error.
                f["tls.cert.handshake_ok"] = False
                f["tls.cert.handshake_error"] = hs.detail
                f["tls.cert.source"] = "failed handshake" if hs.chain else None
            if hs.chain:
                names = banner_names(prior)
                chain = hs.chain
                if len(chain) > MAX_CHAIN:
                    # Real chains hold 2-4 certificates; a server sending hundreds only costs us CPU.
                    transcript.add("*", f"only the first {MAX_CHAIN} of {len(chain)} certificates are analysed", 1)
                    chain = chain[:MAX_CHAIN]
                # Parsing and verifying (trust store load, signatures) is CPU work: off the event
                # loop, so other endpoints keep being served and the endpoint deadline can still fire.
                from smtpaudit.probes.tls import certs  # cryptography: only once there is a chain to analyse

                f.update(await asyncio.to_thread(certs.analyse, chain, host=endpoint.host, banner_names=names,
                                                 ca_file=ctx.options.get("tls_ca_file")))
                f["tls.cert.banner_names"] = names
            else:
                # No certificate seen: leave the certificate facts absent so their rules are
                # "not evaluated" (an anonymous-only or broken server), never "passed".
                f["tls.cert.chain_length"] = 0
        except ConnectError as exc:
            # A server that never answered (EHLO, STARTTLS) is silence, not a failed connection.
            silent = isinstance(exc, SilentEndpoint) or connector.failure == Reason.READ_TIMEOUT
            reason = Reason.READ_TIMEOUT if silent else Reason.CONNECT
            result.status, result.error_reason, result.error_message = ProbeStatus.ERROR, reason, str(exc)
        finally:
            result.transcript = transcript.lines
            result.duration = time.monotonic() - started
        return result
