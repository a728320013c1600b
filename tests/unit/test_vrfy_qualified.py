"""VRFY on an Exim-like server: bare names get 501, user@domain tells known from unknown users."""

from __future__ import annotations

from smtpaudit.catalog import load_catalog
from smtpaudit.engine.evaluate import judge
from smtpaudit.engine.rules import load_rules
from smtpaudit.paths import builtin_rules_dir
from smtpaudit.probes.smtp.vrfy import VrfyProbe
from tests.fakes.smtp import FakeSmtpServer, Send, simple_responder
from tests.unit.test_session_probe import assert_catalogued, run_probe

LOCAL = {"lab.test"}
USERS = {"postmaster", "labuser"}


def exim_like(line: str) -> bytes | None:
    """Exim without recipient_unqualified_hosts: VRFY/EXPN need a domain; only lab.test is local."""
    text = line.strip()
    verb, _, arg = text.partition(" ")
    if verb.upper() in ("VRFY", "EXPN"):
        if "@" not in arg:
            return f"501 <{arg}>: recipient address must contain a domain\r\n".encode()
        user, domain = arg.rsplit("@", 1)
        if domain not in LOCAL:
            return f"550 <{arg}>: Unrouteable address\r\n".encode()
        if user in USERS:
            return f"250 <{arg}> is deliverable\r\n".encode()
        return f"550 <{arg}>: Unrouteable address\r\n".encode()
    return simple_responder()(line)


def test_bare_501_is_retried_with_the_servers_domains_and_disclosure_is_found() -> None:
    server = FakeSmtpServer(script=[Send(b"220 mail.lab.test ESMTP Exim 4.96\r\n")], responder=exim_like)
    result = run_probe(VrfyProbe(), server)
    f = result.facts
    assert_catalogued(result)
    # Both bare names refused; mail.lab.test (greeting) is not local here: 550; its parent lab.test is.
    assert [a["command"].split(" ", 1)[1].split("@")[-1] for a in f["smtp.vrfy.attempts"]][:4] == [
        "postmaster", f["smtp.vrfy.random.argument"].split("@")[0], "mail.lab.test", "lab.test"]
    assert f["smtp.vrfy.domain"] == "lab.test"
    assert (f["smtp.vrfy.postmaster.code"], f["smtp.vrfy.random.code"]) == (250, 550)
    assert f["smtp.vrfy.random.argument"].endswith("@lab.test")
    assert f["smtp.expn.postmaster.argument"] == "postmaster@lab.test"
    rules = load_rules([builtin_rules_dir()], {n: spec.type for n, spec in load_catalog().facts.items()})
    out = judge(rules["vrfy-discloses-users"], f, fact_probe={}, probe_errors={})
    assert out.status == "finding" and "postmaster@lab.test -> 250" in out.message


def test_bare_answers_need_no_retry() -> None:
    def respond(line: str) -> bytes | None:
        if line.upper().startswith(("VRFY", "EXPN")):
            return b"252 2.0.0 Cannot VRFY user\r\n"
        return simple_responder()(line)

    result = run_probe(VrfyProbe(), FakeSmtpServer(script=[Send(b"220 mail.lab.test ESMTP\r\n")], responder=respond))
    f = result.facts
    assert f["smtp.vrfy.domain"] is None and len(f["smtp.vrfy.attempts"]) == 3
    assert f["smtp.vrfy.postmaster.argument"] == "postmaster"


def test_421_during_the_qualified_retry_leaves_the_verdict_unknown() -> None:
    """The bare names got 501 (not in this form) and the qualified retry got 421: neither form
    was answered, so vrfy-discloses-users is not evaluated (it passed on the 501s before)."""
    def respond(line: str) -> bytes | None:
        if line.upper().startswith("VRFY") and "@" in line:
            return b"421 4.3.2 mail.lab.test closing connection\r\n"
        return exim_like(line)

    result = run_probe(VrfyProbe(), FakeSmtpServer(script=[Send(b"220 mail.lab.test ESMTP Exim 4.96\r\n")], responder=respond))
    f = result.facts
    assert [a["code"] for a in f["smtp.vrfy.attempts"]] == [501, 501, 421]
    assert "smtp.vrfy.postmaster.code" not in f and "smtp.vrfy.random.code" not in f
    rules = load_rules([builtin_rules_dir()], {n: spec.type for n, spec in load_catalog().facts.items()})
    assert judge(rules["vrfy-discloses-users"], f, fact_probe={}, probe_errors={}).status == "not_evaluated"
