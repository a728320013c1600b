"""Smoke tests of the lab itself: each instance behaves the way its variant file says it does.

They talk to the servers with smtplib and Python's ssl only (no smtpaudit code), so a scanner test
that fails against the lab can be told apart from a lab that is broken. Never DATA to a foreign
domain: relay is judged at RCPT and the transaction reset.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import time
import warnings

import pytest

from tests.lab import procs
from tests.lab.mta import INSTANCES
from tests.lab.server import LabServer, load_variant

pytestmark = pytest.mark.lab

NAMES = list(INSTANCES)
EXPECT = {name: load_variant(name)["expect"] for name in NAMES}
TIMEOUT = 10
_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def instances_where(key: str) -> list[str]:
    """Instances whose variant expectations have `key` set to something truthy."""
    return [name for name in NAMES if EXPECT[name].get(key)]


def instance(request, name: str) -> LabServer:
    """The lab instance `name`, through its session fixture (started on first use)."""
    return request.getfixturevalue(name.replace("-", "_"))


@pytest.fixture(params=NAMES)
def server(request) -> LabServer:
    """Each lab instance in turn."""
    return instance(request, request.param)


def client_context(srv: LabServer, version: str | None = None) -> ssl.SSLContext:
    """A client context that trusts the instance: the lab CA, or nothing for the weak self-signed cert.

    With `version`, the handshake is pinned to that one protocol version and nothing is verified:
    the point is then only whether the server accepts the version.
    """
    if version is None and srv.spec["cert"] != "weak":
        ctx = ssl.create_default_context(cafile=str(srv.ca_cert))
        ctx.check_hostname = True
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # OpenSSL 3 refuses TLS < 1.2, SHA-1 and RSA-1024 above security level 0.
    # An anonymous-only server (the insecure OpenSMTPD) completes nothing else: offer only those.
    ctx.set_ciphers("aNULL:@SECLEVEL=0" if version and srv.expect.get("tls_anonymous_only") else "ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 enum members
        ctx.minimum_version = _VERSIONS[version] if version else ssl.TLSVersion.TLSv1
        if version:
            ctx.maximum_version = _VERSIONS[version]
    return ctx


def connect(srv: LabServer, role: str = "smtp") -> smtplib.SMTP:
    client = smtplib.SMTP(srv.host, srv.ports[role], local_hostname="client.example.org", timeout=TIMEOUT)
    client.ehlo()
    return client


def auth_mechanisms(client: smtplib.SMTP) -> set[str]:
    return set(client.esmtp_features.get("auth", "").upper().split()) if client.has_extn("auth") else set()


def starttls(client: smtplib.SMTP, ctx: ssl.SSLContext) -> None:
    code, text = client.starttls(context=ctx)
    assert code == 220, text
    client.ehlo()


def test_greeting_and_banner(server: LabServer) -> None:
    greeting = procs.probe_greeting(server.ports["smtp"])
    assert greeting.startswith("220 ")
    exp = server.expect
    if "banner" in exp:
        assert greeting == exp["banner"]
    else:
        assert re.search(exp["banner_regex"], greeting), greeting
    assert server.banner.split(" ")[:3] == greeting.split(" ")[:3]  # Exim's carries the time
    discloses = bool(re.search(r"\d+\.\d+", greeting))
    assert discloses == exp["banner_discloses_version"], greeting


def test_ehlo_capabilities_before_tls(server: LabServer) -> None:
    client = connect(server)
    try:
        assert client.has_extn("starttls") == server.expect["starttls"]
        assert auth_mechanisms(client) == set(server.expect["auth_before_tls"])
    finally:
        client.quit()


def test_starttls_handshake(server: LabServer) -> None:
    client = connect(server)
    try:
        if server.expect["tls_handshake"]:
            starttls(client, client_context(server))
            assert isinstance(client.sock, ssl.SSLSocket)
            assert client.sock.version() in server.expect["tls_versions_accepted"]
            assert auth_mechanisms(client) == set(server.expect["auth_after_tls"])
        else:
            # OpenSMTPD 6.8 + OpenSSL 3: "220 Ready to start TLS", then an internal_error alert.
            with pytest.raises(ssl.SSLError):
                client.starttls(context=client_context(server))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("name", "version", "accepted"),
    [
        (name, version, version in EXPECT[name]["tls_versions_accepted"])
        for name in NAMES
        for version in _VERSIONS
        if version in EXPECT[name]["tls_versions_accepted"] + EXPECT[name]["tls_versions_refused"]
    ],
)
def test_tls_protocol_versions(request, name: str, version: str, accepted: bool) -> None:
    server = instance(request, name)
    client = connect(server)
    try:
        if accepted:
            starttls(client, client_context(server, version))
            assert client.sock.version() == version
        else:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                client.starttls(context=client_context(server, version))
    finally:
        client.close()


def test_smtps_port_speaks_implicit_tls(server: LabServer) -> None:
    ctx = client_context(server)
    with socket.create_connection((server.host, server.ports["smtps"]), timeout=TIMEOUT) as raw:
        if server.expect["smtps"]:
            with ctx.wrap_socket(raw, server_hostname=server.host) as tls:
                assert procs.read_greeting(tls, TIMEOUT).startswith("220 ")
        else:
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw, server_hostname=server.host)


def test_vrfy(server: LabServer) -> None:
    client = connect(server)
    try:
        code, text = client.vrfy("postmaster")
        assert code in server.expect["vrfy_codes"], (code, text)
        code, text = client.vrfy("no-such-user-4711")
        assert code in server.expect["vrfy_unknown_codes"], (code, text)
    finally:
        client.quit()


def test_only_lab_users_exist(server: LabServer) -> None:
    client = connect(server)
    try:
        assert client.mail("sender@example.org")[0] == 250
        for user in server.local_users:
            code, text = client.rcpt(f"{user}@lab.test")
            assert code == 250, (user, code, text)
        code, text = client.rcpt("no-such-user-4711@lab.test")
        if server.expect.get("accepts_all_recipients"):  # aiosmtpd-insecure: no recipient check at all
            assert code == 250, (code, text)
        else:
            assert 500 <= code < 600, (code, text)
        client.rset()
    finally:
        client.quit()


def test_relay_decided_at_rcpt(server: LabServer) -> None:
    client = connect(server)
    try:
        code, text = client.mail("relay-probe@example.org")
        assert code == 250, text
        code, text = client.rcpt("relay-target@example.com")
        if server.expect["relay"]:
            assert code == 250, text
        else:
            assert 400 <= code < 600, text
        client.rset()  # never DATA to a foreign domain
    finally:
        client.quit()


def test_submission_without_tls(server: LabServer) -> None:
    client = connect(server, "submission")
    try:
        code, text = client.mail("sender@example.org")
        if server.expect["submission_requires_tls"]:
            assert code == 530, text
        else:
            assert code == 250, text
            client.rset()
    finally:
        client.close()


@pytest.mark.parametrize("name", [n for n in NAMES if "submission_requires_auth" in EXPECT[n]])
def test_submission_without_auth(request, name: str) -> None:
    server = instance(request, name)
    client = connect(server, "submission")
    try:
        if server.expect["submission_requires_tls"]:
            starttls(client, client_context(server))
        assert client.mail("sender@example.org")[0] == 250
        code, text = client.rcpt("postmaster@lab.test")  # a local recipient: not a relay question
        if server.expect["submission_requires_auth"]:
            assert 500 <= code < 600, text
        else:
            assert code == 250, text
        client.rset()
    finally:
        client.close()


@pytest.mark.parametrize("name", sorted(set(instances_where("auth_before_tls") + instances_where("auth_after_tls"))))
def test_lab_credentials_log_in(request, name: str) -> None:
    server = instance(request, name)
    exp = server.expect
    assert server.credentials is not None
    # Plaintext AUTH where the variant offers it before TLS, else on submission inside STARTTLS.
    role = "smtp" if exp["auth_before_tls"] else "submission"

    def session() -> smtplib.SMTP:
        client = connect(server, role)
        if not exp["auth_before_tls"]:
            starttls(client, client_context(server))
        return client

    client = session()
    try:
        code, text = client.login(server.credentials.user, server.credentials.password)
        assert code == 235, text
    finally:
        client.quit()
    # The wrong password last: Dovecot delays failures (auth_failure_delay 2 s) and then
    # penalises the client IP for a while, which would slow a later successful login.
    client = session()
    try:
        # One PLAIN attempt (login() would retry with every mechanism, each failure delayed).
        client.user, client.password = server.credentials.user, "wrong-" + server.credentials.password
        if exp.get("wrong_password_reply", True):
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                client.auth("PLAIN", client.auth_plain)
            assert err.value.smtp_code == 535
        else:  # aiosmtpd-insecure never answers a wrong password
            client.sock.settimeout(2)
            with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
                client.auth("PLAIN", client.auth_plain)
    finally:
        client.close()


def test_accepted_local_mail_is_discarded(server: LabServer) -> None:
    """Mail to the lab's own domain is accepted and thrown away by the (only) discard path."""
    marker = f"lab-discard-{time.monotonic_ns()}"
    client = connect(server)
    try:
        client.sendmail("sender@example.org", ["postmaster@lab.test"],
                        f"Subject: {marker}\r\nMessage-ID: <{marker}@example.org>\r\n\r\nlab\r\n")
    finally:
        client.quit()
    deadline = time.monotonic() + 10
    pattern = re.compile(server.expect["discard_log"])
    while time.monotonic() < deadline:
        if pattern.search(server.log_path.read_text(errors="replace")):
            return
        time.sleep(0.1)
    pytest.fail(f"no discard line /{pattern.pattern}/ in {server.log_path}\n{server.log_tail()}")


