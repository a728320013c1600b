"""The session and VRFY probes against fake servers: facts observed, catalog types respected, failures as data."""

import asyncio
import time

import pytest

from smtpaudit.catalog import load_catalog, value_matches_type
from smtpaudit.probes.base import ProbeContext, Timeouts
from smtpaudit.probes.smtp.session import SessionProbe, classify_auth_reply
from smtpaudit.probes.smtp.vrfy import VrfyProbe
from smtpaudit.targets import parse_target
from tests.fakes.certs import server_context
from tests.fakes.smtp import Delay, FakeSmtpServer, Send, Silence, simple_responder

CTX = ProbeContext(timeouts=Timeouts(connect=2, greeting=2, command=2, tls=3, endpoint=10))


def run_probe(probe, server):
    async def go():
        async with server as srv:
            return await probe.run(parse_target(srv.target), CTX, {})

    return asyncio.run(go())


def assert_catalogued(result):
    catalog = load_catalog()
    for name, value in result.facts.items():
        assert name in catalog.facts, f"{name} not in the fact catalog"
        assert catalog.facts[name].probe == result.probe, name
        assert value_matches_type(value, catalog.facts[name].type), (name, value)


def test_starttls_server_with_auth_only_after_tls():
    responder = simple_responder(
        ehlo=["mx.example.test", "PIPELINING", "SIZE 10240000", "STARTTLS", "ENHANCEDSTATUSCODES"],
        replies={"AUTH": b"530 5.7.0 Must issue a STARTTLS command first\r\n", "HELP": b"214 2.0.0 see RFC 5321\r\n"},
    )
    server = FakeSmtpServer(script=[Send(b"220 mx.example.test ESMTP Postfix (Debian/GNU)\r\n")], responder=responder, tls_context=server_context())
    result = run_probe(SessionProbe(), server)
    f = result.facts
    assert result.status == "ok", result.error_message
    assert f["smtp.greeting.code"] == 220 and f["smtp.greeting.hostname"] == "mx.example.test"
    assert f["smtp.ehlo.keywords"] == ["PIPELINING", "SIZE", "STARTTLS", "ENHANCEDSTATUSCODES"]
    assert f["smtp.ehlo.size"] == 10240000
    assert f["smtp.starttls.offered"] is True and f["smtp.starttls.works"] is True
    assert f["smtp.tls.version"] in ("TLSv1.2", "TLSv1.3")
    assert f["smtp.auth.mechanisms_before_tls"] == []
    assert f["smtp.auth.plaintext_probe"] == "encryption_required"
    assert f["software.product"] == "postfix" and f["software.version"] is None
    assert f["smtp.starttls.offered_after_tls"] is True  # the fake repeats its EHLO: RFC 3207 violation observed
    assert_catalogued(result)
    sent = server.received[0]
    assert sent[0].startswith("EHLO ") and "STARTTLS" in sent
    assert not any(line.upper().startswith(("MAIL", "RCPT", "DATA")) for line in sent)


def test_weak_server_plaintext_auth_is_observed_and_redacted():
    responder = simple_responder(
        ehlo=["weak.example.test", "AUTH PLAIN LOGIN", "AUTH=LOGIN"],
        replies={"AUTH": b"535 5.7.8 Authentication credentials invalid\r\n", "HELP": b"502 no help\r\n"},
    )
    server = FakeSmtpServer(script=[Send(b"220 weak.example.test ESMTP Exim 4.92.3\r\n")], responder=responder)
    result = run_probe(SessionProbe(), server)
    f = result.facts
    assert f["smtp.starttls.offered"] is False and f["smtp.starttls.works"] is None
    assert f["smtp.auth.mechanisms_before_tls"] == ["PLAIN", "LOGIN"]
    assert f["smtp.auth.plaintext_probe"] == "credentials_checked" and f["smtp.auth.plaintext_probe_code"] == 535
    assert (f["software.product"], f["software.version"], f["software.version_source"]) == ("exim", "4.92.3", "banner")
    # PLAIN goes without an initial response; this server refuses the credential at once (535).
    assert any(ln.text == "AUTH PLAIN" for ln in result.transcript)
    assert f["smtp.auth.plaintext_processed"] is True and f["smtp.auth.plaintext_challenged"] is False
    assert_catalogued(result)


def test_helo_fallback_when_ehlo_is_refused():
    responder = simple_responder(replies={"EHLO": b"502 5.5.2 command not recognized\r\n", "HELO": b"250 old.example.test\r\n"})
    server = FakeSmtpServer(script=[Send(b"220 old.example.test SMTP\r\n")], responder=responder)
    result = run_probe(SessionProbe(), server)
    assert result.facts["smtp.ehlo.supported"] is False
    assert result.facts["smtp.ehlo.hostname"] == "old.example.test"


@pytest.mark.parametrize("greeting", [b"421 4.3.2 Service not available, closing\r\n", b"554 5.7.1 You are not welcome\r\n"])
def test_refusing_greeting_is_an_error_with_its_text(greeting):
    result = run_probe(SessionProbe(), FakeSmtpServer(script=[Send(greeting)]))
    assert result.status == "error" and result.error_reason == "service_unavailable"
    assert result.facts["smtp.greeting.code"] == int(greeting[:3])
    assert greeting[4:].decode().strip() in result.error_message


