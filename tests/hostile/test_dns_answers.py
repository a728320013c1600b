"""Hostile and failing DNS, answered in-process by a fake server built on dnspython: SERVFAIL,
REFUSED, silence, garbage and huge answers must become facts, never crashes."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from smtpaudit.probes.dns.probes import DaneProbe, DnsDomainProbe, DnsHostProbe, MtaStsProbe
from tests.dns.conftest import run_probe


class FakeDns:
    """UDP only (answers fit); ``behaviour(query) -> bytes | None`` (None: stay silent)."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop_flag.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            out = self.behaviour(dns.message.from_wire(data))
            if out is not None:
                self.sock.sendto(out, peer)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(2)
        self.sock.close()


def rcode(code):
    def answer(q):
        r = dns.message.make_response(q)
        r.set_rcode(code)
        return r.to_wire()
    return answer


def huge_txt(q):
    r = dns.message.make_response(q)
    name = q.question[0].name
    if q.question[0].rdtype == dns.rdatatype.TXT:
        # 30 SPF records, each with a long, invalid body, plus binary junk.
        rrs = dns.rrset.from_text_list(name, 60, "IN", "TXT",
                                       ['"v=spf1 ' + "x" * 200 + ' \\255\\000 +all"'] * 1 +
                                       [f'"v=spf1 include:{i}.loop.example -all"' for i in range(29)])
        r.answer.append(rrs)
    elif q.question[0].rdtype == dns.rdatatype.MX:
        r.answer.append(dns.rrset.from_text_list(name, 60, "IN", "MX", [f"{i} mx{i}.example." for i in range(80)] + ["0 ."]))
    return r.to_wire(max_size=65000)


def garbage(q):
    return b"\x00\x01garbage that is not DNS"


@pytest.fixture
def fake():
    servers = []

    def make(behaviour):
        s = FakeDns(behaviour)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


@pytest.mark.parametrize("behaviour, status", [
    (rcode(dns.rcode.SERVFAIL), "servfail"),
    (rcode(dns.rcode.REFUSED), "refused"),
    (rcode(dns.rcode.NXDOMAIN), "nxdomain"),
    (lambda q: None, "timeout"),
    (garbage, "error"),  # an unparsable datagram is an error fact
])
def test_dns_failures_are_facts(fake, behaviour, status):
    srv = fake(behaviour)
    opts = {"resolver": f"127.0.0.1:{srv.port}", "dns_timeout": 0.3}
    r = run_probe(DnsDomainProbe(), "domain:example.org", opts)
    assert r.status == "ok", r.error_message
    assert r.facts["dns.mx.lookup_status"] == status
    assert "dns.dnssec.domain" not in r.facts  # indeterminate: not evaluated, never passed
    if status != "nxdomain":
        assert "dns.spf.record_count" not in r.facts  # no answer: not evaluated, never a pass
    m = run_probe(MtaStsProbe(), "domain:example.org", opts)
    assert m.status == "ok" and m.facts.get("mta_sts.policy.fetched") is None
    h = run_probe(DnsHostProbe(), "mx.example.org", opts)
    assert h.status == "ok" and h.facts["dns.host.addresses"] == []
    d = run_probe(DaneProbe(), "mx.example.org", opts)
    # NXDOMAIN is an answer (no TLSA); anything else leaves it unknown (absent).
    assert d.status == "ok" and d.facts.get("dane.tlsa.present") is (False if status == "nxdomain" else None)


def test_huge_hostile_answers_are_capped(fake):
    srv = fake(huge_txt)
    opts = {"resolver": f"127.0.0.1:{srv.port}", "dns_timeout": 0.5}
    r = run_probe(DnsDomainProbe(), "domain:example.org", opts)
    assert r.status == "ok", r.error_message
    f = r.facts
    assert f["dns.mx.null"] is True and f["dns.mx.errors"]  # null MX mixed with 80 hosts
    assert len(f["dns.mx.hosts"]) <= 50
    assert f["dns.spf.record_count"] == 30 and f["dns.spf.lookups"] is None
    assert all(len(t) <= 2000 for t in f["dns.spf.records"])


