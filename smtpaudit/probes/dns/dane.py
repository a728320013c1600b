"""DANE for SMTP (RFC 6698, RFC 7672): TLSA record matching and, when no TLS probe ran, a
minimal STARTTLS handshake to see the chain the server presents.

``tlsa_matches`` is pure: a TLSA record against a PEM chain (leaf first). Usages 3 (DANE-EE) and
1 (PKIX-EE) match the leaf; 2 (DANE-TA) and 0 (PKIX-TA) match any certificate above it, and a
DANE-TA record holding the full anchor (``2 0 0`` / ``2 1 0``) also matches when that anchor, not
sent by the server, signed a certificate of the chain (RFC 7671 section 5.2.2). The
PKIX path checks that usages 0/1 would add are out of scope: RFC 7672 section 3.1.3 says SMTP
clients treat those usages as unusable anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any, Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

USAGES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
SELECTORS = {0: "Cert", 1: "SPKI"}
MTYPES = {0: "Full", 1: "SHA2-256", 2: "SHA2-512"}


def record_dict(usage: int, selector: int, mtype: int, data: bytes) -> dict[str, Any]:
    return {"usage": int(usage), "selector": int(selector), "mtype": int(mtype), "data": data.hex()}


def _field(record: Mapping[str, Any] | Any, name: str, alt: str) -> Any:
    if isinstance(record, Mapping):
        return record[name] if name in record else record[alt]
    return getattr(record, alt if hasattr(record, alt) else name)


def association(cert: x509.Certificate, selector: int, mtype: int) -> bytes | None:
    """The bytes a TLSA record with this selector and matching type carries for ``cert``."""
    if selector == 0:
        data = cert.public_bytes(Encoding.DER)
    elif selector == 1:
        data = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    else:
        return None
    if mtype == 0:
        return data
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return None


def tlsa_matches(record: Mapping[str, Any] | Any, chain_pem_list: list[str]) -> bool:
    """True when the TLSA record (dict with usage/selector/mtype/data-hex, or a dnspython TLSA
    rdata) matches the served chain ``chain_pem_list`` (leaf first)."""
    usage = int(_field(record, "usage", "usage"))
    selector = int(_field(record, "selector", "selector"))
    mtype = int(_field(record, "mtype", "mtype"))
    data = _field(record, "data", "cert")
    want = bytes.fromhex(data) if isinstance(data, str) else bytes(data)
    certs: list[x509.Certificate | None] = []
    for pem in chain_pem_list:
        try:
            certs.append(x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem))
        except ValueError:
            certs.append(None)
    if not certs:
        return False
    if usage in (1, 3):
        candidates = certs[:1]
    elif usage in (0, 2):
        candidates = certs[1:]
    else:
        return False
    offset = 0 if usage in (1, 3) else 1
    for i, cert in enumerate(candidates, start=offset):
        if cert is not None and association(cert, selector, mtype) == want:
            # DANE-TA authenticates the leaf through the chain below the anchor (RFC 7671 5.2).
            if usage != 2 or _chain_to(certs, i):
                return True
    if usage == 2 and mtype == 0:
        # RFC 7671 5.2.2: a DANE-TA record that carries the whole trust anchor (certificate or
        # public key) lets the server leave the anchor out of its chain; it matches when the
        # anchor issued a certificate the server sent (as in OpenSSL and Postfix).
        return any(cert is not None and _issued_by(cert, selector, want) and _chain_to(certs, i)
                   for i, cert in enumerate(certs))
    return False


def _chain_to(certs: list[x509.Certificate | None], top: int) -> bool:
    """Each certificate from the leaf up to ``certs[top]`` is signed by the next one."""
    for child, parent in zip(certs[:top], certs[1:top + 1]):
        if child is None or parent is None:
            return False
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
    return True


def _issued_by(cert: x509.Certificate, selector: int, anchor: bytes) -> bool:
    """``cert`` is signed by the anchor: a DER certificate (selector 0: its subject must also be
    the issuer name) or a DER SubjectPublicKeyInfo (selector 1)."""
    try:
        if selector == 0:
            ta = x509.load_der_x509_certificate(anchor)
            if ta.subject != cert.issuer:
                return False
            key = ta.public_key()
        elif selector == 1:
            key = load_der_public_key(anchor)
        else:
            return False
        return _verify(key, cert)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _verify(key: Any, cert: x509.Certificate) -> bool:
    sig, tbs, algo = cert.signature, cert.tbs_certificate_bytes, cert.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algo is not None:
            key.verify(sig, tbs, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo is not None:
            key.verify(sig, tbs, ec.ECDSA(algo))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(sig, tbs)
        else:
            return False  # RSA-PSS, DSA and others: not matched rather than guessed
    except InvalidSignature:
        return False
    return True


def cert_days_left(pem: str, now: float) -> float | None:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None
    return (cert.not_valid_after_utc.timestamp() - now) / 86400.0


# -- fallback chain fetch ------------------------------------------------------------------------

MAX_LINE = 4096


def _read_reply(f: Any) -> list[str]:
    lines = []
    while True:
        line = f.readline(MAX_LINE)
        if not line:
            raise ConnectionError("connection closed")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-" or len(lines) > 200:
            return lines


def _fetch_chain_blocking(address: str, port: int, server_name: str, ehlo: str, timeout: float,
                          starttls: bool) -> list[str]:
    from OpenSSL import SSL, crypto  # local: only this fallback needs pyOpenSSL

    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        if starttls:
            f = sock.makefile("rb")
            if not _read_reply(f)[0].startswith("220"):
                raise ConnectionError("no 220 greeting")
            sock.sendall(f"EHLO {ehlo}\r\n".encode())
            _read_reply(f)
            sock.sendall(b"STARTTLS\r\n")
            if not _read_reply(f)[0].startswith("220"):
                raise ConnectionError("STARTTLS refused")
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_verify(SSL.VERIFY_NONE, lambda *a: True)  # DANE judges the chain, not PKIX
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(server_name.encode("idna"))
        conn.set_connect_state()
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                continue
        chain = conn.get_peer_cert_chain() or []
        pems = [crypto.dump_certificate(crypto.FILETYPE_PEM, c).decode() for c in chain]
        try:
            conn.shutdown()
        except SSL.Error:
            pass
        return pems
    finally:
        sock.close()


async def fetch_chain(address: str, port: int, server_name: str, *, ehlo: str = "smtpaudit.example.net",
                      timeout: float = 15.0, starttls: bool = True) -> list[str]:
    """The PEM chain the server presents after STARTTLS (or implicit TLS). Raises OSError /
    ConnectionError / OpenSSL errors on failure; the caller turns them into facts."""
    return await asyncio.wait_for(
        asyncio.to_thread(_fetch_chain_blocking, address, port, server_name, ehlo, timeout, starttls),
        timeout * 2,
    )