def test_broken_starttls_handshake_is_a_fact_not_an_error():
    responder = simple_responder(ehlo=["b.example.test", "STARTTLS"], replies={"STARTTLS": b"220 go ahead\r\n", "AUTH": b"503 no\r\n"})
    # After 220 the server sends garbage instead of a ServerHello.
    server = FakeSmtpServer(script=[Send(b"220 b.example.test\r\n")], responder=lambda line: b"220 go ahead\r\n\x15\x03\x03\x00\x02\x02\x28 garbage" if line == "STARTTLS" else responder(line))
    result = run_probe(SessionProbe(), server)
    assert result.status == "ok"
    assert result.facts["smtp.starttls.offered"] is True and result.facts["smtp.starttls.works"] is False
    assert "handshake failed" in result.facts["smtp.starttls.error"]


def test_silent_starttls_handshake_leaves_works_unknown():
    """A handshake that runs out its time is no verdict: starttls.works stays absent, the probe
    says read_timeout (so the endpoint is not fully scanned) and keeps what it saw before."""
    plain = simple_responder(ehlo=["s.example.test", "STARTTLS"], replies={"STARTTLS": b"220 go ahead\r\n", "AUTH": b"503 no\r\n"})
    upgraded: list[str] = []

    def responder(line: str):
        if upgraded:
            return Silence()  # reads the ClientHello, answers nothing
        if line == "STARTTLS":
            upgraded.append(line)
        return plain(line)

    server = FakeSmtpServer(script=[Send(b"220 s.example.test ESMTP\r\n")], responder=responder)
    ctx = ProbeContext(timeouts=Timeouts(connect=2, greeting=2, command=2, tls=0.5, endpoint=10))

    async def go():
        async with server as srv:
            return await SessionProbe().run(parse_target(srv.target), ctx, {})

    result = asyncio.run(go())
    assert result.status == "error" and result.error_reason == "read_timeout", result
    assert "did not finish within 0.5 s" in result.error_message
    assert result.facts["smtp.starttls.offered"] is True
    assert "smtp.starttls.works" not in result.facts
    assert result.facts["smtp.greeting.code"] == 220


def test_silent_server_fails_within_the_greeting_timeout():
    t0 = time.monotonic()
    result = run_probe(SessionProbe(), FakeSmtpServer(script=[Silence()]))
    assert result.status == "error" and result.error_reason == "read_timeout"
    assert time.monotonic() - t0 < 5


def test_vrfy_probe_records_codes():
    def respond(line):
        if line.startswith("VRFY postmaster"):
            return b"250 2.1.5 Postmaster <postmaster@v.example.test>\r\n"
        if line.startswith("VRFY"):
            return b"550 5.1.1 unknown\r\n"
        if line.startswith("EXPN"):
            return b"502 5.5.1 EXPN disabled\r\n"
        return simple_responder()(line)

    result = run_probe(VrfyProbe(), FakeSmtpServer(script=[Delay(0.01), Send(b"220 v.example.test\r\n")], responder=respond))
    f = result.facts
    assert (f["smtp.vrfy.postmaster.code"], f["smtp.vrfy.random.code"], f["smtp.expn.postmaster.code"]) == (250, 550, 502)
    assert_catalogued(result)


@pytest.mark.parametrize("code, name", [(535, "credentials_checked"), (538, "encryption_required"), (530, "encryption_required"),
                                        (503, "not_supported"), (235, "accepted_invalid_credential"), (421, "other")])
def test_auth_reply_classification(code, name):
    assert classify_auth_reply(code) == name


def _silent_after(step: str):
    """A server offering AUTH before TLS that goes silent: after the 334 challenge's credential
    (aiosmtpd with AuthResult(success=False)) or at the AUTH command itself."""
    base = simple_responder(ehlo=["quiet.example.test", "AUTH PLAIN LOGIN"], replies={"HELP": b"502 no help\r\n"})

    def respond(line: str) -> bytes | None:
        if line.upper().startswith("AUTH"):
            return b"" if step == "command" else b"334 \r\n"  # b"": stay silent (None would hang up)
        if line.upper().startswith(("EHLO", "HELO", "HELP", "QUIT", "NOOP", "RSET")):
            return base(line)
        return b""  # the credential: no reply, ever

    return respond


@pytest.mark.parametrize(("step", "processed"), [("credential", True), ("command", None)])
def test_no_reply_to_a_wrong_password_is_never_a_pass(step, processed):
    server = FakeSmtpServer(script=[Send(b"220 quiet.example.test ESMTP\r\n")], responder=_silent_after(step))
    result = run_probe(SessionProbe(), server)
    f = result.facts
    assert f["smtp.auth.plaintext_probe_inconclusive"] == "no_reply" and "smtp.auth.plaintext_probe" not in f
    assert f["smtp.auth.plaintext_challenged"] is (step == "credential")
    assert f.get("smtp.auth.plaintext_processed") is processed and ("smtp.auth.plaintext_processed" in f) is (processed is not None)
    assert_catalogued(result)
