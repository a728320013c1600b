"""Certificate chain analysis with ``cryptography`` (pure, no network): validity, names, keys,
signatures, chain order, and verification against the system trust store.

Input is the chain exactly as the server sent it (DER, leaf first); output is plain facts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtensionOID, NameOID


def load_chain(ders: list[bytes]) -> tuple[list[x509.Certificate], list[str]]:
    """Parse each DER certificate; unparsable ones are reported, not fatal."""
    certs: list[x509.Certificate] = []
    errors: list[str] = []
    for i, der in enumerate(ders):
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            errors.append(f"certificate #{i} does not parse: {exc}")
    return certs, errors


def _names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) from the SAN; the CN is used only when there is no SAN (RFC 6125 6.4.4)."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
        return dns, ips
    except (x509.ExtensionNotFound, ValueError):
        cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return [str(c).lower() for c in cns], []


def name_matches(host: str, dns_names: list[str], ips: list[str]) -> bool:
    """RFC 6125: exact match, or a wildcard as the whole left-most label ("*.example.com")."""
    try:
        return str(ipaddress.ip_address(host)) in ips
    except ValueError:
        pass
    host = host.rstrip(".").lower()
    for pattern in dns_names:
        pattern = pattern.rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host:
            head, _, rest = host.partition(".")
            if rest == pattern[2:] and head and rest.count(".") >= 1:
                return True
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def key_info(cert: x509.Certificate) -> tuple[str, int | None, str | None]:
    try:
        key = cert.public_key()
    except (ValueError, TypeError):
        return "unknown", None, None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, None
    return type(key).__name__, None, None


def signature_hash(cert: x509.Certificate) -> str | None:
    try:
        h = cert.signature_hash_algorithm
    except Exception:  # noqa: BLE001 - unsupported algorithms raise various errors
        return None
    return h.name if h is not None else None


def _when(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify_chain(certs: list[x509.Certificate], host: str | None, now: dt.datetime,
                 ca_file: str | None = None) -> tuple[bool | None, str | None]:
    """Verify with OpenSSL (pyOpenSSL) against the system trust store (plus ``ca_file``, a private
    CA bundle the user trusts), as an MTA would; no hostname check here."""
    try:
        from OpenSSL import crypto
    except ImportError:
        return None, "pyOpenSSL is not installed"
    if not certs:
        return False, "no certificate"
    try:
        from OpenSSL import SSL

        # set_default_verify_paths is the portable way to reach the system bundle.
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_default_verify_paths()
        if ca_file:
            ctx.load_verify_locations(ca_file)
        store = ctx.get_cert_store()
    except Exception:  # noqa: BLE001 - trust store problems are reported as unverifiable
        store = None
    if store is None:
        return None, "cannot load the system trust store"
    store.set_time(now.replace(tzinfo=None))
    leaf = crypto.X509.from_cryptography(certs[0])
    chain = [crypto.X509.from_cryptography(c) for c in certs[1:]]
    try:
        crypto.X509StoreContext(store, leaf, chain).verify_certificate()
    except crypto.X509StoreContextError as exc:
        return False, str(exc)
    return True, None


def analyse(
    ders: list[bytes],
    *,
    host: str,
    banner_names: list[str],
    now: dt.datetime | None = None,
    verify: bool = True,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """Facts about the served chain (names as in ``smtpaudit/facts/tls.cert.toml``)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    certs, errors = load_chain(ders)
    f: dict[str, Any] = {"tls.cert.parse_errors": errors}
    f["tls.cert.chain_length"] = len(ders)
    if not certs:
        # Nothing to judge: the certificate facts stay absent (rules "not evaluated"), never null
        # (a null would make "expired = true" read as false and the rule pass).
        return f
    f["tls.cert.chain_pem"] = [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs]
    leaf = certs[0]
    f["tls.cert.subject"] = leaf.subject.rfc4514_string()
    f["tls.cert.issuer"] = leaf.issuer.rfc4514_string()
    nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    f["tls.cert.not_before"] = _when(nb)
    f["tls.cert.not_after"] = _when(na)
    f["tls.cert.days_left"] = int((na - now).total_seconds() // 86400)
    f["tls.cert.expired"] = now > na
    f["tls.cert.not_yet_valid"] = now < nb
    f["tls.cert.self_signed"] = leaf.issuer == leaf.subject and _signed_by(leaf, leaf)
    dns, ips = _names(leaf)
    f["tls.cert.san"] = dns + ips
    f["tls.cert.matches_host"] = name_matches(host, dns, ips)
    # The names a client could rightly check: the scanned name; for an IP target (no name given)
    # also the names the server gives for itself, since a sender reached it under one of those.
    tried = [host] + (banner_names if _is_ip(host) else [])
    fits = [n for n in tried if name_matches(n, dns, ips)]
    f["tls.cert.names_tried"] = tried
    f["tls.cert.matched_name"] = fits[0] if fits else None
    f["tls.cert.matches_any"] = bool(fits)
    usable = [n for n in banner_names if n]
    f["tls.cert.matches_banner"] = all(name_matches(n, dns, ips) for n in usable) if usable else None
    f["tls.cert.wildcard"] = any(n.startswith("*.") for n in dns)
    ktype, kbits, kcurve = key_info(leaf)
    f["tls.cert.key_type"] = ktype
    f["tls.cert.key_bits"] = kbits
    f["tls.cert.key_curve"] = kcurve
    f["tls.cert.signature_hash"] = signature_hash(leaf)
    f["tls.cert.signature_algorithm"] = getattr(leaf.signature_algorithm_oid, "_name", None) or leaf.signature_algorithm_oid.dotted_string
    # Each certificate must be issued by the next one (RFC 8446 4.4.2 relaxes this, but MTAs built on
    # older stacks still fail on a shuffled chain).
    f["tls.cert.chain_order_ok"] = all(certs[i].issuer == certs[i + 1].subject for i in range(len(certs) - 1))
    # A weak signature matters on every certificate but the (self-signed) root, whose signature nobody checks.
    weak = []
    for c in certs:
        if c.issuer == c.subject:
            continue
        h = signature_hash(c)
        if h in ("md5", "sha1", "md2", "md4"):
            weak.append(h)
    f["tls.cert.weak_signature_in_chain"] = sorted(set(weak))
    f["tls.cert.sha256"] = leaf.fingerprint(hashes.SHA256()).hex()
    if verify:
        trusted, err = verify_chain(certs, host, now, ca_file)
    else:
        trusted, err = None, "verification not requested"
    f["tls.cert.trusted"] = trusted
    f["tls.cert.verify_error"] = err
    return f


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """The issuer's key verifies the certificate's signature, whatever its hash (SHA-1 and MD5
    included: ``verify_directly_issued_by`` refuses those by policy, which is not the question)."""
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, unsupported hash or key: check by hand below
        pass
    try:
        key = issuer.public_key()
        sig, tbs = cert.signature, cert.tbs_certificate_bytes
        h = cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey):
            pad = cert.signature_algorithm_parameters
            key.verify(sig, tbs, pad if pad is not None else padding.PKCS1v15(), h)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, tbs, ec.ECDSA(h))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(sig, tbs, h)
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(sig, tbs)
        else:
            return _self_issued_by_ids(cert, issuer)
        return True
    except InvalidSignature:
        return False
    except Exception:  # noqa: BLE001 - a hash this library cannot compute (MD2, MD4): fall back to key ids
        return _self_issued_by_ids(cert, issuer)


def _self_issued_by_ids(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Without a checkable signature: same names and the authority key id (if any) is the
    issuer's own subject key id."""
    if cert.issuer != issuer.subject:
        return False
    try:
        aki = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return True
    try:
        ski = issuer.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return True
    return aki is None or aki == ski
