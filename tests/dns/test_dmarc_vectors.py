"""DMARC conformance vectors, run through the dns.domain probe (stub DNS, no network) and the dns
rules, as a scan of the domain would.

Sources, cited per vector:
- RFC 7489 section 6.3 (general record format: unknown tags ignored, defaults), 6.4 (formal
  definition: ABNF of every tag value), 6.6.3 (policy discovery: organizational-domain fallback,
  multiple records, invalid p), 3.2 (organizational domain via the Public Suffix List).
- draft-ietf-dmarc-dmarcbis (DMARCbis), section "Formal Definition": np, psd and t tags.
"""

from __future__ import annotations

import pytest

from smtpaudit.probes.dns.probes import DnsDomainProbe
from tests.dns.conftest import run_probe
from tests.dns.judging import findings
from tests.dns.stub_dns import StubZone

DMARC_RULES = {"dmarc-missing", "dmarc-multiple-records", "dmarc-syntax-error", "dmarc-policy-none", "dmarc-partial-pct"}


def audit(domain: str, zone: dict[str, list]) -> tuple[dict, set[str]]:
    with StubZone(zone).installed():
        r = run_probe(DnsDomainProbe(), f"domain:{domain}", {"resolver": "127.0.0.1:53"})
    assert r.status == "ok", r.error_message
    return r.facts, findings(r.facts) & DMARC_RULES


def txt(*records: str) -> list[dict]:
    return [{"TXT": r} for r in records]


