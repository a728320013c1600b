"""SMTP smuggling and pipelining probes: lenient endings found, timed-out messages never completed."""

from __future__ import annotations

from smtpaudit.probes.smtp.pipelining import PipeliningProbe
from smtpaudit.probes.smtp.smuggling import SmugglingProbe, sequences
from tests.behaviour.helpers import async_test, run_probe
from tests.fakes.mta import FakeMta

PRIOR = {"smtp.greeting.hostname": "mx.example.test"}
FAST = {"smuggling_timeout": 0.3}


@async_test
async def test_strict_server_timed_out_messages_are_never_completed() -> None:
    async with FakeMta() as mta:
        result = await run_probe(SmugglingProbe, mta.port, prior=PRIOR, intrusive=True, options=FAST)
    f = result.facts
    assert f["smtp.smuggling.tested"] is True and f["smtp.smuggling.recipient"] == "postmaster@mx.example.test"
    assert [r["outcome"] for r in f["smtp.smuggling.results"]] == ["timeout"] * len(sequences())
    assert f["smtp.smuggling.accepted"] == [] and mta.messages == 0
    assert result.connections == len(sequences()) == mta.connections == mta.data_started
    endings = {seq["name"]: seq["bytes"].encode("latin-1") for seq in sequences()}
    seen = set()
    for raw in mta.raw:
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
