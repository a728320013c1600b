"""DNS probes against the real lab: BIND's named serving signed zones, DNSSEC validated from the
lab trust anchor, MTA-STS policies over HTTPS, DANE matched against a real STARTTLS handshake."""

from __future__ import annotations

import pytest

import asyncio

from smtpaudit.probes.base import ProbeContext, Timeouts
from smtpaudit.probes.dns.probes import DaneProbe, DnsDomainProbe, DnsHostProbe, MtaStsProbe
from tests.dns.conftest import run_probe
from smtpaudit.targets import Role, parse_target
from tests.dns.mx_server import StartTlsServer


def domain(lab, name, probe=DnsDomainProbe):
    r = run_probe(probe(), f"domain:{name}", lab.probe_options())
    assert r.status == "ok", r.error_message
    return r.facts


def test_good_domain(dns_lab):
    f = domain(dns_lab, "good.test")
    assert f["dns.mx.hosts"] == ["mx.good.test"]
    assert f["dns.dnssec.domain"] == "secure" and f["dns.dnssec.mx_rrset"] == "secure"
    assert (f["dns.spf.all"], f["dns.spf.lookups"], f["dns.dmarc.p"]) == ("-", 1, "reject")
    assert f["tlsrpt.rua"] == ["mailto:tlsrpt@good.test"]
    s = domain(dns_lab, "good.test", MtaStsProbe)
    assert s["mta_sts.policy.fetched"] and s["mta_sts.policy.mode"] == "enforce" and s["mta_sts.mx_uncovered"] == []


@pytest.mark.parametrize("zone, fact, value", [
    ("nomx.test", "dns.mx.implicit", True),
    ("nullmx.test", "dns.mx.null", True),
    ("nullmixed.test", "dns.mx.errors", ["null MX published together with other MX records (RFC 7505 section 3)"]),
    ("mxnoaddr.test", "dns.mx.hosts_without_address", ["mx.mxnoaddr.test"]),
    ("spfmulti.test", "dns.spf.record_count", 2),
    ("spfplusall.test", "dns.spf.all", "+"),
    ("spflookups.test", "dns.spf.lookups", 12),
    ("spfvoid.test", "dns.spf.void_lookups", 3),
    ("nospf.test", "dns.spf.record_count", 0),
    ("nodmarc.test", "dns.dmarc.lookup_status", "nxdomain"),
    ("dmarcnone.test", "dns.dmarc.p", "none"),
    ("dmarcpct.test", "dns.dmarc.pct", 20),
    ("notlsrpt.test", "tlsrpt.record_count", 0),
    ("unsigned.test", "dns.dnssec.domain", "insecure"),
    ("bogus.test", "dns.dnssec.domain", "bogus"),
])
def test_broken_domain_facts(dns_lab, zone, fact, value):
    assert domain(dns_lab, zone)[fact] == value


def test_syntax_errors_are_facts(dns_lab):
    assert len(domain(dns_lab, "spfsyntax.test")["dns.spf.syntax_errors"]) == 2
    assert domain(dns_lab, "dmarcbad.test")["dns.dmarc.syntax_errors"]
    assert domain(dns_lab, "tlsrptbad.test")["tlsrpt.syntax_errors"]


@pytest.mark.parametrize("zone, check", [
    ("nosts.test", lambda f: f["mta_sts.txt.record_count"] == 0 and f["mta_sts.policy.fetched"] is None),
    ("stsnopolicy.test", lambda f: f["mta_sts.policy.fetch_error"] == "http_status" and f["mta_sts.policy.http_status"] == 404),
    ("ststesting.test", lambda f: f["mta_sts.policy.mode"] == "testing"),
    ("stsmismatch.test", lambda f: f["mta_sts.mx_uncovered"] == ["mx.stsmismatch.test"]),
    ("stsbadcert.test", lambda f: f["mta_sts.policy.fetch_error"] == "tls_verify"),
    ("stssyntax.test", lambda f: any("max_age" in e for e in f["mta_sts.policy.errors"])),
])
def test_mta_sts_failures(dns_lab, zone, check):
    f = domain(dns_lab, zone, MtaStsProbe)
    assert check(f), f


def test_mta_sts_without_lab_ca_fails_verification(dns_lab):
    opts = {**dns_lab.probe_options(), "mta_sts_ca_file": None}
    r = run_probe(MtaStsProbe(), "domain:good.test", opts)
    assert r.facts["mta_sts.policy.fetch_error"] == "tls_verify"


@pytest.mark.parametrize("host, ptr_missing, fcrdns_failed, dnssec", [
    ("mx.good.test", [], [], "secure"),
    ("mx.noptr.test", ["127.0.0.2"], [], "secure"),
    ("mx.fcrdns.test", [], ["127.0.0.3"], "secure"),
    ("mx.unsigned.test", [], [], "insecure"),
])
def test_host_reverse_dns(dns_lab, host, ptr_missing, fcrdns_failed, dnssec):
    f = run_probe(DnsHostProbe(), host, dns_lab.probe_options()).facts
    assert (f["dns.host.ptr_missing"], f["dns.host.fcrdns_failed"], f["dns.host.dnssec"]) == (ptr_missing, fcrdns_failed, dnssec)


@pytest.fixture(scope="module")
def lab_mx(dns_lab):
    server = StartTlsServer(dns_lab.mx_cert_file, dns_lab.mx_key_file).start()
    yield server
    server.stop()


@pytest.mark.parametrize("host, matched, dnssec", [
    ("mx.good.test", True, "secure"),          # TLSA 3 1 1 of the served key: passes
    ("mx.danemismatch.test", False, "secure"),  # TLSA for another key: fails
    ("mx.daneunsigned.test", True, "insecure"),
])
def test_dane_against_served_chain(dns_lab, lab_mx, host, matched, dnssec):
    ep = parse_target(f"{host}:{lab_mx.port}", role=Role.MX)
    ctx = ProbeContext(options=dns_lab.probe_options(), timeouts=Timeouts(connect=3, command=3, tls=5, endpoint=30))
    r = asyncio.run(DaneProbe().run(ep, ctx, {}))
    f = r.facts
    assert f["dane.tlsa.name"] == f"_25._tcp.{host}"
    assert f["dane.chain.source"] == "handshake" and f["dane.chain.error"] is None
    assert f["dane.match.any"] is matched
    assert f["dane.tlsa.dnssec"] == dnssec


def test_dane_pkix_usage_flagged(dns_lab):
    f = run_probe(DaneProbe(), "mx.danepkix.test", {**dns_lab.probe_options(), "dane_fetch_chain": False}).facts
    assert f["dane.tlsa.pkix_usages"] == [1] and f["dane.match.any"] is None


def test_lab_starts_fast(dns_lab):
    # Build (keys, signatures) and start-up budget: the whole CI run must stay well under 20 min.
    assert dns_lab.build_seconds < 20 and dns_lab.start_seconds < 10