# (id, record(s) at _dmarc.example.org, expected dmarc findings, source)
RECORD_VECTORS = [
    ("minimal", ["v=DMARC1; p=reject"], set(), "RFC 7489 6.4: v and p are all a record needs"),
    ("wsp-around-separators", ["v = DMARC1 ; p = reject ;"], set(), "RFC 7489 6.4: *WSP around '=' and ';'"),
    ("unknown-tag-ignored", ["v=DMARC1; p=reject; xyz=foo"], set(), "RFC 7489 6.3: unknown tags MUST be ignored"),
    ("all-tags-valid", ["v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s; pct=100; fo=0:1:d:s; rf=afrf; "
                        "ri=3600; rua=mailto:a@example.org,mailto:b@example.net!10m; ruf=mailto:f@example.org"],
     set(), "RFC 7489 6.4: every tag with a valid value"),
    ("dmarcbis-tags-valid", ["v=DMARC1; p=reject; np=reject; psd=n; t=n"], set(), "DMARCbis: np, psd, t"),
    ("policy-none", ["v=DMARC1; p=none; rua=mailto:d@example.org"], {"dmarc-policy-none"}, "RFC 7489 6.3 p=none"),
    ("pct-partial", ["v=DMARC1; p=reject; pct=20"], {"dmarc-partial-pct"}, "RFC 7489 6.3 pct"),
    ("two-records", ["v=DMARC1; p=reject", "v=DMARC1; p=none"], {"dmarc-multiple-records"},
     "RFC 7489 6.6.3: multiple records -> no DMARC"),
    ("version-lower-case", ["v=dmarc1; p=reject"], {"dmarc-missing"}, "RFC 7489 6.4: DMARC1 is %x44 %x4d ... (exact case)"),
    ("version-not-first", ["p=reject; v=DMARC1"], {"dmarc-missing"}, "RFC 7489 6.6.3 step 3: must start with v=DMARC1"),
    ("version-2", ["v=DMARC2; p=reject"], {"dmarc-missing"}, "RFC 7489 6.6.3: other versions are discarded"),
    ("p-missing-rua-valid", ["v=DMARC1; rua=mailto:d@example.org"], {"dmarc-syntax-error", "dmarc-policy-none"},
     "RFC 7489 6.6.3: no valid p but a valid rua -> treated as p=none"),
    ("p-invalid", ["v=DMARC1; p=block"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-request"),
    ("p-twice", ["v=DMARC1; p=reject; p=none"], {"dmarc-syntax-error"}, "RFC 7489 6.4: each tag once"),
    ("sp-invalid", ["v=DMARC1; p=reject; sp=all"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-srequest"),
    ("adkim-invalid", ["v=DMARC1; p=reject; adkim=x"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-adkim"),
    ("aspf-invalid", ["v=DMARC1; p=reject; aspf=relaxed"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-aspf"),
    ("pct-over-100", ["v=DMARC1; p=reject; pct=101"], {"dmarc-syntax-error"}, "RFC 7489 6.3: pct 0-100"),
    ("pct-not-number", ["v=DMARC1; p=reject; pct=half"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-percent"),
    ("fo-invalid", ["v=DMARC1; p=reject; fo=2"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-fo"),
    ("fo-invalid-item", ["v=DMARC1; p=reject; fo=0:x"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-fo"),
    ("rf-unregistered", ["v=DMARC1; p=reject; rf=iodef"], {"dmarc-syntax-error"}, "RFC 7489 6.3 rf: afrf"),
    ("ri-negative", ["v=DMARC1; p=reject; ri=-1"], {"dmarc-syntax-error"}, "RFC 7489 6.4 dmarc-ainterval 1*DIGIT"),
    ("ri-over-32-bit", ["v=DMARC1; p=reject; ri=4294967296"], {"dmarc-syntax-error"}, "RFC 7489 6.3: 32-bit unsigned"),
    ("np-invalid", ["v=DMARC1; p=reject; np=block"], {"dmarc-syntax-error"}, "DMARCbis dmarc-nprequest"),
    ("psd-invalid", ["v=DMARC1; p=reject; psd=x"], {"dmarc-syntax-error"}, "DMARCbis dmarc-psd"),
    ("t-invalid", ["v=DMARC1; p=reject; t=maybe"], {"dmarc-syntax-error"}, "DMARCbis dmarc-test"),
    ("rua-not-mailto", ["v=DMARC1; p=reject; rua=https://example.org/r"], {"dmarc-syntax-error"},
     "RFC 7489 6.2: receivers support mailto:"),
    ("rua-bad-domain", ["v=DMARC1; p=reject; rua=mailto:d@bad..example.org"], {"dmarc-syntax-error"},
     "RFC 7489 6.2: a URI naming a host that cannot exist"),
]


@pytest.mark.parametrize("records, expected, source", [v[1:] for v in RECORD_VECTORS], ids=[v[0] for v in RECORD_VECTORS])
def test_dmarc_record_vectors(records, expected, source):
    facts, got = audit("example.org", {"_dmarc.example.org": txt(*records)})
    assert got == expected, f"{source}: {facts['dns.dmarc.syntax_errors']}"


def test_unknown_tags_are_listed_not_errors():
    facts, _ = audit("example.org", {"_dmarc.example.org": txt("v=DMARC1; p=reject; xyz=foo")})
    assert facts["dns.dmarc.ignored_tags"] == ["xyz"] and facts["dns.dmarc.syntax_errors"] == []


# RFC 7489 3.2 + 6.6.3: a domain without its own record inherits its organizational domain's,
# whose sp (default p) then applies.
ORG_VECTORS = [
    ("inherits-sp", "mail.example.co.uk", {"_dmarc.example.co.uk": txt("v=DMARC1; p=reject; sp=quarantine")},
     "organizational", "quarantine", set()),
    ("inherits-p-without-sp", "a.b.example.org", {"_dmarc.example.org": txt("v=DMARC1; p=reject")},
     "organizational", "reject", set()),
    ("inherits-sp-none", "news.example.org", {"_dmarc.example.org": txt("v=DMARC1; p=reject; sp=none")},
     "organizational", "none", {"dmarc-policy-none"}),
    ("own-record-wins", "news.example.org", {"_dmarc.news.example.org": txt("v=DMARC1; p=none"),
                                             "_dmarc.example.org": txt("v=DMARC1; p=reject")},
     "domain", "none", {"dmarc-policy-none"}),
    ("none-anywhere", "mail.example.co.uk", {}, "none", None, {"dmarc-missing"}),
    ("org-domain-itself", "example.co.uk", {}, "none", None, {"dmarc-missing"}),
    ("multiple-stops-discovery", "news.example.org",
     {"_dmarc.news.example.org": txt("v=DMARC1; p=none", "v=DMARC1; p=quarantine"), "_dmarc.example.org": txt("v=DMARC1; p=reject")},
     "multiple", None, {"dmarc-multiple-records"}),
]


@pytest.mark.parametrize("domain, zone, source, policy, expected", [v[1:] for v in ORG_VECTORS], ids=[v[0] for v in ORG_VECTORS])
def test_dmarc_organizational_domain_vectors(domain, zone, source, policy, expected):
    facts, got = audit(domain, zone)
    assert (facts["dns.dmarc.source"], facts["dns.dmarc.policy"], got) == (source, policy, expected)


def test_org_domain_from_public_suffix_list():
    facts, _ = audit("mail.example.co.uk", {})
    assert facts["dns.dmarc.org_domain"] == "example.co.uk"  # co.uk is a public suffix
    facts, _ = audit("mx.lab.test", {})
    assert facts["dns.dmarc.org_domain"] == "lab.test"  # unlisted TLD: the implicit '*' rule


def test_dmarc_lookup_failure_is_not_a_missing_record():
    zone = {"_dmarc.example.org": ["TIMEOUT"]}
    facts, got = audit("example.org", zone)
    assert "dns.dmarc.source" not in facts and "dmarc-missing" not in got  # absent: not evaluated, never passed
