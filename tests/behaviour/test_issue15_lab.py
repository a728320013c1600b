"""Issue 15 "Behaviour" on the real servers that showed each problem (lab tests).

- Open relays are confirmed by a recipient control the server refuses, even when the greeting
  names a host it relays for (Postfix, Exim); a server that accepts every recipient (aiosmtpd)
  stays tentative and the message says so.
- VRFY on Exim: a bare name gets 501, user@domain discloses (retry with the server's domains).
- SMTP smuggling runs on a hardened server with a recipient it really serves (Postfix).
- Plaintext AUTH on a server that never answers a wrong password (aiosmtpd) is never a pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smtpaudit.cli import main

pytestmark = pytest.mark.lab


def scan(tmp_path: Path, target: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    code = main(["scan", target, "--role", "mx", "-o", str(out), "--format", "json", "-q", "--fail-on", "critical", *extra])
    assert code in (0, 1, 3), code
    return json.loads(out.read_text())["endpoints"][0]


def findings(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["rule_id"]: f for f in entry["findings"]}


RELAY_RULES = ("--rule", "open-relay", "--rule", "open-relay-unconfirmed")


@pytest.mark.parametrize(("fixture", "banner"), [
    ("postfix_insecure", {"smtpd_banner": "relay.lab.test ESMTP $mail_name"}),
    ("exim_insecure", {"smtp_banner": "relay.lab.test ESMTP Exim $version_number"}),
])
def test_open_relay_confirmed_although_the_greeting_name_is_relayed(request, lab_reconfigure, tmp_path, fixture, banner) -> None:
    """The greeting names relay.lab.test, which is not a local domain: a random user there is
    relayed like any foreign address (the old single control was accepted, so the relay stayed
    'unconfirmed'). Its parent lab.test is local, the unknown user is refused: confirmed."""
    server = lab_reconfigure(request.getfixturevalue(fixture), **banner)
    entry = scan(tmp_path, server.targets["smtp"], *RELAY_RULES)
    got = findings(entry)
    facts = entry["facts"]
    controls = facts["smtp.relay.controls"]
    assert controls[0]["domain"] == "relay.lab.test" and controls[0]["accepted"] is True, controls
    assert facts["smtp.relay.control_accepted"] is False and facts["smtp.relay.control"]["domain"] == "lab.test"
    assert "open-relay-unconfirmed" not in got
    relay = got["open-relay"]
    assert relay["severity"] == "critical" and relay["grade_cap"] == "F" and relay["confidence"] == "firm"
    assert "@lab.test was refused" in relay["message"]
    assert entry["score"]["grade"] == "F"


def test_server_accepting_every_recipient_stays_tentative(aiosmtpd_insecure, tmp_path) -> None:
    entry = scan(tmp_path, aiosmtpd_insecure.targets["smtp"], *RELAY_RULES)
    got = findings(entry)
    assert "open-relay" not in got
    unconfirmed = got["open-relay-unconfirmed"]
    assert unconfirmed["confidence"] == "tentative" and unconfirmed["severity"] == "high"
    assert "accepts every recipient" in unconfirmed["message"]
    facts = entry["facts"]
    assert facts["smtp.relay.control_accepted"] is True
    # aiosmtpd's parser refuses a malformed address (553); that is recorded, not taken as a recipient check.
    assert facts["smtp.relay.malformed_rejected"] is True


def test_closed_relays_have_no_relay_finding(postfix_hardened, exim_secure, opensmtpd, aiosmtpd_hardened, tmp_path) -> None:
    for server in (postfix_hardened, exim_secure, opensmtpd, aiosmtpd_hardened):
        entry = scan(tmp_path, server.targets["smtp"], *RELAY_RULES)
        assert not set(findings(entry)) & {"open-relay", "open-relay-unconfirmed"}, (server.name, entry["findings"])
        assert set(entry["passed"]) >= {"open-relay", "open-relay-unconfirmed"}, (server.name, entry["not_evaluated"])


VRFY_RULES = ("--rule", "vrfy-discloses-users", "--rule", "expn-discloses-lists")


def test_vrfy_on_exim_retries_user_at_domain(exim_insecure, lab_reconfigure, tmp_path) -> None:
    """Exim's default: bare names are refused with 501 ("must contain a domain"). The insecure
    Exim still discloses users for user@domain, and must be reported."""
    server = lab_reconfigure(exim_insecure, recipient_unqualified_hosts=None)
    entry = scan(tmp_path, server.targets["smtp"], *VRFY_RULES)
    facts = entry["facts"]
    # Exim qualifies "postmaster" itself (250) but refuses the random bare name with 501: that
    # pair used to pass. Asked again as user@domain, it discloses.
    assert [a["code"] for a in facts["smtp.vrfy.attempts"][:2]] == [250, 501], facts["smtp.vrfy.attempts"]
    assert facts["smtp.vrfy.domain"] == "mail.lab.test"
    got = findings(entry)
    assert "VRFY postmaster@mail.lab.test -> 250" in got["vrfy-discloses-users"]["message"]
    assert "expn-discloses-lists" in got  # EXPN postmaster@mail.lab.test expands too


def test_vrfy_on_secure_exim_is_clean_after_the_retry(exim_secure, tmp_path) -> None:
    entry = scan(tmp_path, exim_secure.targets["smtp"], *VRFY_RULES)
    facts = entry["facts"]
    assert 501 in [a["code"] for a in facts["smtp.vrfy.attempts"]], facts["smtp.vrfy.attempts"]
    assert not findings(entry) and set(entry["passed"]) == {"vrfy-discloses-users", "expn-discloses-lists"}
    # The qualified answers were denials (252 / 550), not a disclosure.
    assert facts["smtp.vrfy.postmaster.code"] != 250


SMUGGLING = ("--intrusive", "--rule", "smtp-smuggling-exploitable")


def test_smuggling_on_hardened_postfix_with_a_recipient_it_serves(postfix_hardened, lab_reconfigure, tmp_path) -> None:
    """The default recipient comes from the certificate (it verifies with the lab CA and names
    mail.lab.test), checked as local with RCPT only. The hardened Postfix then really is tested:
    with smtpd_forbid_bare_newline = yes it is not exploitable; with Postfix 3.7's default (no)
    the same server takes <LF>.<LF> as end-of-data."""
    target = postfix_hardened.targets["smtp"]
    ca = ("--ca-file", str(postfix_hardened.ca_cert))
    entry = scan(tmp_path, target, *SMUGGLING, *ca)
    facts = entry["facts"]
    assert facts["smtp.smuggling.recipient"] == "postmaster@mail.lab.test", facts.get("smtp.smuggling.recipient_checks")
    assert "certificate, which verifies" in facts["smtp.smuggling.recipient_source"]
    assert facts["smtp.smuggling.tested"] is True
    assert entry["passed"] == ["smtp-smuggling-exploitable"], entry["not_evaluated"]

    lab_reconfigure(postfix_hardened, smtpd_forbid_bare_newline="no")
    entry = scan(tmp_path, target, *SMUGGLING, *ca)
    got = findings(entry)
    assert "lf.lf" in entry["facts"]["smtp.smuggling.accepted_producible"]
    assert "postmaster@mail.lab.test" in got["smtp-smuggling-exploitable"]["message"]


def test_smuggling_without_a_served_domain_is_not_evaluated(postfix_hardened, tmp_path) -> None:
    """Target 127.0.0.1, certificate not verified (no --ca-file): only the greeting names a domain,
    which is never enough. Nothing is sent; the rule says what it needs."""
    entry = scan(tmp_path, postfix_hardened.targets["smtp"], *SMUGGLING)
    assert entry["facts"]["smtp.smuggling.recipient"] is None
    [ne] = entry["not_evaluated"]
    assert ne["rule_id"] == "smtp-smuggling-exploitable" and "needs --smuggling-rcpt" in ne["reason"]
    assert "smtp-smuggling-exploitable" not in entry["passed"]


AUTH_RULES = ("--rule", "plaintext-auth-accepted", "--rule", "auth-before-starttls", "--command-timeout", "4")


def test_plaintext_auth_on_a_server_that_never_answers_a_wrong_password(aiosmtpd_insecure, tmp_path) -> None:
    """aiosmtpd asks for the credential with 334 before TLS (and would then never answer a wrong
    one): it processes a clear-text password. A finding (critical, grade cap F), never a pass. No
    credential is sent: the 334 is cancelled with "*", so nothing waits for the silence."""
    entry = scan(tmp_path, aiosmtpd_insecure.targets["smtp"], *AUTH_RULES)
    facts = entry["facts"]
    assert facts["smtp.auth.plaintext_challenged"] is True and facts["smtp.auth.plaintext_processed"] is True
    assert facts["smtp.auth.plaintext_probe_code"] == 334
    session = next(p for p in entry["probes"] if p["probe"] == "smtp.session")
    assert session["duration"] < 5, session  # not a command timeout spent on a wrong password
    got = findings(entry)
    assert got["plaintext-auth-accepted"]["severity"] == "critical" and got["plaintext-auth-accepted"]["grade_cap"] == "F"
    assert "auth-before-starttls" in got
    # And the server really does accept the right password in clear text (what the finding claims).
    import smtplib
    client = smtplib.SMTP(aiosmtpd_insecure.host, aiosmtpd_insecure.ports["smtp"], timeout=10)
    try:
        client.ehlo("check.example.net")
        assert client.login(aiosmtpd_insecure.credentials.user, aiosmtpd_insecure.credentials.password)[0] == 235
    finally:
        client.quit()


def test_plaintext_auth_refused_before_tls_passes(aiosmtpd_hardened, postfix_hardened, exim_secure, tmp_path) -> None:
    for server in (aiosmtpd_hardened, postfix_hardened, exim_secure):
        entry = scan(tmp_path, server.targets["smtp"], *AUTH_RULES)
        assert entry["facts"]["smtp.auth.plaintext_processed"] is False, (server.name, entry["facts"].get("smtp.auth.plaintext_probe"))
        assert set(entry["passed"]) == {"plaintext-auth-accepted", "auth-before-starttls"}, server.name
