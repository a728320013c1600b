"""--ca-file: a private CA the user trusts makes its certificates verify, on top of the system store."""

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smtpaudit.probes.tls import certs
from tests.fakes.certs import self_signed


def test_private_ca_is_trusted_only_when_given(tmp_path):
    cert_path, _ = self_signed(tmp_path, "mail.example.test")
    der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    without = certs.analyse([der], host="mail.example.test", banner_names=[])
    assert without["tls.cert.trusted"] is False
    with_ca = certs.analyse([der], host="mail.example.test", banner_names=[], ca_file=str(cert_path))
    assert with_ca["tls.cert.trusted"] is True and with_ca["tls.cert.verify_error"] is None
