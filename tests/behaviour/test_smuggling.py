"""SMTP smuggling and pipelining probes: lenient endings found, timed-out messages never completed."""

from __future__ import annotations

from smtpaudit.probes.smtp.pipelining import PipeliningProbe
from smtpaudit.probes.smtp.smuggling import SmugglingProbe, sequences
from tests.behaviour.helpers import async_test, run_probe
from tests.fakes.mta import FakeMta

# The certificate verifies and names mx.example.test: evidence that the target serves that domain.
PRIOR = {"smtp.greeting.hostname": "mx.example.test", "tls.cert.trusted": True, "tls.cert.san": ["mx.example.test", "192.0.2.1"]}
FAST = {"smuggling_timeout": 0.3}


@async_test
async def test_strict_server_timed_out_messages_are_never_completed() -> None:
    async with FakeMta() as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior=PRIOR, intrusive=True, options=FAST)
    f = result.facts
    assert f["smtp.smuggling.tested"] is True and f["smtp.smuggling.recipient"] == "postmaster@mx.example.test"
    assert "certificate, which verifies; a random user there was refused" in f["smtp.smuggling.recipient_source"]
    assert [r["outcome"] for r in f["smtp.smuggling.results"]] == ["timeout"] * len(sequences())
    assert f["smtp.smuggling.accepted"] == [] and mta.messages == 0
    # One RCPT-only connection to pick the recipient, then one per sequence.
    assert result.connections == len(sequences()) + 1 == mta.connections == mta.data_started + 1
    assert "DATA" not in mta.commands[0]
    endings = {seq["name"]: seq["bytes"].encode("latin-1") for seq in sequences()}
    seen = set()
    for raw in mta.raw[1:]:
        data = bytes(raw)
        # The connection's last bytes are its test sequence: nothing after it, so no valid
        # end-of-data, no RSET, no QUIT ever followed a timed-out message.
        name = data.split(b"server took <", 1)[1].split(b">", 1)[0].decode()
        seen.add(name)
        assert data.endswith(endings[name]), data[-40:]
        assert b"\r\n.\r\n" not in data
        assert b"QUIT" not in data.split(b"DATA\r\n", 1)[1] and b"RSET" not in data
    assert seen == set(endings)


@async_test
async def test_lenient_server_accepts_bare_lf() -> None:
    async with FakeMta(eod_accepted=(b"\r\n.\r\n", b"\n.\n")) as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior=PRIOR, intrusive=True,
                                 options={**FAST, "smuggling_rcpt": "alice@example.test"})
    f = result.facts
    assert f["smtp.smuggling.recipient"] == "alice@example.test"
    assert f["smtp.smuggling.accepted"] == ["lf.lf", "crlf.lf"]
    assert f["smtp.smuggling.accepted_producible"] == ["lf.lf"]
    assert mta.messages == 2


@async_test
async def test_refused_recipient_stops_after_one_connection() -> None:
    async with FakeMta() as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior=PRIOR, intrusive=True,
                                 options={**FAST, "smuggling_rcpt": "nobody@example.test"})
    f = result.facts
    assert f["smtp.smuggling.tested"] is False and "refused" in f["smtp.smuggling.not_tested_reason"]
    assert mta.connections == 1 and mta.data_started == 0


@async_test
async def test_pipelining_lax_and_enforced() -> None:
    async with FakeMta() as mta:
        lax = await run_probe(PipeliningProbe, mta.port)
    assert lax.facts["smtp.pipelining.unauth_accepted"] is True and lax.facts["smtp.pipelining.advertised"] is True
    async with FakeMta(enforce_sync=True) as mta:
        strict = await run_probe(PipeliningProbe, mta.port)
    assert strict.facts["smtp.pipelining.unauth_accepted"] is False
    assert strict.facts["smtp.pipelining.replies"][0]["code"] == 554


@async_test
async def test_bare_lf_rejecting_server() -> None:
    async with FakeMta(reject_bare_lf=True) as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior=PRIOR, intrusive=True, options=FAST)
    outcomes = {r["name"]: (r["outcome"], r["code"]) for r in result.facts["smtp.smuggling.results"]}
    assert outcomes["lf.lf"] == ("rejected", 521) and outcomes["crlf.lf"] == ("rejected", 521)
    assert outcomes["cr.cr"] == ("timeout", None)
    assert result.facts["smtp.smuggling.accepted"] == [] and mta.messages == 0


@async_test
async def test_greeting_claim_alone_never_picks_the_recipient() -> None:
    """A relay greeting as someone else's domain: no certificate that verifies, no MX, an IP target.
    Nothing is sent (not even RCPT) and the rule cannot be evaluated without --smuggling-rcpt."""
    async with FakeMta(open_relay=True, hostname="gmail.example") as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior={"smtp.greeting.hostname": "gmail.example",
                                                                   "tls.cert.trusted": False, "tls.cert.san": ["gmail.example"]},
                                 intrusive=True, options=FAST)
    assert result.status == "skipped" and result.error_reason == "needs_option"
    assert "needs --smuggling-rcpt" in result.error_message
    assert "smtp.smuggling.accepted_producible" not in result.facts and result.facts["smtp.smuggling.recipient"] is None
    assert mta.connections == 0


@async_test
async def test_served_domain_that_the_server_relays_for_is_not_taken_as_local() -> None:
    """The certificate verifies for example.net, but the server accepts every address there and
    relays foreign ones too: it does not treat example.net as local, so no test message goes there."""
    async with FakeMta(open_relay=True) as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior={"tls.cert.trusted": True, "tls.cert.san": ["example.net"]},
                                 intrusive=True, options=FAST)
    assert result.status == "skipped" and result.error_reason == "needs_option"
    checks = result.facts["smtp.smuggling.recipient_checks"]
    assert [c["accepted"] for c in checks] == [True, True, True]  # postmaster@, random@example.net, foreign
    assert mta.data_started == 0 and mta.connections == 1


@async_test
async def test_refused_recipient_is_not_evaluated_never_a_pass() -> None:
    from smtpaudit.catalog import load_catalog
    from smtpaudit.engine.evaluate import judge
    from smtpaudit.engine.rules import load_rules
    from smtpaudit.paths import builtin_rules_dir

    async with FakeMta() as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior=PRIOR, intrusive=True,
                                 options={**FAST, "smuggling_rcpt": "nobody@example.test"})
    rules = load_rules([builtin_rules_dir()], {n: s.type for n, s in load_catalog().facts.items()})
    out = judge(rules["smtp-smuggling-exploitable"], result.facts, fact_probe={}, probe_errors={})
    assert out.status == "not_evaluated"
