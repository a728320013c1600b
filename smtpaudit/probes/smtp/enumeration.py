"""The RCPT enumeration probe: does RCPT TO answer differently for a mailbox that exists and one that cannot?

One connection, ``MAIL FROM:<>``, then ``RCPT TO:<Postmaster>`` (no domain: RFC 5321 section
4.5.1 says every server must accept it), ``postmaster@<domain>`` and two random local parts at
the same domain. Never DATA, never a guessed real name, and only two error replies, so Postfix's
error tarpit is not reached. The verdict is conservative: a difference counts only when
postmaster got 250/251 and *both* random names got the same permanent "no such user" (550, 551,
553); a 421, any 4xx, or randoms that disagree make it inconclusive (``null``) instead of a
finding. If the probe fails part-way, rcpt_differential stays absent ("not evaluated"); a 421 to
MAIL or to RCPT TO:<Postmaster> ends it (service_unavailable), so mx-rejects-postmaster is not
judged on it either. VRFY and EXPN are asked by the ``smtp.vrfy`` probe.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeResult
from smtpaudit.probes.smtp.behaviour import BehaviourProbe, local_domain, random_local_part, session, short
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.targets import Endpoint

CONFIRMING = (250, 251)
UNKNOWN_USER = (550, 551, 553)


def differential(postmaster: int | None, randoms: list[int | None]) -> tuple[bool | None, str | None]:
    """(differs, why-inconclusive) from the reply codes; None when the replies cannot be trusted."""
    codes = [postmaster, *randoms]
    if any(c is None for c in codes):
        return None, "not every address was asked"
    if any(c == 421 or 400 <= c < 500 for c in codes):  # type: ignore[operator]
        return None, "a temporary refusal (4xx/421) hides the answer; the server may limit errors per session"
    if postmaster in CONFIRMING and all(r in UNKNOWN_USER for r in randoms):
        if len(set(randoms)) != 1:
            return None, "the random names got different replies"
        return True, None
    return False, None


class EnumerationProbe(BehaviourProbe):
    name: ClassVar[str] = "smtp.enumeration"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        domain = local_domain(prior, endpoint, ctx)
        f["smtp.enumeration.domain"] = domain
        for key in ("mail_code", "postmaster_bare_code", "postmaster_bare_text", "postmaster_code", "postmaster_text",
                    "random_code", "random_text", "random2_code", "inconclusive_reason"):
            f[f"smtp.enumeration.{key}"] = None
        async with session(endpoint, ctx, transcript, result) as s:
            mail = await s.client.command("MAIL FROM:<>")
            f["smtp.enumeration.mail_code"] = mail.code
            # Closing the channel is no answer: a pass of mx-rejects-postmaster would be drawn from it.
            s.client.not_closing("MAIL FROM:<>", mail)
            if not mail.positive:
                f["smtp.enumeration.inconclusive_reason"] = f"MAIL FROM:<> refused ({mail.code})"
                # Inconclusive: the verdict fact stays absent, so the rule is not evaluated (never passed).
                return
            bare = await s.client.command("RCPT TO:<Postmaster>")
            f["smtp.enumeration.postmaster_bare_code"] = bare.code
            f["smtp.enumeration.postmaster_bare_text"] = short(bare)
            if bare.code == 421:
                f["smtp.enumeration.inconclusive_reason"] = "421 after RCPT TO:<Postmaster>"
                # No verdict on either rule: the probe ends unfinished, so mx-rejects-postmaster is
                # not passed on it (rcpt_differential stays absent as well).
                s.client.not_closing("RCPT TO:<Postmaster>", bare)
            if domain is None:
                f["smtp.enumeration.inconclusive_reason"] = "the server announced no domain name to test"
                # Inconclusive: the verdict fact stays absent, so the rule is not evaluated (never passed).
                return
            codes: list[int | None] = []
            for key, local in (("postmaster", "postmaster"), ("random", random_local_part()), ("random2", random_local_part())):
                reply = await s.client.command(f"RCPT TO:<{local}@{domain}>")
                f[f"smtp.enumeration.{key}_code"] = reply.code
                if key != "random2":
                    f[f"smtp.enumeration.{key}_text"] = short(reply)
                codes.append(reply.code)
                if reply.code == 421:
                    break
            codes += [None] * (3 - len(codes))
            differs, why = differential(codes[0], codes[1:])
            if differs is not None:  # None: replies that cannot be trusted -> absent, not a pass
                f["smtp.enumeration.rcpt_differential"] = differs
            f["smtp.enumeration.inconclusive_reason"] = why
            if codes[-1] != 421:
                await s.client.command("RSET")
