"""Pure parsers and matchers of the DNS probes: SPF, DMARC, TLS-RPT, MTA-STS, TLSA matching."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smtpaudit.probes.dns import dane, dmarc, mtasts, spf, tlsrpt
from smtpaudit.probes.dns.resolver import ResolverSpecError, parse_resolver


def test_spf_parse_terms_and_all():
    p = spf.parse("v=spf1 ip4:192.0.2.0/24 include:_spf.example.net mx:mail.example.org/24 ~all")
    assert p.errors == []
    assert [t.name for t in p.terms] == ["ip4", "include", "mx", "all"]
    assert p.all_qualifier == "~"


@pytest.mark.parametrize("record, fragment", [
    ("v=spf1 foo:bar -all", "unknown mechanism"),
    ("v=spf1 ip4:300.1.2.3 -all", "not an IP address"),
    ("v=spf1 ip6:192.0.2.1 -all", "not an IPv6"),
    ("v=spf1 include: -all", "empty domain"),
    ("v=spf1 include -all", "needs a domain"),
    ("v=spf1 redirect=a.example redirect=b.example", "more than once"),
    ("v=spf1 all:x", "takes no argument"),
])
def test_spf_syntax_errors(record, fragment):
    assert any(fragment in e for e in spf.parse(record).errors)


def test_spf_record_selection():
    assert spf.is_spf("v=spf1 -all") and spf.is_spf("V=SPF1") and not spf.is_spf("v=spf10 -all")


def test_dmarc_parse_defaults_and_errors():
    d = dmarc.parse("v=DMARC1; p=quarantine; rua=mailto:a@example.org,mailto:b@example.org!10m")
    assert (d.p, d.sp, d.pct, d.errors) == ("quarantine", None, 100, [])
    assert d.policy_for(subdomain=True) == "quarantine"  # sp defaults to p (RFC 7489 6.3)
    assert d.rua == ["mailto:a@example.org", "mailto:b@example.org!10m"]
    bad = dmarc.parse("v=DMARC1; p=block; pct=150; rua=https://x")
    assert bad.p is None and len(bad.errors) == 3
    assert "required tag p is missing" in dmarc.parse("v=DMARC1; rua=mailto:a@b.example").errors


def test_tlsrpt_parse():
    assert tlsrpt.parse("v=TLSRPTv1; rua=mailto:r@example.org,https://r.example.org/x").errors == []
    assert tlsrpt.parse("v=TLSRPTv1; rua=ftp://x").errors
    assert tlsrpt.parse("v=TLSRPTv1").errors == ["required field rua is missing"]


def test_mta_sts_txt_and_policy():
    assert mtasts.parse_txt("v=STSv1; id=20240101T000000") == ("20240101T000000", [])
    assert mtasts.parse_txt("v=STSv1; id=bad-id!")[1]
    pol = mtasts.parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\n")
    assert (pol.version, pol.mode, pol.mx, pol.max_age, pol.errors) == ("STSv1", "enforce", ["mx1.example.org", "*.example.net"], 86400, [])
    bad = mtasts.parse_policy("version: STSv1\nmode: enforcing\nmx: a.example\n")
    assert any("mode" in e for e in bad.errors) and any("max_age" in e for e in bad.errors)
    assert any("exceeds" in e for e in mtasts.parse_policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999\n").errors)


@pytest.mark.parametrize("pattern, host, ok", [
    ("mx.example.org", "MX.example.org.", True),
    ("*.example.org", "mx.example.org", True),
    ("*.example.org", "a.b.example.org", False),  # one label only (RFC 8461 4.1)
    ("*.example.org", "example.org", False),
    ("mail.example.org", "mx.example.org", False),
])
def test_mta_sts_mx_patterns(pattern, host, ok):
    assert mtasts.mx_matches(pattern, host) is ok


def test_tlsa_matches_both_ways(lab_pki):
    leaf_pem, ca_pem, leaf, ca = lab_pki
    chain = [leaf_pem, ca_pem]
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    good = {"usage": 3, "selector": 1, "mtype": 1, "data": hashlib.sha256(spki).hexdigest()}
    assert dane.tlsa_matches(good, chain)
    assert not dane.tlsa_matches({**good, "data": "00" * 32}, chain)
    full = {"usage": 3, "selector": 0, "mtype": 2, "data": hashlib.sha512(leaf.public_bytes(Encoding.DER)).hexdigest()}
    assert dane.tlsa_matches(full, chain)
    ta = {"usage": 2, "selector": 0, "mtype": 0, "data": ca.public_bytes(Encoding.DER).hex()}
    assert dane.tlsa_matches(ta, chain)
    assert dane.tlsa_matches(ta, [leaf_pem])  # full TA (2 0 0) need not be on the wire (RFC 7671 5.2.2)
    ta_hash = {**ta, "mtype": 1, "data": hashlib.sha256(ca.public_bytes(Encoding.DER)).hexdigest()}
    assert dane.tlsa_matches(ta_hash, chain) and not dane.tlsa_matches(ta_hash, [leaf_pem])  # a digest must
    assert not dane.tlsa_matches({**good, "usage": 2}, chain)  # leaf hash is not a TA
    assert not dane.tlsa_matches({**good, "mtype": 7}, chain)
    assert not dane.tlsa_matches(good, [])
    assert not dane.tlsa_matches(good, ["not a pem"])


@pytest.mark.parametrize("spec, want", [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5300", ("::1", 5300)), ("::1", ("::1", 53)),
])
def test_resolver_spec(spec, want):
    assert parse_resolver(spec) == want


@pytest.mark.parametrize("spec", ["ns.example.org", "127.0.0.1:x", "127.0.0.1:70000", "[::1"])
def test_resolver_spec_errors(spec):
    with pytest.raises(ResolverSpecError):
        parse_resolver(spec)


# Issue 11's list, each checked on its own (the RFC 7208 suite covers the same ground by case).
@pytest.mark.parametrize("record", [
    "v=spf1 a:foo-bar -all", "v=spf1 a:example.com:8080 -all", "v=spf1 a:abc.123 -all",
    "v=spf1 redirect=-all", "v=spf1 a/33 -all", "v=spf1 a//129 -all", "v=spf1 a/24/64 -all",
    "v=spf1 include:ip5.example.com/24 -all", "v=spf1 exists:mail.example.com/24 -all",
    "v=spf1 ip4:1.2.3.4/032 -all", "v=spf1 a:%{a}.example.com -all", "v=spf1 exists:%(ir).example.com -all",
    "v=spf1 exists:foo%.example.com -all", "v=spf1 -all exp=%{z}.example.com",
    "v=spf1 a:mail.example...com -all", "v=spf1 include:foo..example.com -all",
    "v=spf1 a:" + "x" * 64 + ".example.com -all",
])
def test_spf_invalid_terms_are_syntax_errors(record):
    assert spf.parse(record).errors, record


@pytest.mark.parametrize("record", [
    "v=spf1 a:foo:bar/baz.example.com -all",  # any visible character but % is allowed (RFC 7208 7.1)
    "v=spf1 a/24//64 mx:mail.example.com/0 ip4:192.0.2.0/0 ip6:2001:db8::/32 -all",
    "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} include:%{d2}.example.com -all",
    "v=spf1 a:foo.example.xn--zckzah ~all",
    "v=spf1 -all exp=explain.example.com moo=%{c}-%{t}",
])
def test_spf_valid_terms(record):
    assert spf.parse(record).errors == [], record


def test_spf_redirect_ignored_when_all_present():
    import asyncio

    from smtpaudit.probes.dns.resolver import DnsClient
    from tests.dns.stub_dns import StubZone

    zone = StubZone({"example.com": [{"A": "192.0.2.1"}], "other.example.com": [{"TXT": "v=spf1 -all"}]})
    parsed = spf.parse("v=spf1 a a a a a a a a a a -all redirect=other.example.com")
    with zone.installed():
        ev = asyncio.run(spf.evaluate(DnsClient([("127.0.0.1", 53)]), "example.com", parsed))
    assert ev.lookups == 10 and ev.permerrors == []
    assert ("other.example.com.", "TXT") not in zone.questions
