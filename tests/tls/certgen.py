"""Test certificates made on the fly with ``cryptography`` (no files in the repo, no network)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def make_cert(
    directory: Path,
    *,
    name: str = "mail.example.test",
    sans: tuple[str, ...] = ("mail.example.test", "127.0.0.1"),
    days: tuple[int, int] = (-1, 90),
    key: str = "rsa2048",
    hash_name: str = "sha256",
    stem: str = "cert",
) -> tuple[Path, Path]:
    """Self-signed certificate + key as PEM files; returns (cert_path, key_path)."""
    if key.startswith("rsa"):
        priv = rsa.generate_private_key(public_exponent=65537, key_size=int(key[3:]))
    else:
        priv = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt: list[x509.GeneralName] = []
    for s in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(s)))
        except ValueError:
            alt.append(x509.DNSName(s))
    algo = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[hash_name]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(priv.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(priv, algo)
    )
    cp, kp = directory / f"{stem}.pem", directory / f"{stem}.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return cp, kp



def make_weak_cert(directory: Path) -> tuple[Path, Path]:
    """Expired, RSA-1024, SHA-1-signed, for other.example.test, without SAN. Built with pyOpenSSL's
    legacy X509 API because ``cryptography`` refuses to sign with SHA-1."""
    import warnings

    from OpenSSL import crypto

    key = crypto.PKey()
    key.generate_key(crypto.TYPE_RSA, 1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cert = crypto.X509()
        cert.get_subject().CN = "other.example.test"
        cert.set_issuer(cert.get_subject())
        cert.set_pubkey(key)
        cert.set_serial_number(7)
        cert.set_notBefore(b"20200101000000Z")
        cert.set_notAfter(b"20210101000000Z")
        cert.sign(key, "sha1")
    cp, kp = directory / "weak.pem", directory / "weak.key"
    cp.write_bytes(crypto.dump_certificate(crypto.FILETYPE_PEM, cert))
    kp.write_bytes(crypto.dump_privatekey(crypto.FILETYPE_PEM, key))
    return cp, kp
