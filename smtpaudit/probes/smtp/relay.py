"""The open-relay probe: nmap's sixteen MAIL FROM / RCPT TO forms, a catch-all control, and a try after STARTTLS.

Each attempt is ``RSET``, ``MAIL FROM``, and (only when MAIL was accepted) ``RCPT TO``; the verdict
is the RCPT reply. Consecutive attempts with the same sender on one connection share its
transaction (one MAIL FROM, a RCPT each): 13 of the 16 forms use the same sender. DATA is never sent, so nothing is ever delivered. External recipients use a
reserved domain (``relaytest.invalid`` unless ``--relay-domain`` says otherwise).

To stay below error tarpits (Postfix delays every reply by 1 s once a session has made
``smtpd_soft_error_limit`` errors: 10 by default, 5 in hardened setups) the attempts are spread
over connections by an ``ErrorPacer`` (pacing.py): at most 4 errors per connection, fewer once a
delayed reply showed where the server's limit is, and no reconnecting for a server that is slow
from its first error. A sender the server refused once (Exim refuses address literals) is not sent
again; a server that hangs up (Exim, after 3 syntax errors) gets a new connection, at most 5 times. The control (a random local part at the server's own name: a
server that accepts it checks no recipients at RCPT time, so an accepted relay attempt might only
be a later bounce) runs last: a random local part at each of the server's own domains in turn
(``own_domains``: the scanned mail domain, the greeting and EHLO names and their parent
domains, the certificate names, the target host name) until one is refused with 5xx. That refusal
shows the server checks recipients at RCPT time, which is what turns an accepted relay attempt
into a confirmed one. When every one is accepted, a malformed address is tried as well, for the
record only: rejecting what its address parser cannot read does not show that a server checks
recipients (aiosmtpd refuses ``a@b..c`` and takes every well-formed address). A third connection
repeats the plain variant after STARTTLS when the server offers it. A 530 ends the probe (authentication is required, as
nmap concludes); a 421 ends it too (the server wants us gone).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping

from smtpaudit import tomlcache
from smtpaudit.probes.base import ConnectionClosed, ProbeContext, ProbeResult, ServiceUnavailable
from smtpaudit.probes.smtp.behaviour import BehaviourProbe, Session, own_domains, random_local_part, relay_domain, session, short
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.probes.smtp.pacing import ErrorPacer, paced
from smtpaudit.targets import Endpoint, Mode

VARIANTS_FILE = Path(__file__).with_name("relay_variants.toml")
FROM_LOCAL = "smtpaudit"
TO_LOCAL = "relaytest"
# Recipient controls: at most this many of the server's own domains are tried.
MAX_CONTROLS = 6
# Hang-ups (Exim after 3 syntax errors) tolerated before the test counts as cut short.
MAX_HANGUPS = 5
# Connections in all: 17 attempts at one error per connection, plus the hang-ups.
MAX_CONNECTIONS = 24


@lru_cache(maxsize=1)
def variants() -> tuple[dict[str, Any], ...]:
    data = tomlcache.load(VARIANTS_FILE)
    return tuple(data["variant"])


def ip_literal(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"


def expand(template: str, values: Mapping[str, str | None]) -> str | None:
    """Fill a variant template; None when it needs a value we do not have (e.g. no server name)."""
    for key, value in values.items():
        if "{" + key + "}" in template:
            if value is None:
                return None
            template = template.replace("{" + key + "}", value)
    return template


class _Stop(Exception):
    """The server answered 530 or 421: no further attempts."""


class RelayProbe(BehaviourProbe):
    name: ClassVar[str] = "smtp.relay"
    _hangups: int = 0  # connections the server closed during this run
    _open_tx: tuple[Session, str, int, str] | None = None  # (session, sender, MAIL code, text) of the open transaction
    intrusive: ClassVar[bool] = False
    # tls.cert: the certificate's names are among the server's own domains for the recipient control.
    after: ClassVar[tuple[str, ...]] = ("smtp.session", "tls.cert")

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        domain = relay_domain(ctx)
        f["smtp.relay.domain"] = domain
        f["smtp.relay.auth_required"] = False
        f["smtp.relay.control"] = None
        f["smtp.relay.controls"] = []
        f["smtp.relay.controls_accepted"] = []
        f["smtp.relay.malformed_rejected"] = None
        f["smtp.relay.control_rcpt"] = None
        f["smtp.relay.control_reply"] = None
        candidates = own_domains(prior, endpoint, ctx)
        f["smtp.relay.starttls_attempt"] = None
        attempts: list[dict[str, Any]] = []
        f["smtp.relay.attempts"] = attempts
        f["smtp.relay.accepted_variants"] = []
        f["smtp.relay.accepted_count"] = 0
        f["smtp.relay.completed"] = False
        srvname = prior.get("smtp.greeting.hostname") or prior.get("smtp.ehlo.hostname")
        values: dict[str, str | None] = {"from": FROM_LOCAL, "to": TO_LOCAL, "domain": domain, "srvname": srvname, "ip": None}
        f["smtp.relay.server_name"] = srvname

        todo = list(variants())
        refused_senders: dict[str, tuple[int, str | None]] = {}
        control_done = False
        pacer = ErrorPacer()
        self._hangups = 0
        self._open_tx = None
        try:
            while todo or not control_done:
                control_done = await self._paced_connection(endpoint, ctx, transcript, result, pacer, todo, values,
                                                            f, attempts, refused_senders, candidates, domain) or control_done
            f["smtp.relay.completed"] = True
        except _Stop:
            pass
        finally:
            self._summarise(f, attempts)
        f["smtp.relay.starttls_accepted"] = None
        if f["smtp.relay.auth_required"] or not f["smtp.relay.completed"]:
            return
        if endpoint.mode is Mode.STARTTLS and prior.get("smtp.starttls.works"):
            async with session(endpoint, ctx, transcript, result, starttls=True) as s:
                if s.tls:
                    plain = next(v for v in variants() if v["name"] == "plain")
                    tls_attempts: list[dict[str, Any]] = []
                    try:
                        await self._attempt(s, plain, values, f, tls_attempts)
                    except _Stop:
                        pass
                    f["smtp.relay.starttls_attempt"] = tls_attempts[0]
                    f["smtp.relay.starttls_accepted"] = tls_attempts[0]["accepted"]

    async def _paced_connection(
        self, endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript, result: ProbeResult, pacer: ErrorPacer,
        todo: list[dict[str, Any]], values: dict[str, str | None], f: dict[str, Any], attempts: list[dict[str, Any]],
        refused_senders: dict[str, tuple[int, str | None]], candidates: list[tuple[str, str]], domain: str,
    ) -> bool:
        """One connection's share of the attempts: until the pacer says the error budget is spent
        (or a reply came late), then the controls when nothing is left. True once they ran."""
        if result.connections >= MAX_CONNECTIONS or self._hangups >= MAX_HANGUPS:
            raise ConnectionClosed(f"{endpoint.id}: relay test cut short after {result.connections} connections "
                                   f"({self._hangups} closed by the server)")
        async with session(endpoint, ctx, transcript, result) as s:
            s.pacer = pacer
            pacer.new_connection()
            values["ip"] = values["ip"] or _peer_literal(s)
            f["smtp.relay.ip"] = values["ip"]
            try:
                while todo and not pacer.exhausted():
                    await self._attempt(s, todo.pop(0), values, f, attempts, refused_senders)
                if pacer.delayed and pacer.per_session:
                    transcript.add("*", f"reply delayed ({pacer.delays[-1]:g}s): the server tarpits after "
                                        f"{pacer.tarpit_after} errors; next attempts on a fresh connection", s.client.conn)
                    await s.client.quit()
                if not todo and not pacer.exhausted():
                    await self._controls(s, candidates, domain, f)
                    return True
            except ConnectionClosed:
                # Exim hangs up after 3 syntax errors (smtp_max_synprot_errors): go on with a new connection.
                self._hangups += 1
                if attempts and attempts[-1]["accepted"] is None and "skipped" not in attempts[-1]:
                    attempts[-1]["note"] = "the server closed the connection"
                await s.client.close()
        return False

    @staticmethod
    def _summarise(f: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
        """Counts from the attempts so far. An unfinished test that saw no relay says nothing:
        its counts stay absent so the rules report "not evaluated" instead of a pass."""
        accepted = [a["n"] for a in attempts if a["accepted"]]
        # Set by _controls once they ran; null when they never got to run.
        f.setdefault("smtp.relay.control_accepted", None)
        if not accepted and not f["smtp.relay.completed"] and not f["smtp.relay.auth_required"]:
            f.pop("smtp.relay.accepted_variants", None)
            f.pop("smtp.relay.accepted_count", None)
            return
        f["smtp.relay.accepted_variants"] = accepted
        f["smtp.relay.accepted_count"] = len(accepted)

    async def _attempt(
        self, s: Session, variant: Mapping[str, Any], values: Mapping[str, str | None], f: dict[str, Any],
        out: list[dict[str, Any]], refused_senders: dict[str, tuple[int, str | None]] | None = None,
    ) -> int:
        """One RSET / MAIL / RCPT exchange, recorded in ``out`` before any reply can end the probe.

        Returns the number of error replies it caused. A sender the server already refused is not
        sent again (same answer, one error less: Exim drops the session after 3 syntax errors).
        """
        refused_senders = {} if refused_senders is None else refused_senders
        mail_from = expand(variant["mail_from"], values)
        rcpt_to = expand(variant["rcpt_to"], values)
        record: dict[str, Any] = {
            "n": variant["n"], "variant": variant["name"], "mail_from": mail_from, "rcpt_to": rcpt_to, "tls": s.tls,
            "mail_code": None, "mail_text": None, "rcpt_code": None, "rcpt_text": None, "accepted": None,
        }
        out.append(record)
        if mail_from is None or rcpt_to is None:
            record["skipped"] = "the server announced no name to build this address from"
            return 0
        if mail_from in refused_senders:
            record["mail_code"], record["mail_text"] = refused_senders[mail_from]
            record["accepted"] = False
            record["note"] = "this sender was refused earlier in the test; not sent again"
            return 0
        if self._open_tx is not None and self._open_tx[0] is s and self._open_tx[1] == mail_from:
            # Same sender as the attempt before on this connection: one more RCPT in its transaction
            # (each RCPT is judged on its own). Every transaction with an accepted recipient costs
            # Postfix a queue file and an in-flow token; a Postfix that delivers nothing (a test
            # server) then holds each new one back by in_flow_delay (1 s): 17 s for an open relay.
            record["mail_code"], record["mail_text"] = self._open_tx[2], self._open_tx[3]
            record["note"] = "in the transaction of the attempt before (same MAIL FROM)"
        else:
            self._open_tx = None
            await paced(s, "RSET")
            mail = await paced(s, f"MAIL FROM:<{mail_from}>")
            record["mail_code"], record["mail_text"] = mail.code, short(mail)
            self._check_stop(mail.code, f)
            if not mail.positive:
                record["accepted"] = False
                if mail.code >= 500:
                    refused_senders[mail_from] = (mail.code, short(mail))
                return 1
            self._open_tx = (s, mail_from, mail.code, short(mail))
        rcpt = await paced(s, f"RCPT TO:<{rcpt_to}>")
        record["rcpt_code"], record["rcpt_text"] = rcpt.code, short(rcpt)
        record["accepted"] = 200 <= rcpt.code < 300
        self._check_stop(rcpt.code, f)
        return 0 if record["accepted"] else 1

    @staticmethod
    def _check_stop(code: int, f: dict[str, Any]) -> None:
        if code == 530:
            f["smtp.relay.auth_required"] = True
            raise _Stop()
        if code == 421:
            raise ServiceUnavailable("the server answered 421 during the relay attempts")

    async def _controls(self, s: Session, candidates: list[tuple[str, str]], foreign: str, f: dict[str, Any]) -> None:
        """Random local parts at the server's own domains until one is refused with 5xx (then a
        malformed address, for the record, when none was). Facts: the controls tried, the deciding
        one (``control``), and ``control_accepted``: false = the server refused a well-formed
        recipient, true = it accepted every one tried, null = none could be tried."""
        controls: list[dict[str, Any]] = f["smtp.relay.controls"]
        self._open_tx = None  # the controls start their own transaction
        await paced(s, "RSET")
        mail = await paced(s, "MAIL FROM:<>")
        if not mail.positive:
            f["smtp.relay.control"] = {"rcpt_to": None, "code": mail.code, "text": short(mail), "accepted": None,
                                       "note": "MAIL FROM:<> refused: no control possible"}
            return
        for own, source in candidates[:MAX_CONTROLS]:
            record = await self._rcpt_control(s, f"{random_local_part()}@{own}", own, source)
            controls.append(record)
            if record["accepted"] is False and record["code"] >= 500:
                break
        wellformed = [c for c in controls if c["accepted"] is not None]
        refused = next((c for c in wellformed if c["accepted"] is False and c["code"] >= 500), None)
        accepted = [c["rcpt_to"] for c in wellformed if c["accepted"]]
        f["smtp.relay.controls_accepted"] = accepted
        if refused is None and accepted:
            # Every well-formed control went through: see whether it refuses anything at all.
            malformed = await self._rcpt_control(s, f"{random_local_part()}@{foreign.split('.', 1)[0]}..invalid", None, "malformed")
            controls.append(malformed)
            f["smtp.relay.malformed_rejected"] = malformed["accepted"] is False and malformed["code"] >= 500
        await paced(s, "RSET")
        f["smtp.relay.control"] = refused or (controls[0] if controls else None)
        decisive = f["smtp.relay.control"]
        f["smtp.relay.control_rcpt"] = decisive["rcpt_to"] if decisive else None
        f["smtp.relay.control_reply"] = f"{decisive['code']} {decisive['text'] or ''}".strip() if decisive else None
        # 4xx answers (greylisting, a busy verifier) prove nothing either way.
        f["smtp.relay.control_accepted"] = False if refused else (True if accepted else None)

    @staticmethod
    async def _rcpt_control(s: Session, address: str, domain: str | None, source: str) -> dict[str, Any]:
        rcpt = await paced(s, f"RCPT TO:<{address}>")
        return {"rcpt_to": address, "domain": domain, "source": source, "code": rcpt.code, "text": short(rcpt),
                "accepted": 200 <= rcpt.code < 300}


def _peer_literal(s: Session) -> str | None:
    peer = s.client.writer.get_extra_info("peername")
    try:
        return ip_literal(str(peer[0])) if peer else None
    except ValueError:
        return None
