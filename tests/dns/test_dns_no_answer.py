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
