"""DANE conformance vectors: TLSA records (stub DNS, no network) matched by the dns.dane probe
against a served chain, then judged by the dns rules.

A three-level PKI is built here (root -> intermediate -> leaf); the server "sends" leaf +
intermediate, the root only where a vector says so. The rules are judged with
``dane.tlsa.dnssec = "secure"`` as the premise (the stub zone is not signed; DNSSEC itself is
covered by the DNS lab tests), so ``dane-tlsa-mismatch`` fires exactly when no usable record
matches.

Sources, cited per vector:
- RFC 6698 section 2.1 (usage, selector, matching type fields; 0 Full, 1 SHA2-256, 2 SHA2-512).
- RFC 7671 section 5.1 (DANE-EE(3): matches the end-entity certificate or key only), 5.2
  (DANE-TA(2): matches a trust anchor of the chain, not the end entity), 5.2.2 (a full TA
  certificate or key, matching type 0, may be left out of the server's chain; a digest may not),
  4.1 (records with unknown parameters are unusable).
- RFC 7672 section 3.1.3 (PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP: they never count).
"""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from smtpaudit.probes.dns.probes import DaneProbe
from tests.dns.conftest import run_probe
from tests.dns.judging import findings
from tests.dns.stub_dns import StubZone

HOST = "mx.example.org"


def _cert(subject: str, key, issuer_name: str, issuer_key, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=90))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("root", "int", "leaf", "other")}
    certs = {
        "root": _cert("Vector Root", keys["root"], "Vector Root", keys["root"], True),
        "int": _cert("Vector Intermediate", keys["int"], "Vector Root", keys["root"], True),
        "leaf": _cert(HOST, keys["leaf"], "Vector Intermediate", keys["int"], False),
        # Same subject name as the real root, different key: must not match by name alone.
        "other": _cert("Vector Root", keys["other"], "Vector Root", keys["other"], True),
    }
    return certs


def data(cert: x509.Certificate, selector: int, mtype: int) -> str:
    raw = cert.public_bytes(Encoding.DER) if selector == 0 else \
        cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return {0: raw, 1: hashlib.sha256(raw).digest(), 2: hashlib.sha512(raw).digest()}[mtype].hex()


# (id, usage, selector, mtype, which cert the record is made from, root sent?, record matches)
VECTORS = [
    ("ee-cert-full", 3, 0, 0, "leaf", False, True),  # RFC 7671 5.1, RFC 6698 2.1.3
    ("ee-cert-sha256", 3, 0, 1, "leaf", False, True),
    ("ee-cert-sha512", 3, 0, 2, "leaf", False, True),
    ("ee-spki-full", 3, 1, 0, "leaf", False, True),
    ("ee-spki-sha256", 3, 1, 1, "leaf", False, True),  # the "3 1 1" RFC 7672 recommends
    ("ee-spki-sha512", 3, 1, 2, "leaf", False, True),
    ("ee-record-of-intermediate", 3, 1, 1, "int", False, False),  # RFC 7671 5.1: EE only
    ("ta-intermediate-cert-sha256", 2, 0, 1, "int", False, True),  # RFC 7671 5.2
    ("ta-intermediate-spki-sha256", 2, 1, 1, "int", False, True),
    ("ta-intermediate-cert-sha512", 2, 0, 2, "int", False, True),
    ("ta-record-of-leaf", 2, 1, 1, "leaf", False, False),  # RFC 7671 5.2: a TA, not the EE
    ("ta-root-full-cert-not-sent", 2, 0, 0, "root", False, True),  # RFC 7671 5.2.2
    ("ta-root-full-spki-not-sent", 2, 1, 0, "root", False, True),  # RFC 7671 5.2.2
    ("ta-root-digest-not-sent", 2, 0, 1, "root", False, False),  # a digest needs the TA on the wire
    ("ta-root-digest-sent", 2, 0, 1, "root", True, True),
    ("ta-root-full-cert-sent", 2, 0, 0, "root", True, True),
    ("ta-same-name-other-key", 2, 0, 0, "other", False, False),  # signature, not name, decides
    ("pkix-ee-leaf", 1, 1, 1, "leaf", False, True),  # matches, but unusable for SMTP (RFC 7672 3.1.3)
    ("pkix-ta-intermediate", 0, 0, 1, "int", False, True),
]


