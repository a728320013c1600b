"""Issue 15 "DNS cross-checks" against real servers: the DNS lab (BIND + MTA-STS over HTTPS) with
the real lab Postfix as the MX of an MTA-STS-enforcing domain, and the DNS-lab MX whose
certificate does validate as the control."""

from __future__ import annotations

import json

import pytest

from smtpaudit.cli import main
from tests.dns.mx_server import StartTlsServer

pytestmark = pytest.mark.lab


def scan_domain(dns_lab, tmp_path, domain: str, mx_port: int, *extra: str) -> list[dict]:
    out = tmp_path / f"{domain}.json"
    code = main(["scan", domain, "--rule", "mta-sts-enforce-mx-cert-invalid", "--rule", "tls-cert-name-mismatch-mx",
                 "--resolver", dns_lab.resolver, "--trust-anchors", str(dns_lab.trust_anchor_file),
                 "--mta-sts-ca", str(dns_lab.pki.ca_file), "--mta-sts-port", str(dns_lab.https_port),
                 "--mx-port", str(mx_port), "--connect-timeout", "2", "--command-timeout", "5", "-o", str(out), "-q", *extra])
    assert code in (0, 1, 3), code
    return json.loads(out.read_text())["endpoints"]


def test_mta_sts_enforce_with_an_mx_certificate_that_does_not_validate(dns_lab, postfix_hardened, tmp_path) -> None:
    """good.test enforces MTA-STS for mx.good.test, and that MX is the lab Postfix, whose
    certificate (trusted here via --ca-file) names mail.lab.test: senders would refuse it."""
    domain, mx = scan_domain(dns_lab, tmp_path, "good.test", postfix_hardened.ports["smtp"],
                             "--ca-file", str(postfix_hardened.ca_cert))
    assert domain["endpoint"]["role"] == "domain" and mx["facts"]["tls.cert.trusted"] is True
    assert mx["facts"]["tls.cert.matches_host"] is False
    found = {f["rule_id"]: f for f in domain["findings"]}
    finding = found["mta-sts-enforce-mx-cert-invalid"]
    assert finding["severity"] == "high"
    assert "mx.good.test: names ['mail.lab.test', 'localhost', '127.0.0.1'] do not cover the MX name" in finding["message"]
    assert domain["facts"]["domain.mx.cert_checked"] == ["mx.good.test"]


def test_mta_sts_enforce_with_a_valid_mx_certificate_passes(dns_lab, tmp_path) -> None:
    server = StartTlsServer(dns_lab.mx_cert_file, dns_lab.mx_key_file).start()
    try:
        domain, _mx = scan_domain(dns_lab, tmp_path, "good.test", server.port, "--ca-file", str(dns_lab.pki.ca_file))
    finally:
        server.stop()
    assert "mta-sts-enforce-mx-cert-invalid" in domain["passed"], domain["not_evaluated"]
    assert domain["facts"]["domain.mx.cert_invalid"] == []


def test_mta_sts_enforce_not_evaluated_when_the_mx_cannot_be_checked(dns_lab, tmp_path) -> None:
    from tests.lab.procs import free_ports

    [closed] = free_ports(1)
    domain, _mx = scan_domain(dns_lab, tmp_path, "good.test", closed)
    assert "domain.mx.cert_invalid" not in domain["facts"]
    assert [n["rule_id"] for n in domain["not_evaluated"]] == ["mta-sts-enforce-mx-cert-invalid"]


def test_tlsa_mismatch_reported_although_the_zone_is_unsigned(dns_lab, postfix_hardened, tmp_path) -> None:
    """daneunsigned.test publishes TLSA (for another key) in an unsigned zone; its MX is the lab
    Postfix. DANE is not in effect, but the records are wrong: reported, with the DNSSEC status."""
    out = tmp_path / "dane.json"
    main(["scan", "daneunsigned.test", "--tag", "dane", "--resolver", dns_lab.resolver,
          "--trust-anchors", str(dns_lab.trust_anchor_file), "--mx-port", str(postfix_hardened.ports["smtp"]),
          "--connect-timeout", "2", "--command-timeout", "5", "-o", str(out), "-q"])
    _domain, mx = json.loads(out.read_text())["endpoints"]
    assert mx["facts"]["dane.tlsa.dnssec"] != "secure" and mx["facts"]["dane.match.any"] is False
    found = {f["rule_id"]: f for f in mx["findings"]}
    assert {"dane-tlsa-mismatch-unsigned", "dane-tlsa-not-dnssec"} <= set(found)
    assert "dane-tlsa-mismatch" not in found  # the DNSSEC-secure variant stays for signed zones
