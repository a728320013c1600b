"""What smtpaudit says about TLS on each real lab server, against what the server is configured to do.

One `smtpaudit scan --tag tls` per instance (the CLI, as a user runs it, trusting the lab CA but
not the weak variants' self-signed certificates),
then the protocols, weak suites, certificate faults and STARTTLS verdict are compared with the
truth of the variant. The two OpenSMTPD 6.8 instances are the point of issue 9: on OpenSSL 3
they select versions and suites they cannot complete, so only handshakes that finish count.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.server import LabServer

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
WEAK_FLAGS = {"null", "export", "anon", "rc4", "des", "3des"}
CERT_FAULTS = {"tls-cert-weak-key", "tls-cert-weak-signature", "tls-cert-untrusted-mx", "tls-cert-expired",
               "tls-cert-name-mismatch-mx", "tls-cert-not-yet-valid", "tls-cert-chain-order", "tls-cert-expires-soon"}
ALL = ["TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"]

# The configured truth (tests/lab/variants/*.toml, tests/lab/README.md) for the port-25 listener.
TRUTH: dict[str, dict[str, Any]] = {
    "postfix-hardened": {"accepted": ["TLSv1.2", "TLSv1.3"], "weak": set(), "cert": set(), "starttls": True, "self_signed": False},
    "postfix-insecure": {"accepted": ALL, "weak": {"null", "anon"}, "starttls": True, "self_signed": True,
                         "cert": {"tls-cert-weak-key", "tls-cert-weak-signature", "tls-cert-untrusted-mx"}},
    "exim-secure": {"accepted": ["TLSv1.2", "TLSv1.3"], "weak": set(), "cert": set(), "starttls": True, "self_signed": False},
    "exim-insecure": {"accepted": ALL, "weak": {"rc4", "3des"}, "starttls": True, "self_signed": True,
                      "cert": {"tls-cert-weak-key", "tls-cert-weak-signature", "tls-cert-untrusted-mx"}},
    # Selects TLS 1.2/1.3 and ~30 suites; no handshake completes. Its certificate (lab CA, RSA-2048)
    # still arrives in the clear before the failure at TLS 1.2.
    "opensmtpd": {"accepted": [], "selected": ["TLSv1.2", "TLSv1.3"], "weak": set(), "cert": set(), "starttls": False,
                  "self_signed": False},
    # Only anonymous (AECDH) suites complete, TLS 1.0-1.2; TLS 1.3 is selected and fails.
    "opensmtpd-insecure": {"accepted": ["TLSv1.0", "TLSv1.1", "TLSv1.2"], "selected": ALL, "weak": {"anon", "null"},
                           "cert": set(), "starttls": False, "self_signed": False},
}


def scan(server: LabServer, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{server.name}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "smtpaudit", "scan", server.targets["smtp"], "--tag", "tls", "--ca-file", str(server.pki.ca_cert),
         "--format", "json", "-o", str(out), "-q", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.exists(), proc.stderr[-2000:]
    (entry,) = json.loads(out.read_text())["endpoints"]
    return entry


@pytest.mark.parametrize("name", list(TRUTH))
def test_tls_verdicts_match_the_configuration(request, name: str, tmp_path: Path) -> None:
    server: LabServer = request.getfixturevalue(name.replace("-", "_"))
    truth = TRUTH[name]
    entry = scan(server, tmp_path)
    f = entry["facts"]
    found = {x["rule_id"] for x in entry["findings"]}

    assert f["tls.protocols.accepted"] == truth["accepted"], f.get("tls.handshake.summary")
    assert f["tls.protocols.selected"] == truth.get("selected", truth["accepted"])
    assert f["tls.available"] is bool(truth["accepted"])
    assert WEAK_FLAGS & set(f["tls.suites.flags"]) == truth["weak"]
    assert found & CERT_FAULTS == truth["cert"]
    assert f["tls.cert.chain_length"] >= 1 and f["tls.cert.self_signed"] is truth["self_signed"]
    assert ("starttls-broken" in found) is (not truth["starttls"])
    # One root cause, one finding: a broken upgrade is starttls-broken alone.
    if "starttls-broken" in found:
        assert not found & {"tls-unusable", "tls-handshake-failures"}
    # Selected-but-failing choices exist exactly on the OpenSMTPD pair.
    assert f["tls.handshake.failed"] is name.startswith("opensmtpd"), f.get("tls.handshake.summary")
    # Every listed suite completed a handshake of its class (or is inferred from one).
    assert {i["confirmed"] for i in f["tls.suites.accepted"]} <= {"handshake", "inferred"}
    # Anonymous suites on an MX: reported, low, with the opportunistic-TLS explanation.
    assert ("tls-anonymous-suites-mx" in found) is ("anon" in truth["weak"])
    for x in entry["findings"]:
        if x["rule_id"] == "tls-anonymous-suites-mx":
            assert x["severity"] == "low" and "opportunistic" in x["message"]
    # A TLS 1.1-only or TLS-1.2-less server is none of these: the floor rule stays quiet.
    assert "tls-12-not-supported" not in found
    legacy = [x for x in entry["findings"] if x["rule_id"] == "tls-legacy-protocols"]
    for x in legacy:
        assert "TLSv1.2" not in x["message"] and "TLSv1.3" not in x["message"]


def _anon_handshake_completes(server: LabServer, cipher: str, version: ssl.TLSVersion) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(f"{cipher}:@SECLEVEL=0")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    client = smtplib.SMTP(server.host, server.ports["smtp"], local_hostname="client.example.org", timeout=10)
    try:
        client.ehlo()
        client.starttls(context=ctx)
        return True
    except (ssl.SSLError, OSError, smtplib.SMTPException):
        return False
    finally:
        try:
            client.close()
        except OSError:
            pass


def test_opensmtpd_insecure_lists_exactly_the_anonymous_suites_that_complete(opensmtpd_insecure: LabServer, tmp_path: Path) -> None:
    # The reference is Python's own ssl module (the system OpenSSL, not the scanner's), one
    # STARTTLS handshake per anonymous suite it knows, at TLS 1.2.
    entry = scan(opensmtpd_insecure, tmp_path)
    f = entry["facts"]
    reported = {i["openssl"] for i in f["tls.suites.accepted"] if i["protocol"] == "TLSv1.2"}
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.set_ciphers("aNULL:@SECLEVEL=0")
    anon = sorted({c["name"] for c in probe.get_ciphers() if c["protocol"] != "TLSv1.3"})
    completes = {c for c in anon if _anon_handshake_completes(opensmtpd_insecure, c, ssl.TLSVersion.TLSv1_2)}
    assert completes and reported == completes, (sorted(reported), sorted(completes))
    assert f["tls.suites.anonymous_only"] is True
    assert f["tls.protocols.handshake_failed"] == ["TLSv1.3"]
    # The certificate suites it selects are listed as failing, not as accepted.
    failing = {s for x in f["tls.handshake.failures"] for s in x["suites"]}
    assert any("_RSA_" in s for s in failing) and not failing & set(f["tls.suites.names"])


def test_opensmtpd_hardened_has_no_usable_version_and_one_finding(opensmtpd: LabServer, tmp_path: Path) -> None:
    entry = scan(opensmtpd, tmp_path)
    f = entry["facts"]
    assert f["tls.protocols.accepted"] == [] and f["tls.suites.accepted"] == []
    assert f["tls.protocols.handshake_failed"] == ["TLSv1.2", "TLSv1.3"]
    handshake_rules = {x["rule_id"] for x in entry["findings"]} & {"starttls-broken", "tls-unusable", "tls-handshake-failures"}
    assert handshake_rules == {"starttls-broken"}
    # No usable version: the suite and protocol rules have nothing to flag, nothing was "accepted".
    assert not {x["rule_id"] for x in entry["findings"]} & {"tls-legacy-protocols", "tls-13-not-supported", "tls-null-export-suites"}
    assert f["tls.cert.handshake_ok"] is False and f["tls.cert.source"] == "failed handshake"


def test_policies_set_the_severity_of_anonymous_suites_on_an_mx(postfix_insecure: LabServer, tmp_path: Path) -> None:
    # The insecure Postfix accepts ADH/AECDH on port 25 (smtpd_tls_ciphers with aNULL).
    for policy, severity in (("mta-opportunistic", "info"), ("mozilla-intermediate", "medium")):
        entry = scan(postfix_insecure, tmp_path, "--policy", policy)
        (anon,) = [x for x in entry["findings"] if x["rule_id"] == "tls-anonymous-suites-mx"]
        assert anon["severity"] == severity, policy


def test_anonymous_friendly_postfix_still_shows_its_certificate(postfix_insecure: LabServer, lab_reconfigure, tmp_path: Path) -> None:
    # Issue 15: Postfix with client preference (tls_preempt_cipherlist = no), anonymous suites and
    # no TLS 1.3. A certificate handshake that also offered aNULL got an anonymous suite, no
    # certificate, and every certificate rule "passed": it graded above its twin without aNULL.
    no13 = {"smtpd_tls_protocols": ">=TLSv1, <=TLSv1.2", "smtpd_tls_mandatory_protocols": ">=TLSv1, <=TLSv1.2"}
    lab_reconfigure(postfix_insecure, **no13)
    with_anon = scan(postfix_insecure, tmp_path)
    lab_reconfigure(postfix_insecure, **no13, smtpd_tls_exclude_ciphers="aNULL")
    without_anon = scan(postfix_insecure, tmp_path)
    fa, fw = with_anon["facts"], without_anon["facts"]
    assert fa["tls.protocols.accepted"][-1] == "TLSv1.2" and "anon" in fa["tls.suites.flags"]
    assert "anon" not in fw["tls.suites.flags"]
    assert fa["tls.cert.chain_length"] == 1 and not fa["tls.cert.handshake_cipher"].startswith(("ADH", "AECDH"))
    cert_a = {x["rule_id"] for x in with_anon["findings"] if x["rule_id"].startswith("tls-cert-")}
    cert_w = {x["rule_id"] for x in without_anon["findings"] if x["rule_id"].startswith("tls-cert-")}
    assert cert_a == cert_w == {"tls-cert-weak-key", "tls-cert-weak-signature", "tls-cert-untrusted-mx"}
    assert with_anon["score"]["score"] <= without_anon["score"]["score"], (with_anon["score"], without_anon["score"])


def test_ecdsa_p256_postfix_all_curves_found(postfix_insecure: LabServer, postfix_hardened: LabServer, lab_reconfigure,
                                             tmp_path: Path) -> None:
    # Issue 15: with an ECDSA P-256 certificate, hellos without P-256 are refused (RFC 8422 5.1),
    # so enumeration that drops each curve it found stopped at x25519, secp256r1. On a server that
    # follows the client's order (tls_preempt_cipherlist = no) P-256 offered last brings out the rest.
    ec = postfix_insecure.pki.ec
    lab_reconfigure(postfix_insecure, smtpd_tls_cert_file=str(ec.chain), smtpd_tls_key_file=str(ec.key),
                    smtpd_tls_exclude_ciphers="aNULL")
    f = scan(postfix_insecure, tmp_path)["facts"]
    assert all(i["auth"] == "ECDSA" for i in f["tls.suites.accepted"] if i["protocol"] == "TLSv1.2" and "ECDHE" in i["name"])
    assert {"x25519", "secp256r1", "x448", "secp384r1", "secp521r1"} <= set(f["tls.groups.tls12"]), f["tls.groups.tls12"]
    # A server that imposes its own order always picks P-256 over the curves left: what could
    # not be enumerated is said, not implied absent (TLS 1.3 groups are unaffected).
    lab_reconfigure(postfix_hardened, smtpd_tls_chain_files=f"{ec.key}, {ec.chain}")
    f = scan(postfix_hardened, tmp_path)["facts"]
    assert any("not enumerated" in e for e in f["tls.scan.errors"]), f["tls.scan.errors"]
    assert {"x25519", "secp256r1", "x448", "secp384r1", "secp521r1"} <= set(f["tls.groups.tls13"])


def test_best_tls11_postfix_grades_below_tls10_to_12(postfix_insecure: LabServer, lab_reconfigure, tmp_path: Path) -> None:
    # Issue 15 / RFC 8996, RFC 9325: TLS 1.2 is the floor. A server stuck at TLS 1.1 must not grade
    # above the same server offering TLS 1.0-1.2, and must say "TLS 1.2 not supported".
    grades = ["A+", "A", "B", "C", "D", "E", "F"]
    common = {"smtpd_tls_exclude_ciphers": "eNULL, aNULL"}
    lab_reconfigure(postfix_insecure, smtpd_tls_protocols=">=TLSv1, <=TLSv1.1", smtpd_tls_mandatory_protocols=">=TLSv1, <=TLSv1.1", **common)
    old = scan(postfix_insecure, tmp_path)
    lab_reconfigure(postfix_insecure, smtpd_tls_protocols=">=TLSv1, <=TLSv1.2", smtpd_tls_mandatory_protocols=">=TLSv1, <=TLSv1.2", **common)
    span = scan(postfix_insecure, tmp_path)
    assert old["facts"]["tls.protocols.accepted"] == ["TLSv1.0", "TLSv1.1"]
    assert span["facts"]["tls.protocols.accepted"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    (floor,) = [x for x in old["findings"] if x["rule_id"] == "tls-12-not-supported"]
    assert "TLSv1.1" in floor["message"]
    assert "tls-12-not-supported" not in {x["rule_id"] for x in span["findings"]}
    assert old["score"]["score"] < span["score"]["score"]
    assert grades.index(old["score"]["grade"]) > grades.index(span["score"]["grade"]), (old["score"], span["score"])


def test_ip_target_certificate_checked_against_the_servers_own_names(postfix_insecure: LabServer, lab_reconfigure,
                                                                    tmp_path: Path) -> None:
    # A certificate for mail.lab.test only (no IP address), scanned as 127.0.0.1: the server calls
    # itself mail.lab.test in its greeting and EHLO, so the name fits; a mismatch only when none does.
    from tests.tls.certgen import make_cert

    certdir = tmp_path / "pki"
    certdir.mkdir()
    certdir.chmod(0o755)
    cert, key = make_cert(certdir, name="mail.lab.test", sans=("mail.lab.test",))
    for p in (cert, key):
        p.chmod(0o644)
    lab_reconfigure(postfix_insecure, smtpd_tls_cert_file=str(cert), smtpd_tls_key_file=str(key))
    entry = scan(postfix_insecure, tmp_path)
    f = entry["facts"]
    assert f["tls.cert.san"] == ["mail.lab.test"] and f["tls.cert.matches_host"] is False
    assert f["tls.cert.names_tried"] == ["127.0.0.1", "mail.lab.test"] and f["tls.cert.matches_any"] is True
    assert "tls-cert-name-mismatch-mx" in entry["passed"]
    # The same certificate under a banner naming another host: nothing fits, and the finding says what was tried.
    other = tmp_path / "other"
    other.mkdir()
    other.chmod(0o755)
    cert2, key2 = make_cert(other, name="other.example.net", sans=("other.example.net",))
    for p in (cert2, key2):
        p.chmod(0o644)
    lab_reconfigure(postfix_insecure, smtpd_tls_cert_file=str(cert2), smtpd_tls_key_file=str(key2))
    entry = scan(postfix_insecure, tmp_path)
    (miss,) = [x for x in entry["findings"] if x["rule_id"] == "tls-cert-name-mismatch-mx"]
    assert "127.0.0.1" in miss["message"] and "mail.lab.test" in miss["message"]
