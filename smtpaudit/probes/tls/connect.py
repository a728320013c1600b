"""Streams ready for a hand-made ClientHello: after ``220`` to STARTTLS, or a bare implicit-TLS socket.

Each call opens one fresh SMTP connection through the lead's ``SmtpClient`` (timeouts, caps,
transcript). Only the first connection's SMTP dialogue is kept in the probe transcript; the
others would repeat it dozens of times, so they go to a throwaway transcript.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeError, ServiceUnavailable, Silenced
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.probes.tls.scanner import ConnectError
from smtpaudit.targets import Endpoint, Mode


def sni_for(endpoint: Endpoint) -> str | None:
    """RFC 6066 3: no IP literals in server_name."""
    try:
        ipaddress.ip_address(endpoint.host)
        return None
    except ValueError:
        return endpoint.host


def starttls_unavailable(endpoint: Endpoint, prior: Mapping[str, Any]) -> str | None:
    """Why TLS cannot be reached on this endpoint according to the session probe, or None."""
    if endpoint.mode is Mode.IMPLICIT:
        return None
    if prior.get("smtp.starttls.offered") is False:
        return "STARTTLS is not offered"
    return None


class SilentEndpoint(ConnectError):
    """No stream: the endpoint already went silent on enough connections (``SilenceWatch``), so
    another one would only wait out the same timeout. Not retried; the probe reports read_timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class SmtpTlsConnector:
    """A ``scanner.Connector``: each call yields raw streams positioned for a ClientHello."""

    def __init__(self, endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript) -> None:
        self.endpoint = endpoint
        self.ctx = ctx
        self.transcript = transcript
        self.opened = 0
        self.silenced: str | None = None  # why a stream was refused (SilenceWatch), if one was
        self.failure: str | None = None  # the ProbeError reason of the last stream that failed

    async def __call__(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        watch = self.ctx.silence
        given_up = [s for s in ("starttls", "tls") if watch is not None and watch.gave_up(s)]
        if watch is not None and given_up and (given_up != ["starttls"] or self.endpoint.mode is not Mode.IMPLICIT):
            self.silenced = f"{self.endpoint.id}: no connection opened: {watch.why(given_up[-1])}"
            raise SilentEndpoint(self.silenced)
        self.opened += 1
        keep = self.opened == 1
        transcript = self.transcript if keep else Transcript(self.ctx.secrets)
        client: SmtpClient | None = None
        try:
            client = await SmtpClient.open(self.endpoint, self.ctx, transcript, conn=self.opened, implicit_tls=False)
            if self.endpoint.mode is Mode.IMPLICIT:
                return client.raw_streams()
            return await client.raw_streams_after_starttls()
        except ServiceUnavailable as exc:
            await _close(client)
            raise ConnectError(exc.message, busy=True) from None
        except Silenced as exc:
            await _close(client)
            self.silenced = exc.message
            raise SilentEndpoint(exc.message) from None
        except ProbeError as exc:
            await _close(client)
            self.failure = exc.reason
            # A refused STARTTLS (5xx) will not change on retry; a 4xx / closed connection may.
            retryable = not (" refused with 5" in exc.message)
            raise ConnectError(exc.message, retryable=retryable) from None


async def _close(client: SmtpClient | None) -> None:
    if client is not None:
        await client.close()
