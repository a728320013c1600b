"""TLS verdicts that rest on completed handshakes, and the certificate and group facts that
issue 15 found wrong, against Python ssl (OpenSSL) servers on loopback."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from smtpaudit.probes.tls.certificate import TlsCertificateProbe
from smtpaudit.probes.tls.protocols import TlsProtocolsProbe
from tests.tls.certgen import make_cert
from tests.tls.test_probes import check_catalog, run_probe, server_context


@pytest.fixture(scope="module")
def ec_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("ec"), key="ec")


def test_ecdsa_p256_server_all_curves_found(ec_cert: tuple[Path, Path]) -> None:
    # RFC 8422 5.1: the client's supported_groups also bound the ECDSA certificate's curve, so an
    # OpenSSL server with a P-256 key refuses every hello that lacks P-256; enumeration must keep
    # P-256 in the offer (last) to learn that X448, P-384 and P-521 work too.
    tls = server_context(*ec_cert, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", minimum=ssl.TLSVersion.TLSv1_2)
    tls.maximum_version = ssl.TLSVersion.TLSv1_2
    tls.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # Postfix's default (tls_preempt_cipherlist = no)
    res, _ = run_probe(TlsProtocolsProbe(), tls)
    assert res.status == "ok", res.error_message
    check_catalog(res)
    assert set(res.facts["tls.groups.tls12"]) == {"x25519", "secp256r1", "x448", "secp384r1", "secp521r1"}, res.facts["tls.groups.tls12"]


def test_ecdsa_p256_server_preference_says_what_it_could_not_enumerate(ec_cert: tuple[Path, Path]) -> None:
    # With server preference P-256 (needed for the key) always wins over the curves left: the
    # scan reports the two it saw and says why it stopped, instead of implying that was all.
    tls = server_context(*ec_cert, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", minimum=ssl.TLSVersion.TLSv1_2)
    tls.maximum_version = ssl.TLSVersion.TLSv1_2
    res, _ = run_probe(TlsProtocolsProbe(), tls)
    assert res.facts["tls.groups.tls12"][:2] == ["x25519", "secp256r1"]
    assert any("not enumerated" in e for e in res.facts["tls.scan.errors"]), res.facts["tls.scan.errors"]


# --------------------------------------------------------------------------- judging helpers

def tls_rules(policy: str | None = None) -> dict:
    from smtpaudit.catalog import load_catalog
    from smtpaudit.engine.policy import apply_policy, find_policy, load_policy
    from smtpaudit.engine.rules import load_rules

    known = {n: s.type for n, s in load_catalog().facts.items()}
    rules = load_rules([Path("rules")], known)
    if policy:
        rules = apply_policy(load_policy(find_policy(policy, [Path("rules")])), rules, known)
    return {rid: r for rid, r in rules.items() if r.family == "tls" or rid == "starttls-broken"}


def outcomes(facts: dict, *, role: str = "mx", mode: str = "starttls", policy: str | None = None) -> dict[str, object]:
    """rule id -> Outcome for the TLS rules over these facts (as the scanner judges them)."""
    from smtpaudit.catalog import load_catalog
    from smtpaudit.engine.evaluate import judge

    fact_probe = {n: s.probe for n, s in load_catalog().facts.items()}
    all_facts = {"endpoint.role": role, "endpoint.mode": mode, "smtp.starttls.works": True, **facts}
    return {rid: judge(r, all_facts, fact_probe=fact_probe, probe_errors={}) for rid, r in tls_rules(policy).items()}


def grade(facts: dict, **kw) -> tuple[int, str]:
    from smtpaudit.engine.scoring import ScoredFinding, score_endpoint

    rules = tls_rules(kw.get("policy"))
    found = [o for o in outcomes(facts, **kw).values() if o.status == "finding"]
    s = score_endpoint([ScoredFinding(o.rule_id, rules[o.rule_id].severity, rules[o.rule_id].confidence,
                                      rules[o.rule_id].grade_cap, rules[o.rule_id].title) for o in found])
    return s.score, s.grade


def probe_facts(tls: ssl.SSLContext, probe: object = None, **kw) -> dict:
    res, _ = run_probe(probe or TlsProtocolsProbe(), tls, **kw)
    assert res.status == "ok", res.error_message
    check_catalog(res)
    return res.facts


def anon_context(cert: tuple[Path, Path] | None, ciphers: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(ciphers)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 has no anonymous suites
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # the client's order decides
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


@pytest.fixture(scope="module")
def rsa(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("rsa"))


# --------------------------------------------------------------------------- certificate handshake

def test_certificate_fetched_with_authenticated_suites_on_anonymous_friendly_server(rsa: tuple[Path, Path]) -> None:
    # Client preference and anonymous suites accepted: a permissive client that offers AECDH
    # first gets no certificate. The certificate probe offers authenticated suites only.
    tls = anon_context(rsa, "AECDH-AES256-SHA:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")
    f = probe_facts(tls, TlsCertificateProbe())
    assert f["tls.cert.handshake_ok"] is True and f["tls.cert.chain_length"] == 1
    assert "AECDH" not in f["tls.cert.handshake_cipher"]
    out = outcomes(f)
    cert_rules = [rid for rid in out if rid.startswith("tls-cert-")]
    # Judged on the certificate seen: the self-signed test certificate is untrusted, the rest passes.
    assert out["tls-cert-untrusted-mx"].status == "finding"
    assert all(out[rid].status in ("passed", "finding", "not_applicable") for rid in cert_rules), {r: out[r].status for r in cert_rules}
    # ... and the protocol scan still sees (and confirms) the anonymous suites.
    p = probe_facts(tls)
    assert "TLSv1.2 TLS_ECDH_anon_WITH_AES_256_CBC_SHA" in p["tls.suites.anonymous"]
    assert {i["confirmed"] for i in p["tls.suites.accepted"]} == {"handshake"}


def test_no_certificate_seen_means_certificate_rules_not_evaluated() -> None:
    # Anonymous suites only, no certificate at all: nothing to judge, never "passed".
    tls = anon_context(None, "aNULL:@SECLEVEL=0")
    res, _ = run_probe(TlsCertificateProbe(), tls)
    check_catalog(res)
    f = res.facts
    assert res.status == "ok", res.error_message  # the server answered: an observation, not a probe failure
    assert f["tls.cert.handshake_ok"] is False and f["tls.cert.chain_length"] == 0
    assert "tls.cert.expired" not in f and "tls.cert.trusted" not in f
    out = outcomes(f)
    for rid in ("tls-cert-expired", "tls-cert-untrusted-mx", "tls-cert-weak-key", "tls-cert-name-mismatch-mx", "tls-cert-weak-signature"):
        assert out[rid].status == "not_evaluated", (rid, out[rid].status)
    p = probe_facts(tls)
    assert p["tls.suites.anonymous_only"] is True


def test_sha1_self_signed_is_self_signed(tmp_path: Path) -> None:
    from tests.tls.certgen import make_weak_cert

    f = probe_facts(server_context(*make_weak_cert(tmp_path), ciphers="ALL:@SECLEVEL=0"), TlsCertificateProbe())
    assert f["tls.cert.signature_hash"] == "sha1" and f["tls.cert.self_signed"] is True


def test_ip_target_checks_the_names_the_server_gives(tmp_path: Path) -> None:
    cert = make_cert(tmp_path, name="mail.example.test", sans=("mail.example.test",))  # no IP SAN
    tls = server_context(*cert)
    ok = probe_facts(tls, TlsCertificateProbe(), prior={"smtp.starttls.offered": True, "smtp.greeting.hostname": "mail.example.test"})
    assert ok["tls.cert.matches_host"] is False and ok["tls.cert.matches_any"] is True
    assert ok["tls.cert.names_tried"] == ["127.0.0.1", "mail.example.test"] and ok["tls.cert.matched_name"] == "mail.example.test"
    assert outcomes(ok)["tls-cert-name-mismatch-mx"].status == "passed"
    bad = probe_facts(tls, TlsCertificateProbe(), prior={"smtp.starttls.offered": True, "smtp.greeting.hostname": "other.example.net",
                                                          "smtp.ehlo.hostname": "relay.example.net"})
    out = outcomes(bad, role="submission")["tls-cert-name-mismatch-submission"]
    assert out.status == "finding"
    assert "127.0.0.1" in out.message and "other.example.net" in out.message and "relay.example.net" in out.message


# --------------------------------------------------------------------------- protocols and grades

def test_best_tls11_grades_below_tls10_to_12(rsa: tuple[Path, Path]) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        only11 = server_context(*rsa, ciphers="ALL:@SECLEVEL=0", minimum=ssl.TLSVersion.TLSv1_1)
        only11.maximum_version = ssl.TLSVersion.TLSv1_1
        span = server_context(*rsa, ciphers="ALL:@SECLEVEL=0", minimum=ssl.TLSVersion.TLSv1)
        span.maximum_version = ssl.TLSVersion.TLSv1_2
    f11, f12 = probe_facts(only11), probe_facts(span)
    assert f11["tls.protocols.accepted"] == ["TLSv1.1"]
    assert f12["tls.protocols.accepted"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    assert outcomes(f11)["tls-12-not-supported"].status == "finding"
    assert outcomes(f12)["tls-12-not-supported"].status == "passed"
    legacy = outcomes(f12)["tls-legacy-protocols"]
    assert legacy.status == "finding" and "TLSv1.2" not in legacy.message and "TLSv1.0" in legacy.message
    (s11, g11), (s12, g12) = grade(f11), grade(f12)
    order = ["A+", "A", "B", "C", "D", "E", "F"]
    assert order.index(g11) > order.index(g12) and s11 < s12, (g11, s11, g12, s12)


def test_anonymous_and_cbc_on_mx_by_role_and_policy(rsa: tuple[Path, Path]) -> None:
    tls = anon_context(rsa, "AECDH-AES256-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
    f = probe_facts(tls)
    assert f["tls.suites.tls12_authenticated_aead"] is False
    mx = outcomes(f, role="mx")
    assert mx["tls-anonymous-suites-mx"].status == "finding" and mx["tls12-cbc-only-mx"].status == "finding"
    assert mx["tls-anonymous-suites"].status == "not_applicable" and mx["tls12-cbc-only"].status == "not_applicable"
    sub = outcomes(f, role="submission")
    assert sub["tls-anonymous-suites"].status == "finding" and sub["tls12-cbc-only"].status == "finding"
    assert sub["tls-anonymous-suites-mx"].status == "not_applicable"
    rules = tls_rules()
    assert rules["tls-anonymous-suites-mx"].severity == "low" and rules["tls-anonymous-suites"].severity == "high"
    assert tls_rules("mta-opportunistic")["tls-anonymous-suites-mx"].severity == "info"
    assert tls_rules("mta-opportunistic")["tls12-cbc-only-mx"].severity == "info"
    assert tls_rules("mozilla-intermediate")["tls-anonymous-suites-mx"].severity == "medium"
    assert tls_rules("mozilla-modern")["tls12-cbc-only-mx"].score == 5.0


# --------------------------------------------------------------------------- selected is not usable

def test_server_that_selects_but_never_completes_has_no_usable_tls() -> None:
    # The fake answers every ClientHello with a well-formed first flight and never finishes,
    # like OpenSMTPD 6.8 on OpenSSL 3: a ServerHello-only scanner would call TLS 1.2 working.
    import asyncio

    from smtpaudit.probes.tls.protocols import facts_from_scan
    from smtpaudit.probes.tls.registry import load_registry
    from tests.tls.test_scanner_fake import with_server
    from tests.tls.fakes import FakeTls

    async def body(s, served):
        res = await s.scan_protocols()
        return res, await s.confirm(res)

    res, confirmations = asyncio.run(with_server(FakeTls(versions={0x0303}, suites=[0xC02F, 0x002F]), body))
    assert res["TLSv1.2"].accepted is True  # selected ...
    assert {c.outcome for c in confirmations} == {"failed"}  # ... but no handshake completes
    f = facts_from_scan(load_registry(), res, tls13_groups=[], tls12_curves=[], compression=None, fallback=None,
                        errors=[], confirmations=confirmations)
    assert f["tls.protocols.selected"] == ["TLSv1.2"] and f["tls.protocols.accepted"] == []
    assert f["tls.protocols.handshake_failed"] == ["TLSv1.2"] and f["tls.available"] is False
    assert f["tls.suites.accepted"] == [] and f["tls.handshake.failed"] is True
    assert {x["kx"] for x in f["tls.handshake.failures"]} == {"ECDHE", "RSA"}
    f_implicit = {**f, "smtp.starttls.works": None}
    assert outcomes(f_implicit, mode="implicit")["tls-unusable"].status == "finding"
    # STARTTLS endpoint whose upgrade already failed: starttls-broken carries the one finding.
    broken = outcomes({**f, "smtp.starttls.offered": True, "smtp.starttls.works": False, "smtp.starttls.error": "x"})
    assert broken["starttls-broken"].status == "finding"
    assert broken["tls-unusable"].status == "passed" and broken["tls-handshake-failures"].status == "passed"


def test_confirmation_states() -> None:
    from smtpaudit.probes.tls.protocols import judge_confirmations
    from smtpaudit.probes.tls.registry import load_registry
    from smtpaudit.probes.tls.scanner import Confirmation, ProtocolResult

    reg = load_registry()
    results = {
        "SSLv3": ProtocolResult("SSLv3", True, suites=[0x002F]),  # RSA/RSA, same class completes at 1.0
        "TLSv1.0": ProtocolResult("TLSv1.0", True, suites=[0x002F, 0xC013, 0x0005]),
        "TLSv1.2": ProtocolResult("TLSv1.2", True, suites=[0xC02F]),
        "TLSv1.3": ProtocolResult("TLSv1.3", True, suites=[0x1301]),
    }
    conf = [
        Confirmation("SSLv3", "RSA", "RSA", [0x002F], "local"),
        Confirmation("TLSv1.0", "RSA", "RSA", [0x002F, 0x0005], "completed"),
        Confirmation("TLSv1.0", "ECDHE", "RSA", [0xC013], "failed", "alert"),
        Confirmation("TLSv1.2", "ECDHE", "RSA", [0xC02F], "timeout"),
        Confirmation("TLSv1.3", "TLS1.3", "certificate", [0x1301], "failed", "alert"),
    ]
    suites, protocols = judge_confirmations(reg, results, conf)
    assert protocols == {"SSLv3": "inferred", "TLSv1.0": "handshake", "TLSv1.2": "unconfirmed", "TLSv1.3": "failed"}
    assert suites[("TLSv1.0", 0x0005)] == "handshake"  # RC4-SHA: its class completed with AES
    assert suites[("TLSv1.0", 0xC013)] == "failed"
    f = __import__("smtpaudit.probes.tls.protocols", fromlist=["facts_from_scan"]).facts_from_scan(
        reg, results, tls13_groups=[], tls12_curves=[], compression=None, fallback=None, errors=[], confirmations=conf)
    # A timeout decides nothing: TLS 1.2 is neither usable nor failed but undetermined (probe error).
    assert f["tls.protocols.accepted"] == ["SSLv3", "TLSv1.0"] and "TLSv1.2" in f["tls.protocols.undetermined"]
    assert f["tls.protocols.handshake_failed"] == ["TLSv1.3"]


def test_silence_is_not_a_refusal() -> None:
    # A server that never answers some hellos: those versions stay undecided, the probe ends in
    # error, and "SSLv3 not accepted" can then not pass (facts of an unfinished probe prove no pass).
    import asyncio

    from smtpaudit.catalog import load_catalog
    from smtpaudit.engine.judge import judge_entry
    from smtpaudit.probes.tls.protocols import facts_from_scan
    from smtpaudit.probes.tls.registry import load_registry
    from smtpaudit.probes.tls.scanner import ScanConfig, TlsScanner
    from tests.tls import fakes
    from tests.tls.fakes import FakeTls

    model = FakeTls(versions={0x0303}, suites=[0xC02F])

    async def picky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(5)
        if head[:1] == b"\x16" and head[1:3] == b"\x03\x00":  # SSLv3 record: say nothing
            await asyncio.sleep(3)
            writer.close()
            return
        feed = asyncio.StreamReader()
        feed.feed_data(head)

        async def pump() -> None:
            while data := await reader.read(4096):
                feed.feed_data(data)
            feed.feed_eof()

        task = asyncio.create_task(pump())
        try:
            await model.handler(feed, writer)
        finally:
            task.cancel()

    async def main():
        served = await fakes.serve(picky)
        try:
            s = TlsScanner(served.connect, ScanConfig(timeout=0.5, connect_retries=0, server_name="mx.example.net"))
            res = await s.scan_protocols(("SSLv3", "TLSv1.2"))
            return res, await s.confirm(res)
        finally:
            await served.close()

    res, conf = asyncio.run(main())
    assert res["SSLv3"].accepted is None and res["TLSv1.2"].accepted is True
    f = facts_from_scan(load_registry(), res, tls13_groups=[], tls12_curves=[], compression=None, fallback=None,
                        errors=[], confirmations=conf)
    assert "SSLv3" in f["tls.protocols.undetermined"] and "SSLv3" not in f["tls.protocols.rejected"]
    entry = {
        "endpoint": {"id": "127.0.0.1:25", "host": "127.0.0.1", "port": 25, "mode": "starttls", "role": "mx"},
        "facts": {"endpoint.role": "mx", "endpoint.mode": "starttls", "smtp.greeting.code": 220, **f},
        "probes": [{"probe": "smtp.session", "status": "ok"},
                   {"probe": "tls.protocols", "status": "error", "error_reason": "read_timeout", "error_message": "could not test SSLv3"}],
    }
    judge_entry(entry, tls_rules(), {n: s.probe for n, s in load_catalog().facts.items()})
    assert "tls-sslv3-accepted" in {x["rule_id"] for x in entry["not_evaluated"]}
    assert "tls-sslv3-accepted" not in entry["passed"]


def test_policy_severity_table_is_validated(tmp_path: Path) -> None:
    from smtpaudit.catalog import load_catalog
    from smtpaudit.engine.policy import apply_policy, load_policy
    from smtpaudit.engine.rules import RuleSetError, load_rules

    known = {n: s.type for n, s in load_catalog().facts.items()}
    rules = load_rules([Path("rules")], known)
    pol = tmp_path / "p.toml"
    pol.write_text('id = "p"\nversion = "1"\ntitle = "P"\n[severity]\n"tls-anonymous-suites-mx" = "severe"\n')
    with pytest.raises(RuleSetError, match="severity"):
        load_policy(pol)
    pol.write_text('id = "p"\nversion = "1"\ntitle = "P"\n[severity]\n"no-such-rule" = "low"\n')
    with pytest.raises(RuleSetError, match="no-such-rule"):
        apply_policy(load_policy(pol), rules, known)
    pol.write_text('id = "p"\nversion = "1"\ntitle = "P"\n[severity]\n"tls12-cbc-only-mx" = "high"\n')
    raised = apply_policy(load_policy(pol), rules, known)["tls12-cbc-only-mx"]
    assert (raised.severity, raised.score) == ("high", 7.5)
    assert load_policy(pol).to_json()["severity"] == {"tls12-cbc-only-mx": "high"}


# --------------------------------------------------------------------------- hostile handshakes

@pytest.mark.parametrize("behaviour, outcome, words", [
    ("stall", "timeout", "timed out"),        # a ServerHello, then nothing: no decision, never "completed"
    ("drip", "timeout", "timed out"),         # one byte at a time: the deadline holds
    ("garbage", "failed", "TLS handshake failed"),
    ("flood", "failed", "TLS handshake failed"),  # endless records: refused at once, no hang
    ("close", "failed", "closed the connection"),
])
def test_full_handshake_against_hostile_servers(behaviour: str, outcome: str, words: str) -> None:
    import asyncio

    from smtpaudit.probes.tls import handshake
    from tests.tls import fakes

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        if behaviour == "stall":
            writer.write(fakes.server_hello(0x0303, 0xC02F))
            await writer.drain()
            await asyncio.sleep(5)
        elif behaviour == "drip":
            for b in fakes.server_hello(0x0303, 0xC02F):
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(0.05)
        elif behaviour == "garbage":
            writer.write(b"220 this is not TLS\r\n" * 10)
            await writer.drain()
            await asyncio.sleep(1)
        elif behaviour == "flood":
            record = b"\x17\x03\x03\x40\x00" + b"\x00" * 0x4000
            for _ in range(80):
                writer.write(record)
                await writer.drain()
        # close: return at once

    async def main() -> handshake.HandshakeResult:
        served = await fakes.serve(server)
        try:
            reader, writer = await served.connect()
            try:
                return await handshake.run_handshake(reader, writer, server_name="mx.example.net", timeout=1.0, max_bytes=200_000)
            finally:
                writer.close()
        finally:
            await served.close()

    res = asyncio.run(main())
    assert res.outcome == outcome and words in res.detail, (res.outcome, res.detail)
    assert not res.completed
