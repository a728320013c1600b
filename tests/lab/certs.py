"""The lab PKI: a CA, strong leaves it signs (RSA-2048, EC P-256) and a weak self-signed RSA-1024/SHA-1 cert.

Everything is generated with `cryptography` into one directory and reused when already there, so a
test session pays the RSA key generation once.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LAB_HOSTNAME = "mail.lab.test"
# Names every lab leaf carries: the instances' hostname plus what a test dials.
LEAF_DNS_NAMES = (LAB_HOSTNAME, "localhost")
LEAF_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class CertPair:
    """A certificate chain file (leaf first, then intermediates/CA) and its private key file."""

    cert: Path  # leaf certificate alone
    chain: Path  # leaf + issuing CA (what a server should send)
    key: Path


@dataclass(frozen=True)
class LabPKI:
    ca_cert: Path  # trust anchor for the strong leaves
    ca_key: Path
    rsa: CertPair  # RSA-2048, SHA-256, signed by the lab CA
    ec: CertPair  # EC P-256, SHA-256, signed by the lab CA
    weak: CertPair  # RSA-1024, SHA-1, self-signed (chain == cert)


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smtpaudit lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _leaf_builder(subject: x509.Name, issuer: x509.Name, public_key, now: datetime.datetime):
    san = [x509.DNSName(n) for n in LEAF_DNS_NAMES] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in LEAF_IPS
    ]
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )


def _make_ca(directory: Path, now: datetime.datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name("smtpaudit lab CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(_pem(cert))
    _write_key(directory / "ca.key", key)
    return cert, key


def _signed_leaf(directory: Path, stem: str, key, ca_cert, ca_key, now) -> CertPair:
    cert = (
        _leaf_builder(_name(LAB_HOSTNAME), ca_cert.subject, key.public_key(), now)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pair = CertPair(directory / f"{stem}.pem", directory / f"{stem}-chain.pem", directory / f"{stem}.key")
    pair.cert.write_bytes(_pem(cert))
    pair.chain.write_bytes(_pem(cert) + _pem(ca_cert))
    _write_key(pair.key, key)
    return pair


def _weak_self_signed(directory: Path) -> CertPair:
    """RSA-1024 + SHA-1, self-signed: what a neglected server still presents.

    `cryptography` refuses SHA-1 signatures (since 45), so the openssl CLI signs this one; OpenSSL 3
    servers need @SECLEVEL=0 to load it.
    """
    pair = CertPair(directory / "weak.pem", directory / "weak.pem", directory / "weak.key")
    _write_key(pair.key, rsa.generate_private_key(public_exponent=65537, key_size=1024))
    san = ",".join([f"DNS:{n}" for n in LEAF_DNS_NAMES] + [f"IP:{ip}" for ip in LEAF_IPS])
    subprocess.run(
        [
            "openssl", "req", "-x509", "-new", "-sha1", "-days", "365",
            "-key", str(pair.key), "-out", str(pair.cert),
            "-subj", f"/O=smtpaudit lab/CN={LAB_HOSTNAME}",
            "-addext", f"subjectAltName={san}",
            "-addext", "basicConstraints=critical,CA:FALSE",
        ],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=30,
    )
    return pair


def _pki_paths(directory: Path) -> LabPKI:
    return LabPKI(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        rsa=CertPair(directory / "rsa.pem", directory / "rsa-chain.pem", directory / "rsa.key"),
        ec=CertPair(directory / "ec.pem", directory / "ec-chain.pem", directory / "ec.key"),
        weak=CertPair(directory / "weak.pem", directory / "weak.pem", directory / "weak.key"),
    )


def ensure_lab_pki(directory: Path) -> LabPKI:
    """Return the lab PKI in `directory`, generating it first if any file is missing."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = _pki_paths(directory)
    files = [pki.ca_cert, pki.ca_key]
    for pair in (pki.rsa, pki.ec, pki.weak):
        files += [pair.cert, pair.chain, pair.key]
    if all(f.exists() for f in files):
        return pki
    now = datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = _make_ca(directory, now)
    _signed_leaf(directory, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048),
                 ca_cert, ca_key, now)
    _signed_leaf(directory, "ec", ec.generate_private_key(ec.SECP256R1()), ca_cert, ca_key, now)
    _weak_self_signed(directory)
    # Servers drop privileges before reading some files (Exim reads certs as Debian-exim): make the
    # directory and certs world-readable; keys stay 0600 and are chowned by the instance that needs them.
    directory.chmod(0o755)
    return pki
