"""The VRFY/EXPN probe: how the server answers address verification and list expansion.

Asks about ``postmaster`` (which RFC 5321 4.5.1 says must exist) and about a random local part
that cannot exist, so a rule can tell a disclosing server (250 for one, 550 for the other) from
one that answers 252 to everything. Never guesses real user names.

Bare names first. A server that will not take a bare name (Exim answers ``501 ... must contain a
domain`` for any name but postmaster unless the client may send unqualified addresses) is asked
again with ``user@domain`` for each of its own domains (``own_domains``) until postmaster there
gets a positive answer; that pair is the one recorded, every answer stays in ``smtp.vrfy.attempts``.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeResult, ServiceUnavailable
from smtpaudit.probes.smtp.behaviour import own_domains, run_guarded
from smtpaudit.probes.smtp.client import SmtpClient, Transcript
from smtpaudit.probes.smtp.ehlo import parse_ehlo
from smtpaudit.targets import Endpoint

# Answers to a bare name that may only mean "not in this form": retry qualified.
RETRY_QUALIFIED = (501, 550, 551, 553)
SYNTAX = (501, 553)
MAX_DOMAINS = 4


class VrfyProbe:
    """One connection: EHLO, VRFY postmaster, VRFY <random>, EXPN postmaster (qualified when needed), QUIT."""

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
                ehlo_name = parse_ehlo(reply).hostname if reply.code == 250 else None
                if reply.code != 250:
                    await client.command(f"HELO {ctx.ehlo_name}")
                words = greeting.text.split()
                names = {"smtp.greeting.hostname": words[0] if words else None, "smtp.ehlo.hostname": ehlo_name}
                await self._observe(client, result.facts, own_domains(names, endpoint, ctx))
                await client.quit()
            finally:
                await client.close()  # no-op after quit()

        return await run_guarded(self.name, ctx, body)

    @staticmethod
    async def _observe(client: SmtpClient, f: dict[str, Any], domains: list[tuple[str, str]]) -> None:
        attempts: list[dict[str, Any]] = []
        f["smtp.vrfy.attempts"] = attempts
        f["smtp.vrfy.domain"] = None
        random_user = "smtpaudit-" + secrets.token_hex(6)

        async def ask(verb: str, arg: str) -> tuple[int, str]:
            answer = await client.command(f"{verb} {arg}")
            attempts.append({"command": f"{verb} {arg}", "code": answer.code, "text": answer.text[:200]})
            if answer.code == 421:
                raise _Gone()
            return answer.code, answer.text[:300]

        def record(fact: str, arg: str, answer: tuple[int, str]) -> None:
            f[f"{fact}.argument"], f[f"{fact}.code"], f[f"{fact}.text"] = arg, answer[0], answer[1]

        retrying = False
        try:
            record("smtp.vrfy.postmaster", "postmaster", await ask("VRFY", "postmaster"))
            record("smtp.vrfy.random", random_user, await ask("VRFY", random_user))
            domain = None
            # Exim answers "postmaster" (which it qualifies itself) but refuses any other bare name
            # with 501: both answers must be in the same form to mean anything.
            if f["smtp.vrfy.postmaster.code"] in RETRY_QUALIFIED or f["smtp.vrfy.random.code"] in SYNTAX:
                retrying = True
                for own, _source in domains[:MAX_DOMAINS]:
                    answer = await ask("VRFY", f"postmaster@{own}")
                    if 200 <= answer[0] < 300:
                        domain = own
                        f["smtp.vrfy.domain"] = own
                        record("smtp.vrfy.postmaster", f"postmaster@{own}", answer)
                        record("smtp.vrfy.random", f"{random_user}@{own}", await ask("VRFY", f"{random_user}@{own}"))
                        break
                retrying = False
            expn_arg = f"postmaster@{domain}" if domain else "postmaster"
            record("smtp.expn.postmaster", expn_arg, await ask("EXPN", expn_arg))
            if not domain and f["smtp.expn.postmaster.code"] in SYNTAX and domains:
                own = domains[0][0]
                record("smtp.expn.postmaster", f"postmaster@{own}", await ask("EXPN", f"postmaster@{own}"))
        except _Gone:
            # The server wants us gone (421): what was answered so far stands, except a VRFY pair
            # whose retry it cut: the bare answers were "not in this form" (or the pair is now half
            # qualified), so they prove nothing and the VRFY verdict stays absent.
            if retrying:
                for fact in ("smtp.vrfy.postmaster", "smtp.vrfy.random"):
                    for part in ("argument", "code", "text"):
                        f.pop(f"{fact}.{part}", None)


class _Gone(Exception):
    """421 during the probe: stop asking."""
