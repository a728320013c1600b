"""Tests of the lab's own plumbing that need no mail server: skip/fail policy, templates, ports, PKI."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.lab import procs
from tests.lab.certs import LAB_HOSTNAME, ensure_lab_pki
from tests.lab.fixtures import lab_require, lab_unavailable
from tests.lab.mta import INSTANCES
from tests.lab.server import load_variant, render


def test_missing_binary_skips_with_install_hint(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"not installed: run \.ci/install-lab\.sh"):
        lab_require(Path("/nonexistent/postfix"))


def test_missing_binary_fails_under_ci(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="postfix not installed"):
        lab_require(Path("/nonexistent/postfix"))


def test_unavailable_fails_only_when_ci_is_exactly_true(monkeypatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.skip.Exception):
        lab_unavailable("start failed")


def test_lab_require_finds_a_binary_on_path() -> None:
    assert lab_require("sh").name == "sh"


def test_render_refuses_unknown_placeholders() -> None:
    assert render("port @@p@@ $keep ${keep}", {"p": 25}) == "port 25 $keep ${keep}"
    with pytest.raises(KeyError, match="@@missing@@"):
        render("@@missing@@", {})


@pytest.mark.parametrize("name", list(INSTANCES))
def test_variant_files_match_their_class(name: str) -> None:
    spec = load_variant(name)
    assert spec["mta"] == INSTANCES[name].mta
    assert spec["cert"] in {"rsa", "ec", "weak"}
    assert {"banner_discloses_version", "starttls", "relay", "vrfy_codes"} <= set(spec["expect"])


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = procs.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as s:
            s.bind((procs.LOOPBACK, port))


def test_wait_until_ready_reports_a_dead_process(tmp_path) -> None:
    log = tmp_path / "daemon.log"
    proc = procs.spawn(["sh", "-c", "echo boom-from-daemon; exit 3"], log)
    proc.wait(timeout=10)
    with pytest.raises(procs.LabStartError, match="(?s)status 3.*boom-from-daemon"):
        procs.wait_until_ready(proc, procs.free_ports(1)[0], [], lambda: procs.log_tail(log))


def test_lab_pki(tmp_path) -> None:
    pki = ensure_lab_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(pki.rsa.cert.read_bytes())
    assert leaf.issuer == ca.subject
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey) and leaf.public_key().key_size == 2048
    eccert = x509.load_pem_x509_certificate(pki.ec.cert.read_bytes())
    assert isinstance(eccert.public_key(), ec.EllipticCurvePublicKey)
    weak = x509.load_pem_x509_certificate(pki.weak.cert.read_bytes())
    assert weak.public_key().key_size == 1024
    assert weak.signature_hash_algorithm.name == "sha1"
    assert weak.issuer == weak.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert LAB_HOSTNAME in san.get_values_for_type(x509.DNSName)
    leaf.verify_directly_issued_by(ca)
    eccert.verify_directly_issued_by(ca)
    # The chain file (leaf + CA) is what the strong instances send.
    assert pki.rsa.chain.read_text().count("BEGIN CERTIFICATE") == 2
    assert ssl.create_default_context(cafile=str(pki.ca_cert)).get_ca_certs()[0]["subject"]
    # Reused, not regenerated, on the second call.
    before = pki.rsa.cert.read_bytes()
    assert ensure_lab_pki(tmp_path).rsa.cert.read_bytes() == before
