"""A DNS question that got no answer (timeout, SERVFAIL) proves nothing: the record rules are not
evaluated, never passed.

The domain's MX answers; its TXT, _dmarc, _smtp._tls and _mta-sts questions time out (stub zone,
no sockets). The probes finish "ok" (one unanswered question is no probe failure), so every rule
over those records must see its facts *absent*: a ``null`` record count or policy is read by a
rule as false, which was a pass of spf-missing, dmarc-missing, tls-rpt-missing, mta-sts-missing
and the rules about the records' contents.
"""

from __future__ import annotations

from typing import Any

import pytest

from smtpaudit.catalog import load_catalog
from smtpaudit.engine.evaluate import judge_all
from smtpaudit.probes.dns.probes import DnsDomainProbe, MtaStsProbe
from tests.dns.conftest import run_probe
from tests.dns.judging import dns_rules
from tests.dns.stub_dns import TIMEOUT, StubZone

SILENT = {
    "example.org": [{"MX": [10, "mx.example.org"]}, TIMEOUT],  # MX answered, TXT (SPF) never
    "mx.example.org": [{"A": "192.0.2.25"}],
    "_dmarc.example.org": [TIMEOUT],
    "_smtp._tls.example.org": [TIMEOUT],
    "_mta-sts.example.org": [TIMEOUT],
}
RECORD_RULES = ("spf-missing", "spf-multiple-records", "spf-permissive-all", "spf-syntax-error", "spf-permerror",
                "spf-too-many-lookups", "spf-void-lookups",
                "dmarc-missing", "dmarc-multiple-records", "dmarc-no-rua", "dmarc-policy-none", "dmarc-partial-pct",
                "dmarc-syntax-error", "tls-rpt-missing", "tls-rpt-invalid",
                "mta-sts-missing", "mta-sts-invalid", "mta-sts-not-enforced", "mta-sts-mx-not-covered",
                "mta-sts-policy-unavailable")


def outcomes(zone: dict[str, list]) -> dict[str, str]:
    """Rule id -> outcome over the facts of dns.domain and dns.mta_sts, judged as a scan does."""
    with StubZone(zone).installed():
        domain = run_probe(DnsDomainProbe(), "domain:example.org", {"resolver": "127.0.0.1:53"})
        sts = run_probe(MtaStsProbe(), "domain:example.org", {"resolver": "127.0.0.1:53"}, prior=domain.facts)
    assert domain.status == "ok" and sts.status == "ok", (domain.error_message, sts.error_message)
    fact_probe = {name: spec.probe for name, spec in load_catalog().facts.items()}
    facts: dict[str, Any] = {"endpoint.role": "domain", "endpoint.host": "example.org", **domain.facts, **sts.facts}
    return {o.rule_id: str(o.status) for o in judge_all(dns_rules(), facts, fact_probe=fact_probe, probe_errors={})}


@pytest.mark.parametrize("rule_id", RECORD_RULES)
def test_unanswered_record_question_is_not_evaluated(rule_id: str) -> None:
    assert outcomes(SILENT)[rule_id] == "not_evaluated"


def test_answered_absence_still_judged() -> None:
    """The control: the same questions answered NXDOMAIN / NODATA are a real absence (findings)."""
    answered = {"example.org": [{"MX": [10, "mx.example.org"]}], "mx.example.org": [{"A": "192.0.2.25"}]}
    got = outcomes(answered)
    for rule_id in ("spf-missing", "dmarc-missing", "tls-rpt-missing", "mta-sts-missing"):
        assert got[rule_id] == "finding", rule_id
    assert got["spf-permissive-all"] == "passed" and got["dmarc-policy-none"] == "passed"


def host_outcomes(zone: dict[str, list], banner: str | None = None) -> dict[str, str]:
    """Rule id -> outcome over the facts of dns.host for the MX host mx.example.org."""
    from smtpaudit.probes.dns.probes import DnsHostProbe

    prior = {"smtp.greeting.hostname": banner} if banner else {}
    with StubZone(zone).installed():
        host = run_probe(DnsHostProbe(), "mx.example.org", {"resolver": "127.0.0.1:53"}, prior=prior)
    assert host.status == "ok", host.error_message
    fact_probe = {name: spec.probe for name, spec in load_catalog().facts.items()}
    facts: dict[str, Any] = {"endpoint.role": "mx", "endpoint.host": "mx.example.org", **host.facts}
    return {o.rule_id: str(o.status) for o in judge_all(dns_rules(), facts, fact_probe=fact_probe, probe_errors={})}