def test_restart_with_changed_postfix_parameter(postfix_insecure: LabServer, lab_reconfigure) -> None:
    ports = dict(postfix_insecure.ports)
    lab_reconfigure(postfix_insecure, smtpd_banner="$myhostname ESMTP reconfigured",
                    disable_vrfy_command="yes")
    assert postfix_insecure.ports == ports
    assert procs.probe_greeting(ports["smtp"]) == "220 mail.lab.test ESMTP reconfigured"
    client = connect(postfix_insecure)
    try:
        assert client.vrfy("postmaster")[0] == 502
    finally:
        client.quit()


def test_restart_with_changed_exim_macro(exim_insecure: LabServer, lab_reconfigure) -> None:
    lab_reconfigure(exim_insecure, ALLOW_VRFY=None, OPEN_RELAY=None)
    client = connect(exim_insecure)
    try:
        assert client.vrfy("postmaster")[0] == 252
        client.mail("relay-probe@example.org")
        assert client.rcpt("relay-target@example.com")[0] == 550
        client.rset()
    finally:
        client.quit()


def test_startup_is_fast(server: LabServer) -> None:
    # Measured here: Postfix+Dovecot ~0.4 s, Exim ~0.1 s, OpenSMTPD ~0.2 s. CI budget is minutes.
    assert server.startup_seconds is not None and server.startup_seconds < 10


