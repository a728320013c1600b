"""The ``tls.cert`` probe: one complete handshake (pyOpenSSL over memory BIOs on the asyncio
streams) to fetch the chain exactly as served, then ``certs.analyse`` turns it into facts.

A full handshake (not just the hand-made hello) matters: TLS 1.3 encrypts the certificate, and
a server that picks a suite but cannot finish (a broken key engine) must show as unusable.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeResult
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.probes.tls import certs
from smtpaudit.probes.tls.connect import SmtpTlsConnector, sni_for, starttls_unavailable
from smtpaudit.probes.tls.scanner import ConnectError
from smtpaudit.targets import Endpoint


class HandshakeError(Exception):
    pass


async def full_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, server_name: str | None, timeout: float, max_bytes: int = 1_000_000
) -> dict[str, Any]:
    """Run a permissive client handshake; return chain (DER), version and cipher. Raises HandshakeError."""
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)
    try:
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
        ctx.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    except SSL.Error:
        pass
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    if server_name:
        conn.set_tlsext_host_name(server_name.encode("idna"))
    deadline = time.monotonic() + timeout
    received = 0
    while True:
        try:
            conn.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        except SSL.Error as exc:
            await _flush(conn, writer)
            raise HandshakeError(f"TLS handshake failed: {_ssl_text(exc)}") from None
        await _flush(conn, writer)
        if done:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HandshakeError("TLS handshake timed out")
        try:
            data = await asyncio.wait_for(reader.read(16384), timeout=remaining)
        except (asyncio.TimeoutError, TimeoutError):
            raise HandshakeError("TLS handshake timed out") from None
        except OSError as exc:
            raise HandshakeError(f"connection lost during the TLS handshake: {exc}") from None
        if not data:
            raise HandshakeError("server closed the connection during the TLS handshake")
        received += len(data)
        if received > max_bytes:
            raise HandshakeError(f"server sent more than {max_bytes} bytes during the handshake")
        conn.bio_write(data)
    chain = conn.get_peer_cert_chain(as_cryptography=True) or []
    from cryptography.hazmat.primitives.serialization import Encoding

    return {
        "chain": [c.public_bytes(Encoding.DER) for c in chain],
        "version": conn.get_protocol_version_name(),
        "cipher": conn.get_cipher_name(),
    }


async def _flush(conn: Any, writer: asyncio.StreamWriter) -> None:
    from OpenSSL import SSL

    out = b""
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        out += chunk
    if out:
        writer.write(out)
        try:
            await asyncio.wait_for(writer.drain(), timeout=10)
        except (OSError, asyncio.TimeoutError, TimeoutError):
            pass


def _ssl_text(exc: Exception) -> str:
    parts = []
    for arg in exc.args:
        if isinstance(arg, list):
            parts += [str(e[-1]) if isinstance(e, tuple) else str(e) for e in arg]
        else:
            parts.append(str(arg))
    return "; ".join(p for p in parts if p) or type(exc).__name__


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
            result.status, result.error_reason, result.error_message = "skipped", "no_tls", why_not
            return result
        connector = SmtpTlsConnector(endpoint, ctx, transcript)
        writer = None
        try:
            try:
                result.connections += 1
                reader, writer = await connector()
                hs = await full_handshake(reader, writer, server_name=sni_for(endpoint), timeout=ctx.timeouts.tls)
            finally:
                if writer is not None:
                    writer.close()  # also gives the host slot back (probes/net.py)
            transcript.add("*", f"TLS established: {hs['version']} {hs['cipher']}, {len(hs['chain'])} certificate(s)", 1)
            f = result.facts
            f["tls.cert.handshake_ok"] = True
            f["tls.cert.handshake_protocol"] = hs["version"]
            f["tls.cert.handshake_cipher"] = hs["cipher"]
            banner = [prior.get("smtp.greeting.hostname"), prior.get("smtp.ehlo.hostname")]
            names = [n for n in banner if isinstance(n, str) and "." in n and not n.startswith("[")]
            f.update(certs.analyse(hs["chain"], host=endpoint.host, banner_names=sorted(set(names)),
                                      ca_file=ctx.options.get("tls_ca_file")))
            f["tls.cert.banner_names"] = sorted(set(names))
        except ConnectError as exc:
            result.status, result.error_reason, result.error_message = "error", "connect", str(exc)
        except HandshakeError as exc:
            transcript.add("*", str(exc), 1)
            result.facts["tls.cert.handshake_ok"] = False
            result.facts["tls.cert.handshake_error"] = str(exc)
            result.status, result.error_reason, result.error_message = "error", "tls_handshake", str(exc)
        finally:
            result.transcript = transcript.lines
            result.duration = time.monotonic() - started
        return result
