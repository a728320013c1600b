"""The submission probe: does a submission endpoint insist on TLS and on AUTH before it takes mail?

On submission endpoints only (port 587/465 or ``--role submission``; an MX gets no connection):

* connection 1 (STARTTLS endpoints): ``MAIL FROM`` before STARTTLS; a server that enforces TLS
  refuses it (Postfix ``smtpd_tls_security_level = encrypt`` answers ``530 5.7.0 Must issue a
  STARTTLS command first``). Only when MAIL is accepted, ``RCPT TO`` a foreign reserved address.
* connection 2 (over TLS when possible): ``MAIL FROM`` / ``RCPT TO`` a foreign reserved address
  without AUTH; RFC 4954 section 6 says the refusal is ``530 Authentication required``.
* with ``--auth-user`` / ``--auth-password``: one TLS connection per advertised mechanism
  (PLAIN, LOGIN, CRAM-MD5) to learn which succeed. Credentials are sent only over TLS, never
  in the clear, and never appear in transcripts.

DATA is never sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeError, ProbeResult
from smtpaudit.probes.smtp.behaviour import BehaviourProbe, Session, relay_domain, session, short
from smtpaudit.probes.smtp.client import Reply, Transcript
from smtpaudit.targets import Endpoint, Mode, Role

SUPPORTED_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
AUTH_SHOWN = "[redacted credential]"


async def authenticate(s: Session, mechanism: str, user: str, password: str) -> Reply:
    """One AUTH exchange; every line carrying the credential is shown redacted in the transcript."""
    c = s.client
    if mechanism == "PLAIN":
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return await c.command(f"AUTH PLAIN {token}", shown=f"AUTH PLAIN {AUTH_SHOWN}")
    if mechanism == "LOGIN":
        reply = await c.command("AUTH LOGIN")
        if reply.code == 334:
            reply = await c.command(base64.b64encode(user.encode()).decode(), shown=AUTH_SHOWN)
        if reply.code == 334:
            reply = await c.command(base64.b64encode(password.encode()).decode(), shown=AUTH_SHOWN)
    elif mechanism == "CRAM-MD5":
        reply = await c.command("AUTH CRAM-MD5")
        if reply.code == 334:
            try:
                challenge = base64.b64decode(reply.text.strip() or b"", validate=False)
            except ValueError:
                challenge = b""
            digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
            reply = await c.command(base64.b64encode(f"{user} {digest}".encode()).decode(), shown=AUTH_SHOWN)
    else:
        raise ValueError(f"unsupported mechanism {mechanism}")
    if reply.code == 334:
        reply = await c.command("*")  # abort a server that still wants more (RFC 4954 section 4)
    return reply


class SubmissionProbe(BehaviourProbe):
    name: ClassVar[str] = "smtp.submission"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def _observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any], result: ProbeResult, transcript: Transcript) -> None:
        f = result.facts
        checked = endpoint.role is Role.SUBMISSION
        f["smtp.submission.checked"] = checked
        # Verdict facts (…_accepted) are set only once observed: a check cut short leaves them
        # absent, so its rules say "not evaluated" rather than pass.
        for name in ("mail_before_tls_code", "mail_before_tls_text", "rcpt_before_tls_code",
                     "unauth_mail_code", "unauth_rcpt_code", "unauth_reply_text", "unauth_refusal_code",
                     "unauth_over_tls", "auth_results", "auth_ok_mechanisms"):
            f[f"smtp.submission.{name}"] = None
        f["smtp.submission.auth_tested"] = False
        if not checked or endpoint.mode is not Mode.STARTTLS:
            f["smtp.submission.mail_before_tls_accepted"] = None
        if not checked:
            f["smtp.submission.unauth_accepted"] = None
            result.status, result.error_reason = "skipped", "not_applicable"
            result.error_message = "not a submission endpoint (use --role submission to check it as one)"
            return
        domain = relay_domain(ctx)
        sender, recipient = f"smtpaudit@{domain}", f"relaytest@{domain}"

        if endpoint.mode is Mode.STARTTLS:
            async with session(endpoint, ctx, transcript, result) as s:
                mail = s.client.not_closing("MAIL", await s.client.command(f"MAIL FROM:<{sender}>"))
                f["smtp.submission.mail_before_tls_code"] = mail.code
                f["smtp.submission.mail_before_tls_text"] = short(mail)
                f["smtp.submission.mail_before_tls_accepted"] = mail.positive
                if mail.positive:
                    rcpt = await s.client.command(f"RCPT TO:<{recipient}>")
                    f["smtp.submission.rcpt_before_tls_code"] = rcpt.code
                    await s.client.command("RSET")

        async with session(endpoint, ctx, transcript, result, starttls=True) as s:
            f["smtp.submission.unauth_over_tls"] = s.tls
            mail = s.client.not_closing("MAIL", await s.client.command(f"MAIL FROM:<{sender}>"))
            f["smtp.submission.unauth_mail_code"] = mail.code
            last = mail
            if mail.positive:
                rcpt = s.client.not_closing("RCPT", await s.client.command(f"RCPT TO:<{recipient}>"))
                f["smtp.submission.unauth_rcpt_code"] = rcpt.code
                last = rcpt
                await s.client.command("RSET")
            f["smtp.submission.unauth_reply_text"] = short(last)
            f["smtp.submission.unauth_accepted"] = last.positive
            f["smtp.submission.unauth_refusal_code"] = None if last.positive else last.code
            advertised = list(s.caps.auth)

        user = ctx.options.get("auth_user")
        password = ctx.options.get("auth_password")
        if user and password:
            await self._login(endpoint, ctx, transcript, result, advertised, str(user), str(password))

    async def _login(self, endpoint: Endpoint, ctx: ProbeContext, transcript: Transcript, result: ProbeResult,
                     advertised: list[str], user: str, password: str) -> None:
        f = result.facts
        outcomes: list[dict[str, Any]] = []
        f["smtp.submission.auth_results"] = outcomes
        for mech in [m for m in advertised if m in SUPPORTED_MECHANISMS]:
            try:
                async with session(endpoint, ctx, transcript, result, starttls=True) as s:
                    if not s.tls:
                        # Never send a real password in the clear: record why nothing was tried.
                        outcomes.append({"mechanism": mech, "code": None, "ok": None, "note": "no TLS: not tried"})
                        break
                    reply = await authenticate(s, mech, user, password)
                    outcomes.append({"mechanism": mech, "code": reply.code, "ok": reply.code == 235, "text": short(reply, 120)})
            except ProbeError as exc:
                outcomes.append({"mechanism": mech, "code": None, "ok": None, "note": exc.message[:200]})
        f["smtp.submission.auth_tested"] = any(o["ok"] is not None for o in outcomes)
        f["smtp.submission.auth_ok_mechanisms"] = [o["mechanism"] for o in outcomes if o["ok"]]
