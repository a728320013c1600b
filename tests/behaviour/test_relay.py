"""The relay probe against fake MTAs: variants, the no-DATA guarantee, 530 handling, catch-all control, STARTTLS."""

from __future__ import annotations

import pytest

from smtpaudit.probes.smtp.relay import RelayProbe, expand, ip_literal, variants
from tests.behaviour.helpers import async_test, run_probe
from tests.fakes.mta import FakeMta

PRIOR = {"smtp.greeting.hostname": "mx.example.test", "smtp.starttls.works": None}


def test_sixteen_variants_in_nmap_order() -> None:
    vs = variants()
    assert [v["n"] for v in vs] == list(range(1, 17))
    assert vs[0]["mail_from"] == ""
    assert expand(vs[11]["rcpt_to"], {"to": "t", "domain": "d.invalid", "ip": "[192.0.2.1]"}) == "@[192.0.2.1]:t@d.invalid"
    assert ip_literal("::1") == "[IPv6:::1]"
    assert expand("{to}@{srvname}", {"to": "t", "srvname": None}) is None


@async_test
async def test_open_relay_detected_and_data_never_sent() -> None:
    async with FakeMta(open_relay=True) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert result.status == "ok", result.error_message
    # The fake treats routing tricks (%, !, quotes, source routes) as foreign too, so all 16 relay.
    assert f["smtp.relay.accepted_count"] == 16
    assert f["smtp.relay.accepted_variants"] == list(range(1, 17))
    assert f["smtp.relay.control_accepted"] is False
    assert result.connections == 1  # no error replies: one connection is enough
    sent = [c.split(" ", 1)[0].upper() for c in mta.all_commands]
    assert "DATA" not in sent and mta.data_started == 0 and mta.messages == 0
    assert all(b"DATA" not in bytes(r).upper().split(b"\r\n") for r in mta.raw)
    # Attempts with the sender of the one before share its transaction: 4 senders among the 16
    # forms, plus the control's null sender. Each transaction with an accepted recipient is a queue
    # file to Postfix, held back 1 s each (in_flow_delay) on a server that delivers nothing.
    assert sent.count("MAIL") == 5 and sent.count("RCPT") >= 17
    shared = [a for a in f["smtp.relay.attempts"] if a.get("note", "").startswith("in the transaction")]
    assert len(shared) == 12 and all(a["mail_code"] == 250 for a in shared)


@async_test
async def test_closed_relay_passes_with_every_reply_recorded() -> None:
    async with FakeMta() as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert f["smtp.relay.accepted_count"] == 0 and f["smtp.relay.completed"] is True
    assert all(a["rcpt_code"] == 554 for a in f["smtp.relay.attempts"])
    assert "relaytest@relaytest.invalid" in [a["rcpt_to"] for a in f["smtp.relay.attempts"]]
    assert mta.data_started == 0
    # 16 refusals + the control's: at most 4 error replies per connection, below the soft error
    # limit of hardened Postfix (5; stock 10), so no reply (not even QUIT's) is ever tarpitted.
    assert result.connections == 5
    assert max(sum(1 for c in conn if c.startswith("RCPT")) for conn in mta.commands) <= 4


@async_test
async def test_tarpit_detected_from_a_delayed_reply_and_avoided() -> None:
    """A server that delays every error past the 3rd: one delayed reply, then 3 errors per connection."""
    async with FakeMta(error_sleep_after=3, error_sleep=0.7) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert result.status == "ok", result.error_message
    assert f["smtp.relay.completed"] is True and f["smtp.relay.accepted_count"] == 0
    assert [a["n"] for a in f["smtp.relay.attempts"]] == list(range(1, 17))
    assert all(a["rcpt_code"] == 554 for a in f["smtp.relay.attempts"])
    assert f["smtp.relay.control"]["code"] == 550
    per_conn = [sum(1 for c in conn if c.startswith("RCPT")) for conn in mta.commands]
    assert per_conn[0] == 4 and max(per_conn[1:]) <= 2, per_conn  # the 4th error of the first connection was late
    assert result.duration < 0.7 * 2, result.duration  # paid once, not once per attempt
    assert any("tarpits after 3 errors" in ln.text for ln in result.transcript)


@async_test
async def test_catch_all_control() -> None:
    async with FakeMta(open_relay=True, accept_all_recipients=True) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    assert result.facts["smtp.relay.control_accepted"] is True
    assert result.facts["smtp.relay.control"]["rcpt_to"].endswith("@mx.example.test")


@async_test
async def test_530_stops_like_nmap() -> None:
    async with FakeMta(require_auth=True) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert f["smtp.relay.auth_required"] is True and f["smtp.relay.completed"] is False
    assert len(f["smtp.relay.attempts"]) == 1 and mta.connections == 1


@async_test
async def test_relay_domain_option_and_missing_server_name() -> None:
    async with FakeMta() as mta:
        result = await run_probe(RelayProbe, mta.port, prior={}, options={"relay_domain": "elsewhere.example"})
    f = result.facts
    assert f["smtp.relay.domain"] == "elsewhere.example"
    skipped = [a["n"] for a in f["smtp.relay.attempts"] if a.get("skipped")]
    assert skipped == [3, 6, 11, 13, 16]
    assert f["smtp.relay.control"] is None and f["smtp.relay.control_accepted"] is None


@async_test
async def test_421_mid_test_is_an_error_not_a_verdict() -> None:
    async with FakeMta(error_limit=3) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    assert result.status == "error" and result.error_reason == "service_unavailable"
    # An unfinished test that saw no relay leaves the counts absent: "not evaluated", never a pass.
    assert "smtp.relay.accepted_count" not in result.facts