def test_unsigned_answers_without_anchor_are_indeterminate(fake):
    def answer(q):
        r = dns.message.make_response(q)
        if q.question[0].rdtype == dns.rdatatype.MX:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "MX", "10 mx.example.org."))
        return r.to_wire()
    srv = fake(answer)
    r = run_probe(DnsDomainProbe(), "domain:example.org", {"resolver": f"127.0.0.1:{srv.port}", "dns_timeout": 0.3})
    # The root has no signed DNSKEY here: the chain cannot be built, which is not "secure".
    assert r.facts.get("dns.dnssec.domain") in (None, "bogus")  # None: indeterminate, left absent
    assert r.facts["dns.mx.hosts"] == ["mx.example.org"]


def test_bad_resolver_option_is_a_probe_error():
    r = run_probe(DnsDomainProbe(), "domain:example.org", {"resolver": "not-an-ip"})
    assert r.status == "error" and r.error_reason == "config"


def test_mx_names_that_are_not_host_names_are_mx_errors(monkeypatch):
    from tests.dns.stub_dns import StubZone

    zone = StubZone({"example.org": [{"MX": [10, "mx_1.example.org"]}, {"MX": [20, "mx.example.org"]}],
                     "mx.example.org": [{"A": "192.0.2.25"}]})
    with zone.installed():
        r = run_probe(DnsDomainProbe(), "domain:example.org", {"resolver": "127.0.0.1:53"})
    assert r.status == "ok"
    assert any("mx_1.example.org is not a valid host name" in e for e in r.facts["dns.mx.errors"])
    assert r.facts["dns.mx.hosts"] == ["mx_1.example.org", "mx.example.org"]


def test_bad_names_in_spf_never_fail_the_domain_probe():
    from tests.dns.stub_dns import StubZone

    zone = StubZone({"example.org": [{"TXT": "v=spf1 a:mail.example...com include:foo..example.com a:" + "x" * 64
                                      + ".example.com -all"}],
                     "_dmarc.example.org": [{"TXT": "v=DMARC1; p=reject"}]})
    with zone.installed():
        r = run_probe(DnsDomainProbe(), "domain:example.org", {"resolver": "127.0.0.1:53"})
    assert r.status == "ok", r.error_message
    assert len(r.facts["dns.spf.syntax_errors"]) == 3
    assert r.facts["dns.dmarc.p"] == "reject"  # the rest of the domain audit is intact


def test_unanswered_implicit_mx_check_is_no_missing_mx(fake):
    """No MX (NODATA), and the A/AAAA questions of the implicit-MX check (RFC 5321 5.1) are never
    answered: whether the domain receives mail at its own address is unknown. dns-mx-missing and
    dns-mx-implicit are not evaluated (before: hosts [] and implicit false, 'no MX' was a finding)."""
    from tests.dns.judging import dns_rules
    from smtpaudit.catalog import load_catalog
    from smtpaudit.engine.evaluate import judge_all

    def answer(q):
        if q.question[0].rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            return None  # silence
        return dns.message.make_response(q).to_wire()  # NOERROR, empty: NODATA for MX, TXT, ...

    srv = fake(answer)
    r = run_probe(DnsDomainProbe(), "domain:example.org", {"resolver": f"127.0.0.1:{srv.port}", "dns_timeout": 0.3})
    assert r.status == "ok" and r.facts["dns.mx.lookup_status"] == "nodata"
    assert "dns.mx.hosts" not in r.facts and "dns.mx.implicit" not in r.facts
    fact_probe = {name: spec.probe for name, spec in load_catalog().facts.items()}
    got = {o.rule_id: str(o.status) for o in judge_all(dns_rules(), {"endpoint.role": "domain", **r.facts},
                                                       fact_probe=fact_probe, probe_errors={})}
    assert (got["dns-mx-missing"], got["dns-mx-implicit"]) == ("not_evaluated", "not_evaluated")