HOST_RULES = ("dns-ptr-missing", "dns-fcrdns-failed", "dns-banner-ptr-mismatch")
REVERSE = "25.2.0.192.in-addr.arpa"


@pytest.mark.parametrize("case, zone", [
    ("address question unanswered", {"mx.example.org": [TIMEOUT]}),
    ("PTR question unanswered", {"mx.example.org": [{"A": "192.0.2.25"}], REVERSE: [TIMEOUT]}),
    ("forward check of the PTR name unanswered",
     {"mx.example.org": [{"A": "192.0.2.25"}], REVERSE: [{"PTR": "host.example.net"}], "host.example.net": [TIMEOUT]}),
])
def test_unanswered_host_question_is_not_evaluated(case: str, zone: dict[str, list]) -> None:
    got = host_outcomes(zone, banner="mx.example.org")
    judged = {r: got[r] for r in HOST_RULES if got[r] != "not_evaluated"}
    # The forward check's PTR name is known: the banner comparison is a real answer there.
    if case.startswith("forward"):
        assert judged == {"dns-ptr-missing": "passed", "dns-banner-ptr-mismatch": "finding"}, case
    else:
        assert judged == {}, case


def test_answered_host_questions_still_judged() -> None:
    """The control: no PTR (NXDOMAIN) is dns-ptr-missing; a PTR whose name has another address
    is dns-fcrdns-failed."""
    assert host_outcomes({"mx.example.org": [{"A": "192.0.2.25"}]})["dns-ptr-missing"] == "finding"
    got = host_outcomes({"mx.example.org": [{"A": "192.0.2.25"}], REVERSE: [{"PTR": "host.example.net"}],
                         "host.example.net": [{"A": "192.0.2.99"}]}, banner="mx.example.org")
    assert (got["dns-ptr-missing"], got["dns-fcrdns-failed"], got["dns-banner-ptr-mismatch"]) == ("passed", "finding", "finding")


DANE_RULES = ("dane-pkix-usage", "dane-rollover-risk", "dane-tlsa-mismatch", "dane-tlsa-mismatch-unsigned", "dane-tlsa-not-dnssec")


def dane_outcomes(zone: dict[str, list]) -> dict[str, str]:
    from smtpaudit.probes.dns.probes import DaneProbe

    with StubZone(zone).installed():
        result = run_probe(DaneProbe(), "mx.example.org", {"resolver": "127.0.0.1:53", "dane_fetch_chain": False})
    assert result.status == "ok", result.error_message
    fact_probe = {name: spec.probe for name, spec in load_catalog().facts.items()}
    facts: dict[str, Any] = {"endpoint.role": "mx", "endpoint.host": "mx.example.org", **result.facts}
    return {o.rule_id: str(o.status) for o in judge_all(dns_rules(), facts, fact_probe=fact_probe, probe_errors={})}


def test_unanswered_tlsa_question_is_not_evaluated() -> None:
    got = dane_outcomes({"mx.example.org": [{"A": "192.0.2.25"}], "_25._tcp.mx.example.org": [TIMEOUT]})
    assert {r: got[r] for r in DANE_RULES} == dict.fromkeys(DANE_RULES, "not_evaluated")


def test_answered_absence_of_tlsa_still_judged() -> None:
    """The control: no TLSA record (NXDOMAIN) is an answer: the DANE rules pass."""
    got = dane_outcomes({"mx.example.org": [{"A": "192.0.2.25"}]})
    assert got["dane-tlsa-not-dnssec"] == "passed" and got["dane-pkix-usage"] == "passed"


def test_unanswered_mx_address_is_no_mx_without_address() -> None:
    """The MX host's A/AAAA questions time out: that host may well have addresses."""
    got = outcomes({"example.org": [{"MX": [10, "mx.example.org"]}], "mx.example.org": [TIMEOUT]})
    assert got["dns-mx-no-address"] == "not_evaluated"
    # The control: an MX host that does not exist (NXDOMAIN) has no address: a finding.
    assert outcomes({"example.org": [{"MX": [10, "gone.example.org"]}]})["dns-mx-no-address"] == "finding"


def test_undeterminable_dnssec_is_neither_secure_nor_insecure() -> None:
    """This stub zone cannot prove anything about DNSSEC (no keys, no SOA: every chain is
    'indeterminate'): the DNSSEC rules are not evaluated (before: dnssec-domain-unsigned and
    dnssec-domain-bogus passed, dnssec-mx-zone-not-secure fired)."""
    got = outcomes(SILENT)
    for rule_id in ("dnssec-domain-unsigned", "dnssec-domain-bogus", "dnssec-mx-zone-not-secure"):
        assert got[rule_id] == "not_evaluated", rule_id
