"""The VRFY/EXPN probe: how the server answers address verification and list expansion.

Asks about ``postmaster`` (which RFC 5321 4.5.1 says must exist) and about a random local part
that cannot exist, so a rule can tell a disclosing server (250 for one, 550 for the other) from
one that answers 252 to everything. Never guesses real user names.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeResult, ServiceUnavailable
from smtpaudit.probes.smtp.behaviour import run_guarded
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.targets import Endpoint


class VrfyProbe:
    """One connection: EHLO, VRFY postmaster, VRFY <random>, EXPN postmaster, QUIT."""

    name: ClassVar[str] = "smtp.vrfy"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ()

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        async def body(result: ProbeResult, transcript: Transcript) -> None:
            result.connections = 1
            client, greeting = await SmtpClient.open_greeted(endpoint, ctx, transcript)
            result.connections += client.busy_retries
            try:
                if greeting.code != 220:
                    raise ServiceUnavailable(f"{endpoint.id}: greeting {greeting.code} {greeting.text[:200]}")
                reply = await client.ehlo()
                if reply.code != 250:
                    await client.command(f"HELO {ctx.ehlo_name}")
                random_user = "smtpaudit-" + secrets.token_hex(6)
                for fact, line in (
                    ("smtp.vrfy.postmaster", "VRFY postmaster"),
                    ("smtp.vrfy.random", f"VRFY {random_user}"),
                    ("smtp.expn.postmaster", "EXPN postmaster"),
                ):
                    answer = await client.command(line)
                    result.facts[f"{fact}.code"] = answer.code
                    result.facts[f"{fact}.text"] = answer.text[:300]
                    if answer.code == 421:
                        break
                await client.quit()
            finally:
                await client.close()  # no-op after quit()

        return await run_guarded(self.name, ctx, body)
