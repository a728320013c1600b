"""The unauthenticated-pipelining probe: does the server notice commands sent ahead where RFC 2920 forbids it?

One connection: after the greeting, ``EHLO`` and ``NOOP`` go out in a single write. EHLO must
be the last command of a group (RFC 2920 section 3.1), so a server that checks synchronization
(Exim's smtp_enforce_sync; Postfix's smtpd_forbid_unauth_pipelining, default from 3.9, or
reject_unauth_pipelining) refuses or hangs up, while a lax one answers both. The same check is
the short-term mitigation Postfix recommends against SMTP smuggling. No mail transaction.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ConnectionClosed, ProbeContext, ProbeResult, ReplyTimeout, ServiceUnavailable, Silenced
from smtpaudit.probes.smtp.behaviour import run_guarded, short
from smtpaudit.probes.smtp.client import Reply, SmtpClient, Transcript
from smtpaudit.targets import Endpoint


class PipeliningProbe:
    name: ClassVar[str] = "smtp.pipelining"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        async def body(result: ProbeResult, transcript: Transcript) -> None:
            f = result.facts
            result.connections += 1
            client, greeting = await SmtpClient.open_greeted(endpoint, ctx, transcript, conn=0)
            result.connections += client.busy_retries
            try:
                if greeting.code != 220:
                    raise ServiceUnavailable(f"{endpoint.id}: greeting {greeting.code} {greeting.text[:200]}")
                await client.send_raw(f"EHLO {ctx.ehlo_name}\r\nNOOP\r\n".encode(), shown=f"EHLO {ctx.ehlo_name} + NOOP  [one write]")
                replies: list[Reply] = []
                closed = False
                wait = min(ctx.timeouts.command, 10.0)
                try:
                    while len(replies) < 2:
                        # SilenceWatch steps: the first reply answers EHLO, the second the NOOP after it.
                        client.watch_next("after_ehlo" if replies else "ehlo")
                        replies.append(await client.read_reply(timeout=wait))
                        if len(replies) == 1:
                            # EHLO answered "closing the channel": nothing was said about the
                            # pipelined NOOP, so no verdict (a "not accepted" would pass the rule).
                            client.not_closing("EHLO", replies[0])
                        if replies[-1].code >= 400:
                            break
                except ConnectionClosed:
                    closed = True
                except Silenced:
                    raise  # the endpoint went silent at this step before: nothing was waited for
                except ReplyTimeout:
                    if not replies:
                        # Not even EHLO was answered: a silent server, not one that refused the
                        # pipelined group. Nothing observed, so no verdict (never "not accepted").
                        raise
                    # EHLO answered, the NOOP sent with it not: dropped (refused), or a server
                    # silent after EHLO? Only an answer to a NOOP sent on its own tells them apart.
                    client.watch_next("after_ehlo")
                    await client.command("NOOP", timeout=wait)
                    closed = True
                f["smtp.pipelining.advertised"] = bool(replies) and replies[0].code == 250 and any(
                    ln.split()[:1] == ["PIPELINING"] for ln in (x.upper() for x in replies[0].lines[1:]))
                f["smtp.pipelining.replies"] = [{"code": r.code, "text": short(r, 120)} for r in replies]
                f["smtp.pipelining.closed"] = closed
                f["smtp.pipelining.unauth_accepted"] = len(replies) == 2 and all(r.positive for r in replies)
            finally:
                await client.quit()

        return await run_guarded(self.name, ctx, body, prior)
