"""End to end: `smtpaudit scan <lab domain> --resolver 127.0.0.1:PORT` audits the domain and its
MX endpoints; each broken lab zone yields its finding and the good one none."""

from __future__ import annotations

import json

import pytest

from smtpaudit.cli import main
from tests.dns.mx_server import StartTlsServer

# zone -> rule that must fire on the domain entry or one of its MX endpoints
EXPECTED = {
    "nomx.test": "dns-mx-implicit",
    "nullmx.test": "dns-null-mx",
    "nullmixed.test": "dns-mx-invalid",
    "mxnoaddr.test": "dns-mx-no-address",
    "spfmulti.test": "spf-multiple-records",
    "spfplusall.test": "spf-permissive-all",
    "spfsyntax.test": "spf-syntax-error",
    "spflookups.test": "spf-too-many-lookups",
    "spfvoid.test": "spf-void-lookups",
    "nospf.test": "spf-missing",
    "nodmarc.test": "dmarc-missing",
    "dmarcnone.test": "dmarc-policy-none",
    "dmarcbad.test": "dmarc-syntax-error",
    "dmarcpct.test": "dmarc-partial-pct",
    "dmarcnorua.test": "dmarc-no-rua",
    "nosts.test": "mta-sts-missing",
    "stsnopolicy.test": "mta-sts-policy-unavailable",
    "ststesting.test": "mta-sts-not-enforced",
    "stsmismatch.test": "mta-sts-mx-not-covered",
    "stsbadcert.test": "mta-sts-policy-unavailable",
    "stssyntax.test": "mta-sts-invalid",
    "notlsrpt.test": "tls-rpt-missing",
    "tlsrptbad.test": "tls-rpt-invalid",
    "danemismatch.test": "dane-tlsa-mismatch",
    "danepkix.test": "dane-pkix-usage",
    "daneunsigned.test": "dane-tlsa-not-dnssec",
    "daneunsignedmismatch.test": "dane-tlsa-mismatch-unsigned",
    "unsigned.test": "dnssec-domain-unsigned",
    "bogus.test": "dnssec-domain-bogus",
    "noptr.test": "dns-ptr-missing",
    "fcrdns.test": "dns-fcrdns-failed",
}


@pytest.fixture(scope="module")
def report(dns_lab, tmp_path_factory):
    mx = StartTlsServer(dns_lab.mx_cert_file, dns_lab.mx_key_file).start()
    out = tmp_path_factory.mktemp("e2e") / "report.json"
    try:
        code = main([
            "scan", "good.test", *EXPECTED, "--tag", "dns", "--tag", "dane",
            "--resolver", dns_lab.resolver, "--trust-anchors", str(dns_lab.trust_anchor_file),
            "--mta-sts-ca", str(dns_lab.pki.ca_file), "--mta-sts-port", str(dns_lab.https_port),
            # The MX certificate is from the lab CA too: MTA-STS enforce needs it to validate.
            "--ca-file", str(dns_lab.pki.ca_file),
            "--mx-port", str(mx.port), "--connect-timeout", "2", "--command-timeout", "3",
            "-o", str(out), "-q",
        ])
    finally:
        mx.stop()
    data = json.loads(out.read_text())
    data["_exit"] = code
    return data


def findings_by_domain(report):
    out: dict[str, set[str]] = {}
    for e in report["endpoints"]:
        d = e["endpoint"].get("domain")
        out.setdefault(d, set()).update(f["rule_id"] for f in e["findings"])
    return out


def test_good_domain_has_no_findings(report):
    found = findings_by_domain(report)
    assert found["good.test"] == set(), found["good.test"]
    good = [e for e in report["endpoints"] if e["endpoint"].get("domain") == "good.test"]
    assert [e["endpoint"]["id"] for e in good][0] == "domain:good.test" and len(good) == 2
    mx = good[1]
    assert mx["facts"]["dane.match.any"] is True and "dane-tlsa-mismatch" in mx["passed"]


@pytest.mark.parametrize("zone", sorted(EXPECTED))
def test_each_broken_zone_yields_its_finding(report, zone):
    assert EXPECTED[zone] in findings_by_domain(report)[zone]


def test_report_groups_endpoints_by_domain(report):
    port = report["endpoints"][1]["endpoint"]["port"]
    # One endpoint per MX address, connected through the address the lab resolver gave.
    assert report["domains"]["good.test"] == ["domain:good.test", f"mx.good.test[127.0.0.1]:{port}"]
    assert report["endpoints"][1]["endpoint"]["address"] == "127.0.0.1"
    assert report["endpoints"][1]["status"] == "complete"
    assert report["_exit"] in (1, 3)
