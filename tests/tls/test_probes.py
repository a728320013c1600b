"""The TLS probes end to end over real SMTP + STARTTLS / implicit TLS (Python ssl servers on loopback)."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from pathlib import Path
from typing import Any

import pytest

from smtpaudit.catalog import load_catalog, value_matches_type
from smtpaudit.probes.base import ProbeContext, Timeouts
from smtpaudit.probes.tls.certificate import TlsCertificateProbe
from smtpaudit.probes.tls.injection import StarttlsInjectionProbe
from smtpaudit.probes.tls.protocols import TlsProtocolsProbe
from smtpaudit.probes.tls.registry import load_registry
from smtpaudit.targets import Endpoint, Mode, Role
from tests.tls.certgen import make_cert, make_weak_cert
from tests.tls.smtp_tls_server import SmtpTlsServer


def server_context(cert: Path, key: Path, *, ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20", minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(ciphers)  # first: @SECLEVEL=0 is what lets a 1024-bit key load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = minimum
    ctx.load_cert_chain(cert, key)
    return ctx


def run_probe(probe: Any, tls: ssl.SSLContext, *, implicit: bool = False, inject: bool = False, prior: dict | None = None) -> tuple[Any, SmtpTlsServer]:
    async def main() -> Any:
        server = await SmtpTlsServer(tls, implicit=implicit, inject_vulnerable=inject).start()
        try:
            ep = Endpoint("127.0.0.1", server.port, Mode.IMPLICIT if implicit else Mode.STARTTLS, Role.SUBMISSION, spec="test")
            ctx = ProbeContext(timeouts=Timeouts(connect=3, greeting=3, command=3, tls=3), host_slots=asyncio.Semaphore(2))
            res = await probe.run(ep, ctx, prior or {"smtp.starttls.offered": not implicit, "smtp.greeting.hostname": "mail.example.test"})
            return res, server
        finally:
            await server.stop()

    return asyncio.run(main())


def check_catalog(result: Any) -> None:
    cat = load_catalog()
    for name, value in result.facts.items():
        assert name in cat.facts and cat.facts[name].probe == result.probe, name
        assert value_matches_type(value, cat.facts[name].type), (name, value)


@pytest.fixture(scope="module")
def rsa_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("certs"))


def expected_suites(ctx: ssl.SSLContext, protocol: str) -> set[str]:
    reg = load_registry()
    by_openssl = {s.openssl: s.iana for s in reg.suites if s.openssl and not s.sslv2}
    # An RSA certificate: ECDSA/DSS-authenticated suites cannot be chosen, anonymous ones can.
    usable = ("auth-rsa", "auth-null", "auth-any")
    # OpenSSL labels a suite with the oldest version that has it ("SSLv3" covers TLS 1.0-1.2).
    allowed = {"TLSv1.3": ("TLSv1.3",), "TLSv1.2": ("SSLv3", "TLSv1", "TLSv1.0", "TLSv1.2"), "TLSv1.0": ("SSLv3", "TLSv1", "TLSv1.0")}[protocol]
    # No DH parameters, PSK or SRP configured: only RSA and ECDHE key exchange can be chosen.
    return {
        by_openssl[c["name"]]
        for c in ctx.get_ciphers()
        if c["protocol"] in allowed and c["auth"] in usable and c["kea"] in ("kx-rsa", "kx-ecdhe", "kx-any")
    }


def test_protocols_probe_over_starttls(rsa_cert: tuple[Path, Path]) -> None:
    tls = server_context(*rsa_cert)
    res, server = run_probe(TlsProtocolsProbe(), tls)
    assert res.status == "ok", res.error_message
    check_catalog(res)
    f = res.facts
    assert f["tls.protocols.accepted"] == ["TLSv1.2", "TLSv1.3"]
    assert f["tls.protocols.rejected"] == ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"]
    assert set(f["tls.suites.by_protocol"]["TLSv1.2"]) == expected_suites(tls, "TLSv1.2")
    assert set(f["tls.suites.by_protocol"]["TLSv1.3"]) == {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
    assert f["tls.suites.forward_secrecy"] == "all" and f["tls.suites.tls12_aead"] is True
    assert f["tls.groups.tls13"][:1] == ["x25519"] and "secp256r1" in f["tls.groups.tls12"]
    assert f["tls.secure_renegotiation"] is True and f["tls.compression"] is False
    # Python's asyncio TLS server hangs up without sending the inappropriate_fallback alert;
    # the same hello without the SCSV was accepted, so the hang-up is the SCSV's doing.
    assert f["tls.fallback_scsv"] is True
    assert f["tls.dh.min_bits"] is None
    assert res.connections == server.connections
    # The SMTP dialogue of the first connection is in the transcript, hello summaries for all.
    texts = [ln.text for ln in res.transcript]
    assert any(t.startswith("EHLO") for t in texts) and any("ClientHello TLSv1.2" in t for t in texts)


def test_protocols_probe_implicit_tls_with_legacy(rsa_cert: tuple[Path, Path]) -> None:
    tls = server_context(*rsa_cert, ciphers="ALL:@SECLEVEL=0", minimum=ssl.TLSVersion.TLSv1)
    res, _ = run_probe(TlsProtocolsProbe(), tls, implicit=True)
    f = res.facts
    assert f["tls.protocols.accepted"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    assert set(f["tls.suites.by_protocol"]["TLSv1.0"]) == expected_suites(tls, "TLSv1.0")
    assert "cbc" in f["tls.suites.flags"] and "anon" in f["tls.suites.flags"]
    assert f["tls.suites.forward_secrecy"] == "some"


def test_probe_skips_without_starttls(rsa_cert: tuple[Path, Path]) -> None:
    res, server = run_probe(TlsProtocolsProbe(), server_context(*rsa_cert), prior={"smtp.starttls.offered": False})
    assert res.status == "skipped" and server.connections == 0
    assert res.facts == {"tls.available": False}  # the rest absent: TLS rules do not apply


def test_certificate_probe(rsa_cert: tuple[Path, Path]) -> None:
    res, server = run_probe(TlsCertificateProbe(), server_context(*rsa_cert))
    assert res.status == "ok", res.error_message
    check_catalog(res)
    f = res.facts
    assert f["tls.cert.handshake_ok"] is True and f["tls.cert.handshake_protocol"] == "TLSv1.3"
    assert f["tls.cert.self_signed"] is True and f["tls.cert.trusted"] is False
    assert f["tls.cert.matches_host"] is True  # 127.0.0.1 is an IP SAN
    assert f["tls.cert.matches_banner"] is True
    assert f["tls.cert.key_type"] == "RSA" and f["tls.cert.key_bits"] == 2048
    assert f["tls.cert.signature_hash"] == "sha256" and f["tls.cert.expired"] is False
    assert 85 <= f["tls.cert.days_left"] <= 90
    assert f["tls.cert.chain_pem"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert server.connections == 1


def test_certificate_probe_weak_expired(tmp_path: Path) -> None:
    cert = make_weak_cert(tmp_path)
    res, _ = run_probe(TlsCertificateProbe(), server_context(*cert, ciphers="ALL:@SECLEVEL=0"))
    f = res.facts
    assert f["tls.cert.expired"] is True and f["tls.cert.days_left"] < 0
    assert f["tls.cert.key_bits"] == 1024 and f["tls.cert.signature_hash"] == "sha1"
    assert f["tls.cert.matches_host"] is False and f["tls.cert.matches_banner"] is False


def test_starttls_injection_detected_and_not(rsa_cert: tuple[Path, Path]) -> None:
    res, _ = run_probe(StarttlsInjectionProbe(), server_context(*rsa_cert), inject=True)
    check_catalog(res)
    assert res.facts["tls.starttls_injection.vulnerable"] is True, res.facts
    res, _ = run_probe(StarttlsInjectionProbe(), server_context(*rsa_cert), inject=False)
    assert res.facts["tls.starttls_injection.vulnerable"] is False, res.facts
