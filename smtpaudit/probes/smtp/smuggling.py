"""The SMTP smuggling probe (opt-in, --intrusive): which non-standard end-of-data sequences end a message?

For each sequence in ``smuggling_sequences.toml``, on a fresh connection: ``MAIL FROM:<>``,
``RCPT TO`` the one recipient the user names (``--smuggling-rcpt``), ``DATA``, a short test message whose last
line ends with that sequence instead of ``<CR><LF>.<CR><LF>``, then one read with a short timeout:

* ``250``: the server took the sequence as end-of-data (one test message went to that recipient);
* another reply: it refused the sequence (e.g. Postfix's "bare <LF> received");
* nothing (timeout): it is still reading the message. The connection is then closed without
  sending anything else, above all never a valid end-of-data, so the server discards the
  transaction (RFC 5321 section 3.8) and nothing is delivered.

Without ``--smuggling-rcpt`` the recipient is postmaster at a domain that (1) the target itself
serves, by evidence other than its own claim: the mail domain whose MX it is, a DNS name in its
certificate when that certificate verifies, the host name the user gave; never the greeting alone,
so a relay that greets as someone else's domain never passes test messages to a third party;
and (2) the server treats as local: on one connection without DATA it accepts postmaster there and
refuses a random user there, or refuses a foreign recipient. If no such domain is found nothing is
sent, and the probe is skipped with the reason ``needs_option`` (its rules: not evaluated).

Each sequence is tagged attacker-producible or strictness-only. Connections: one per sequence (9),
the first alone, then at most two at a time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ConnectionClosed, ProbeContext, ProbeResult, ReplyTimeout
from smtpaudit.probes.smtp.behaviour import BehaviourProbe, open_session, random_local_part, relay_domain, session, short
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.targets import Endpoint

SEQUENCES_FILE = Path(__file__).with_name("smuggling_sequences.toml")
DEFAULT_TIMEOUT = 5.0
MAX_CANDIDATES = 4
NO_RECIPIENT = ("no recipient could be established: no domain that the target itself serves (MX of the scanned "
                "domain, a name in a certificate that verifies, the target host name) was accepted as local; "
                "needs --smuggling-rcpt ADDRESS (a mailbox on this server that may receive test messages)")
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
    # tls.cert: a name in a certificate that verifies is evidence that the target serves that domain.
    after: ClassVar[tuple[str, ...]] = ("smtp.session", "tls.cert")

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        rcpt = ctx.options.get("smuggling_rcpt")
        f["smtp.smuggling.recipient_source"] = "--smuggling-rcpt" if rcpt else None
        if not rcpt:
            checks: list[dict[str, Any]] = []
            f["smtp.smuggling.recipient_checks"] = checks
            found = await self._default_recipient(endpoint, ctx, prior, transcript, result, checks)
            if found is None:
                f.update({"smtp.smuggling.recipient": None, "smtp.smuggling.tested": False, "smtp.smuggling.results": [],
                          "smtp.smuggling.not_tested_reason": NO_RECIPIENT})
                # Not run for want of an option: its rules are not evaluated and say what they need.
                result.status, result.error_reason, result.error_message = "skipped", "needs_option", NO_RECIPIENT
                return
            rcpt, f["smtp.smuggling.recipient_source"] = found
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
            # A run cut short by an error, or stopped before any sequence was tested (recipient or
            # DATA refused), that saw nothing accepted proves nothing: leave the lists absent.
            if (finished and results) or accepted:
                f["smtp.smuggling.accepted"] = accepted
                f["smtp.smuggling.accepted_producible"] = [r["name"] for r in results if r["outcome"] == "accepted" and r["producible"]]

    async def _default_recipient(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], transcript: Transcript,
                                 result: ProbeResult, checks: list[dict[str, Any]]) -> tuple[str, str] | None:
        """postmaster at the first served domain the server treats as local, with the evidence; None if none.

        One connection, RCPT only (RSET at the end, never DATA)."""
        candidates = served_domains(prior, endpoint, ctx)
        if not candidates:
            return None
        async with session(endpoint, ctx, transcript, result, starttls=True) as s:
            mail = await s.client.command("MAIL FROM:<>")
            if not mail.positive:
                checks.append({"rcpt_to": None, "code": mail.code, "accepted": False, "note": "MAIL FROM:<> refused"})
                return None
            foreign_refused: bool | None = None

            async def rcpt(address: str) -> bool:
                reply = await s.client.command(f"RCPT TO:<{address}>")
                checks.append({"rcpt_to": address, "code": reply.code, "accepted": 200 <= reply.code < 300})
                return 200 <= reply.code < 300

            try:
                for domain, evidence in candidates[:MAX_CANDIDATES]:
                    if not await rcpt(f"postmaster@{domain}"):
                        continue
                    if not await rcpt(f"{random_local_part()}@{domain}") and checks[-1]["code"] >= 500:
                        return f"postmaster@{domain}", f"{evidence}; a random user there was refused"
                    if foreign_refused is None:
                        foreign_refused = not await rcpt(f"{random_local_part()}@{relay_domain(ctx)}") and checks[-1]["code"] >= 500
                    if foreign_refused:
                        return f"postmaster@{domain}", f"{evidence}; a foreign recipient was refused"
                return None
            finally:
                await s.client.command("RSET")

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


def served_domains(prior: Mapping[str, Any], endpoint: Endpoint, ctx: ProbeContext) -> list[tuple[str, str]]:
    """Domains the target itself serves, by evidence other than its greeting, most direct first.

    A server's greeting and EHLO names are its own claims (a relay can greet as gmail.com); these
    are not: the mail domain the user scanned (this host is its MX), the DNS names of a
    certificate that verifies against the trust store, the host name the user gave.
    """
    out: list[tuple[str, str]] = []

    def add(name: Any, evidence: str) -> None:
        if not isinstance(name, str):
            return
        name = name.strip().rstrip(".").lower()
        if "." not in name or "*" in name or name.startswith("[") or name in [d for d, _ in out]:
            return
        try:
            ipaddress.ip_address(name)
            return
        except ValueError:
            pass
        if len(name) < 254 and all(ch.isalnum() or ch in "-." for ch in name):
            out.append((name, evidence))

    add(ctx.options.get("local_domain"), "--local-domain")
    add(endpoint.domain, f"the target is an MX of the scanned mail domain {endpoint.domain}")
    if prior.get("tls.cert.trusted") is True:
        for name in prior.get("tls.cert.san") or []:
            add(name, f"{name} is a name of the target's certificate, which verifies")
    add(endpoint.host, f"{endpoint.host} is the host name given as the target")
    return out
