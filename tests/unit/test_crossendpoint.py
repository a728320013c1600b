"""The cross-endpoint step: domain facts from the MX entries' certificate facts, failing closed."""

from __future__ import annotations

from smtpaudit.engine.crossendpoint import derive_domain_facts

OK = {"endpoint.host": "mx1.example.org", "tls.cert.trusted": True, "tls.cert.matches_host": True}
BAD = {"endpoint.host": "mx2.example.org", "tls.cert.trusted": True, "tls.cert.matches_host": False, "tls.cert.san": ["mail.example.net"]}
UNSEEN = {"endpoint.host": "mx3.example.org"}


def test_all_valid_gives_an_empty_verdict() -> None:
    assert derive_domain_facts([OK])["domain.mx.cert_invalid"] == []


def test_one_invalid_is_reported_even_when_another_mx_was_not_checked() -> None:
    out = derive_domain_facts([OK, BAD, UNSEEN])
    assert out["domain.mx.cert_invalid"] == ["mx2.example.org: names ['mail.example.net'] do not cover the MX name"]
    assert out["domain.mx.cert_unknown"] == ["mx3.example.org"]


def test_unchecked_mx_without_failures_leaves_the_verdict_absent() -> None:
    assert "domain.mx.cert_invalid" not in derive_domain_facts([OK, UNSEEN])
    assert "domain.mx.cert_invalid" not in derive_domain_facts([])


def test_untrusted_chain_is_invalid() -> None:
    out = derive_domain_facts([{**OK, "tls.cert.trusted": False, "tls.cert.verify_error": "self-signed certificate"}])
    assert out["domain.mx.cert_invalid"] == ["mx1.example.org: chain not trusted (self-signed certificate)"]
