"""The SMTP smuggling probe (opt-in, --intrusive): which non-standard end-of-data sequences end a message?

For each sequence in ``smuggling_sequences.toml``, on a fresh connection: ``MAIL FROM:<>``,
``RCPT TO`` the one recipient the user names (``--smuggling-rcpt``, default postmaster at the
server's own domain: no third party is ever involved), ``DATA``, a short test message whose last
line ends with that sequence instead of ``<CR><LF>.<CR><LF>``, then one read with a short timeout:

* ``250``: the server took the sequence as end-of-data (one test message went to that recipient);
* another reply: it refused the sequence (e.g. Postfix's "bare <LF> received");
* nothing (timeout): it is still reading the message. The connection is then closed without
  sending anything else, above all never a valid end-of-data, so the server discards the
  transaction (RFC 5321 section 3.8) and nothing is delivered.

Each sequence is tagged attacker-producible or strictness-only. Connections: one per sequence (9),
the first alone, then at most two at a time.
"""

from __future__ import annotations

import asyncio
import secrets
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ConnectionClosed, ProbeContext, ProbeResult, ReplyTimeout
from smtpaudit.probes.smtp.behaviour import BehaviourProbe, local_domain, open_session, relay_domain, short
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.targets import Endpoint

SEQUENCES_FILE = Path(__file__).with_name("smuggling_sequences.toml")
DEFAULT_TIMEOUT = 5.0
PARALLEL = 2


@lru_cache(maxsize=1)
def sequences() -> tuple[dict[str, Any], ...]:
    return tuple(tomllib.loads(SEQUENCES_FILE.read_text(encoding="utf-8"))["sequence"])


def visible(data: str) -> str:
    return data.replace("\r", "<CR>").replace("\n", "<LF>").replace("\0", "<NUL>")


def smuggling_message(rcpt: str, sender_domain: str, name: str) -> bytes:
    """Headers and a body whose final line has no line ending: the sequence under test supplies it."""
    msgid = f"<{secrets.token_hex(8)}@smtpaudit.invalid>"
    return (
        f"From: smtpaudit <smtpaudit@{sender_domain}>\r\nTo: <{rcpt}>\r\nSubject: smtpaudit SMTP smuggling test ({name})\r\n"
        f"Message-ID: {msgid}\r\n\r\nThis message was sent by an smtpaudit SMTP smuggling test and can be deleted.\r\n"
        f"It was accepted because the server took <{name}> as the end of the message."
    ).encode()


class SmugglingProbe(BehaviourProbe):
    name: ClassVar[str] = "smtp.smuggling"
    intrusive: ClassVar[bool] = True
    sockets: ClassVar[int] = 2  # two sequences are tried at a time
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        rcpt = ctx.options.get("smuggling_rcpt")
        if not rcpt:
            domain = local_domain(prior, endpoint, ctx)
            rcpt = f"postmaster@{domain}" if domain else "Postmaster"
        rcpt = str(rcpt)
        timeout = float(ctx.options.get("smuggling_timeout", DEFAULT_TIMEOUT))
        results: list[dict[str, Any]] = []
        f.update({"smtp.smuggling.recipient": rcpt, "smtp.smuggling.tested": False, "smtp.smuggling.results": results,
                  "smtp.smuggling.not_tested_reason": None})
        finished = False
        entries = [{"name": seq["name"], "sequence": visible(seq["bytes"]), "producible": seq["producible"],
                    "outcome": None, "code": None, "text": None} for seq in sequences()]
        try:
            # The first sequence alone: it also proves that MAIL/RCPT/DATA are accepted at all.
            stop = await self._one(endpoint, ctx, transcript, result, rcpt, sequences()[0], entries[0], timeout)
            if stop:
                f["smtp.smuggling.not_tested_reason"] = stop
            else:
                # The rest two at a time (most of the time is spent waiting out timeouts).
                slots = asyncio.Semaphore(PARALLEL)

                async def one(seq: Mapping[str, Any], entry: dict[str, Any]) -> str | None:
                    async with slots:
                        return await self._one(endpoint, ctx, transcript, result, rcpt, seq, entry, timeout)

                stops = await asyncio.gather(*(one(seq, e) for seq, e in zip(sequences()[1:], entries[1:])))
                f["smtp.smuggling.not_tested_reason"] = next((x for x in stops if x), None)
            finished = True
        finally:
            results.extend(e for e in entries if e["outcome"] is not None)
            f["smtp.smuggling.tested"] = bool(results)
            accepted = [r["name"] for r in results if r["outcome"] == "accepted"]
            # A run cut short by an error that saw nothing accepted proves nothing: leave the lists absent.
            if finished or accepted:
                f["smtp.smuggling.accepted"] = accepted
                f["smtp.smuggling.accepted_producible"] = [r["name"] for r in results if r["outcome"] == "accepted" and r["producible"]]

    async def _one(self, endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript, result: ProbeResult,
                   rcpt: str, seq: Mapping[str, Any], entry: dict[str, Any], timeout: float) -> str | None:
        """Test one sequence; returns a reason when the whole probe must stop (recipient refused...)."""
        conn = result.connections
        result.connections += 1
        s = await open_session(endpoint, ctx, transcript, conn=conn, starttls=True)
        c = s.client
        try:
            mail = await c.command("MAIL FROM:<>")
            if not mail.positive:
                return f"MAIL FROM:<> refused: {mail.code} {short(mail)}"
            reply = await c.command(f"RCPT TO:<{rcpt}>")
            if not reply.positive:
                return f"RCPT TO:<{rcpt}> refused: {reply.code} {short(reply)}"
            reply = await c.command("DATA")
            if reply.code != 354:
                return f"DATA refused: {reply.code} {short(reply)}"
            payload = smuggling_message(rcpt, relay_domain(ctx), seq["name"]) + seq["bytes"].encode("latin-1")
            await c.send_raw(payload, shown=f"[test message, {len(payload)} bytes, ending {visible(seq['bytes'])}]")
            try:
                end = await c.read_reply(timeout=timeout)
            except ReplyTimeout:
                entry["outcome"] = "timeout"  # still in DATA: close below, never completing the message
                return None
            except ConnectionClosed:
                entry["outcome"] = "closed"
                return None
            entry["code"], entry["text"] = end.code, short(end, 160)
            entry["outcome"] = "accepted" if end.code == 250 else "rejected"
            return None
        finally:
            # Never QUIT or RSET here: after a timeout the server is still reading message data,
            # and any further bytes would become part of it. Aborting the socket (no TLS
            # close_notify to wait for) ends the session; the server discards the open transaction.
            if c.writer.transport is not None:
                c.writer.transport.abort()
            await c.close()