@async_test
async def test_skipped_without_connecting_when_the_session_found_no_greeting() -> None:
    async with FakeMta() as mta:
        result = await run_probe(RelayProbe, mta.port, prior={"endpoint.host": "127.0.0.1", "smtp.greeting.code": 554})
    assert result.status == "error" and result.error_reason == "endpoint_unusable" and "554" in result.error_message
    assert mta.connections == 0 and result.facts == {}


@async_test
async def test_relay_attempt_repeated_after_starttls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.fakes.certs import server_context

    async with FakeMta(tls_context=server_context(tmp_path)) as mta:
        result = await run_probe(RelayProbe, mta.port, prior={**PRIOR, "smtp.starttls.works": True})
    f = result.facts
    assert result.connections == 6  # 17 refusals at 4 per connection, then one over TLS
    assert f["smtp.relay.starttls_attempt"]["tls"] is True and f["smtp.relay.starttls_accepted"] is False
    assert mta.commands[5][:3] == ["EHLO smtpaudit.example.net", "STARTTLS", "EHLO smtpaudit.example.net"]
    assert mta.data_started == 0


@async_test
async def test_exim_like_server_that_hangs_up_after_syntax_errors() -> None:
    """Exim refuses address-literal senders (501) and drops the session after 3 syntax errors."""
    mta = FakeMta(open_relay=True, reject_literal_senders=True, error_limit=3,
                  error_421_code=b"501 Too many syntax or protocol errors\r\n")
    async with mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    f = result.facts
    assert result.status == "ok", result.error_message
    assert f["smtp.relay.accepted_variants"] == [1, 2, 3] and f["smtp.relay.completed"] is True
    # The literal sender is sent once; the 12 later variants reuse its refusal instead of adding errors.
    literal = [c for c in mta.all_commands if c.startswith("MAIL FROM:<smtpaudit@[")]
    assert len(literal) == 1
    assert [a.get("note") for a in f["smtp.relay.attempts"][4:5]] == ["this sender was refused earlier in the test; not sent again"]


@async_test
async def test_server_that_keeps_hanging_up_is_bounded() -> None:
    async with FakeMta(error_limit=1, error_421_code=b"554 go away\r\n") as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    assert result.status == "error" and result.error_reason == "connection_closed"
    assert mta.connections == 5


@async_test
async def test_relay_seen_before_a_421_is_kept() -> None:
    async with FakeMta(relay_if=lambda a: a.startswith("relaytest@"), error_limit=3) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=PRIOR)
    assert result.status == "error"
    assert result.facts["smtp.relay.accepted_count"] >= 1 and 1 in result.facts["smtp.relay.accepted_variants"]


@async_test
async def test_relay_confirmed_by_a_control_at_the_parent_domain() -> None:
    """The greeting names a host that is not a local domain (so a control there is relayed like any
    foreign address); the parent domain is local, and its unknown user is refused: confirmed."""
    prior = {"smtp.greeting.hostname": "relay.example.test", "smtp.starttls.works": None}
    async with FakeMta(open_relay=True, local_domains=("example.test",)) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=prior)
    f = result.facts
    assert [c["source"] for c in f["smtp.relay.controls"]] == ["greeting", "parent of the greeting name"]
    assert f["smtp.relay.controls"][0]["accepted"] is True
    assert f["smtp.relay.control_accepted"] is False
    assert f["smtp.relay.control_rcpt"].endswith("@example.test") and f["smtp.relay.control_reply"].startswith("550")
    assert f["smtp.relay.malformed_rejected"] is None  # not needed once a well-formed control was refused
    assert mta.data_started == 0


@async_test
async def test_accept_everything_server_stays_unconfirmed_even_when_it_refuses_malformed_addresses() -> None:
    prior = {"smtp.greeting.hostname": "mx.example.test", "smtp.starttls.works": None,
             "tls.cert.san": ["*.example.test", "127.0.0.1", "localhost"]}
    async with FakeMta(open_relay=True, accept_all_recipients=True) as mta:
        result = await run_probe(RelayProbe, mta.port, prior=prior)
    f = result.facts
    sources = [c["source"] for c in f["smtp.relay.controls"]]
    # mx.example.test (greeting and EHLO), example.test (parent; the certificate's wildcard base
    # is the same name), then the malformed address; IPs and single labels are never control domains.
    assert sources == ["greeting", "parent of the greeting name", "malformed"]
    assert f["smtp.relay.control_accepted"] is True and len(f["smtp.relay.controls_accepted"]) == 2
    # The fake relays even an address with an empty domain label (recorded, never a confirmation).
    assert f["smtp.relay.malformed_rejected"] is False
    assert f["smtp.relay.controls"][-1]["rcpt_to"].endswith("@relaytest..invalid")


def test_own_domains_sources_and_order() -> None:
    from smtpaudit.probes.base import ProbeContext
    from smtpaudit.probes.smtp.behaviour import own_domains
    from smtpaudit.targets import parse_target

    ep = parse_target("mx1.example.org:25")
    ep = type(ep)(**{**ep.__dict__, "domain": "example.net"})
    prior = {"smtp.greeting.hostname": "MX1.Example.ORG.", "smtp.ehlo.hostname": "[192.0.2.1]",
             "tls.cert.san": ["*.example.com", "192.0.2.1", "localhost", "mail.example.org"]}
    got = own_domains(prior, ep, ProbeContext(options={"local_domain": "corp.example"}))
    assert got == [("corp.example", "--local-domain"), ("example.net", "scanned mail domain"),
                   ("mx1.example.org", "greeting"), ("example.org", "parent of the greeting name"),
                   ("example.com", "certificate (wildcard)"), ("mail.example.org", "certificate")]