def audit(records: list[str], chain: list[str]) -> tuple[dict, set[str]]:
    zone = StubZone({f"_25._tcp.{HOST}": [{"TLSA": r} for r in records], HOST: [{"A": "192.0.2.25"}]})
    with zone.installed():
        r = run_probe(DaneProbe(), f"{HOST}:25", {"resolver": "127.0.0.1:53"},
                      prior={"tls.cert.chain_pem": chain})
    assert r.status == "ok", r.error_message
    facts = {**r.facts, "dane.tlsa.dnssec": "secure"}
    return facts, findings(facts, role="mx", host=HOST) & {"dane-tlsa-mismatch", "dane-pkix-usage"}


def chain_of(pki, root_sent: bool) -> list[str]:
    names = ["leaf", "int"] + (["root"] if root_sent else [])
    return [pki[n].public_bytes(Encoding.PEM).decode() for n in names]


@pytest.mark.parametrize("usage, selector, mtype, which, root_sent, matches",
                         [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_dane_vectors(pki, usage, selector, mtype, which, root_sent, matches):
    record = f"{usage} {selector} {mtype} {data(pki[which], selector, mtype)}"
    facts, got = audit([record], chain_of(pki, root_sent))
    assert [r["matched"] for r in facts["dane.match.results"]] == [matches]
    usable = usage in (2, 3)  # RFC 7672 3.1.3
    assert facts["dane.match.any"] is (matches and usable)
    assert ("dane-tlsa-mismatch" in got) is not (matches and usable)
    assert ("dane-pkix-usage" in got) is (not usable)


@pytest.mark.parametrize("record", [
    "3 2 1 " + "00" * 32,  # selector 2 is unassigned (RFC 6698 7.3): unusable, RFC 7671 4.1
    "3 1 3 " + "00" * 32,  # matching type 3 is unassigned (RFC 6698 7.4)
    "4 1 1 " + "00" * 32,  # usage 4 is unassigned (RFC 6698 7.2)
])
def test_unknown_parameters_never_match(pki, record):
    facts, got = audit([record], chain_of(pki, False))
    assert facts["dane.match.any"] is False and "dane-tlsa-mismatch" in got


def test_ta_match_needs_the_chain_below_it(pki):
    # RFC 7671 5.2: the TA authenticates the leaf only through a valid chain. A leaf the matching
    # intermediate did not sign (here: signed by the unrelated "other" key) does not match.
    key = ec.generate_private_key(ec.SECP256R1())
    stray = _cert(HOST, key, "Vector Intermediate", key, False)
    chain = [stray.public_bytes(Encoding.PEM).decode(), pki["int"].public_bytes(Encoding.PEM).decode()]
    facts, got = audit([f"2 1 1 {data(pki['int'], 1, 1)}", f"2 0 0 {data(pki['root'], 0, 0)}"], chain)
    assert [r["matched"] for r in facts["dane.match.results"]] == [False, False]
    assert "dane-tlsa-mismatch" in got


def test_one_matching_record_among_stale_ones_is_enough(pki):
    # RFC 7671 8.1: current + next keys published together; any usable match authenticates.
    stale = f"3 1 1 {'ab' * 32}"
    good = f"3 1 1 {data(pki['leaf'], 1, 1)}"
    facts, got = audit([stale, good], chain_of(pki, False))
    assert facts["dane.match.any"] is True and facts["dane.match.unmatched"] == 1 and "dane-tlsa-mismatch" not in got