def test_bad_config_fails_to_start_with_the_reason(exim_insecure: LabServer, lab_reconfigure) -> None:
    with (
        pytest.MonkeyPatch.context() as mp,
        pytest.raises(pytest.skip.Exception, match="(?s)failed to restart.*no_such_exim_option"),
    ):
        mp.delenv("CI", raising=False)
        lab_reconfigure(exim_insecure, no_such_exim_option="1")
    assert not exim_insecure.running


def _error_latencies(srv: LabServer, n: int) -> list[tuple[int, float]]:
    """Send `n` unknown commands on one session; (reply code, seconds) of each."""
    client = connect(srv)
    out = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            code, _text = client.docmd("XLABERROR")
            out.append((code, time.monotonic() - t0))
            if code == 421:
                break
    finally:
        client.close()
    return out


def test_hardened_postfix_tarpits_after_five_errors(postfix_hardened: LabServer) -> None:
    """smtpd_soft_error_limit = 5 as guides advise: the 6th error reply waits 1 s (smtpd_error_sleep_time)."""
    seen = _error_latencies(postfix_hardened, 6)
    assert [c for c, _ in seen] == [500] * 6, seen  # "500 5.5.2 Error: command not recognized"
    assert all(t < 0.5 for _, t in seen[:5]), seen
    assert seen[5][1] >= 0.8, seen


def test_stock_postfix_tarpits_after_ten_errors(postfix_insecure: LabServer) -> None:
    """Postfix's defaults (soft 10 / hard 20): ten fast errors, then 1 s per reply."""
    seen = _error_latencies(postfix_insecure, 11)
    assert all(t < 0.5 for _, t in seen[:10]), seen
    assert seen[10][1] >= 0.8, seen


def test_secure_exim_keeps_the_default_connection_limit(exim_secure: LabServer) -> None:
    """smtp_accept_max at Exim's default (20): the 21st concurrent connection gets 421."""
    socks: list[socket.socket] = []
    try:
        greetings = []
        for _ in range(22):
            s = socket.create_connection((exim_secure.host, exim_secure.ports["smtp"]), timeout=TIMEOUT)
            socks.append(s)
            greetings.append(s.recv(512).decode(errors="replace"))
        assert any(g.startswith("421") and "oo many" in g for g in greetings), greetings
        assert sum(g.startswith("220") for g in greetings) <= 20, greetings
    finally:
        for s in socks:
            s.close()
