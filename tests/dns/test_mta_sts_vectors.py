"""MTA-STS conformance vectors, run through the dns.mta_sts probe and the dns rules: the TXT record
from a stub DNS (no network), the policy over real HTTPS from a loopback server whose certificate
a test CA issued (the probe validates it as it would on the Internet).

Sources, cited per vector: RFC 8461 section 3.1 (TXT record: "records that do not begin with
'v=STSv1;' are discarded", sts-id = 1*32(ALPHA / DIGIT), extension fields), 3.2 (policy: version,
mode, max_age <= 31557600, ``sts-policy-mx-value = ["*."] Domain``), 4.1 (MX host validation: a
wildcard matches exactly one leftmost label), 5 (mode none: no active policy).
"""

from __future__ import annotations

import http.server
import ssl
import threading
from typing import Any

import pytest

from smtpaudit.probes.dns import mtasts
from smtpaudit.probes.dns.probes import MtaStsProbe
from tests.dns.conftest import run_probe
from tests.dns.judging import findings
from tests.dns.stub_dns import StubZone

STS_RULES = {"mta-sts-missing", "mta-sts-invalid", "mta-sts-mx-not-covered", "mta-sts-not-enforced",
             "mta-sts-policy-unavailable"}
GOOD_TXT = "v=STSv1; id=20240101T000000"
MX_HOSTS = ["mx1.example.org", "mx2.example.org"]


def policy(mode: str = "enforce", mx: tuple[str, ...] = ("mx1.example.org", "*.example.org"), max_age: str = "604800",
           extra: str = "", eol: str = "\r\n") -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return eol.join(lines) + eol + extra


class PolicyServer:
    """HTTPS on 127.0.0.1 with a certificate for mta-sts.example.org; serves ``self.body``."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.body = policy()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                data = server.body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def https(tmp_path_factory):
    from tests.lab.dns_lab import Pki

    d = tmp_path_factory.mktemp("sts")
    pki = Pki.create(d)
    cert_file, key_file, _ = pki.issue(d, "mta-sts", ["mta-sts.example.org"])
    srv = PolicyServer(str(cert_file), str(key_file))
    yield srv, str(pki.ca_file)
    srv.stop()


def audit(txt_records: list[str], https=None, body: str | None = None) -> tuple[dict, set[str]]:
    zone = StubZone({"_mta-sts.example.org": [{"TXT": t} for t in txt_records],
                     "mta-sts.example.org": [{"A": "127.0.0.1"}]})
    options: dict[str, Any] = {"resolver": "127.0.0.1:53"}
    if https is not None:
        srv, ca_file = https
        srv.body = body if body is not None else policy()
        options.update(mta_sts_ca_file=ca_file, mta_sts_port=srv.port)
    with zone.installed():
        r = run_probe(MtaStsProbe(), "domain:example.org", options, prior={"dns.mx.hosts": MX_HOSTS})
    assert r.status == "ok", r.error_message
    facts = {**r.facts, "dns.mx.null": False, "dns.domain": "example.org"}
    return facts, findings(facts) & STS_RULES


# RFC 8461 3.1. Each: (id, TXT records, record_count, expected findings). A TXT that counts but
# has no policy server behind it (https=None) also gives mta-sts-policy-unavailable.
TXT_VECTORS = [
    ("valid", [GOOD_TXT], 1, set()),
    ("trailing-delimiter", ["v=STSv1; id=abc123;"], 1, set()),
    ("extension-field", ["v=STSv1; id=abc123; ext_1.x=some-value"], 1, set()),
    ("bare-version-discarded", ["v=STSv1"], 0, {"mta-sts-missing"}),
    ("bare-version-beside-valid", ["v=STSv1", GOOD_TXT], 1, set()),
    ("version-case-discarded", ["v=stsv1; id=abc123"], 0, {"mta-sts-missing"}),
    ("space-before-semicolon-discarded", ["v=STSv1 ; id=abc123"], 0, {"mta-sts-missing"}),
    ("two-valid-records", [GOOD_TXT, "v=STSv1; id=other1"], 2, {"mta-sts-invalid"}),
    ("id-missing", ["v=STSv1; ext=x"], 1, {"mta-sts-invalid"}),
    ("id-empty", ["v=STSv1; id="], 1, {"mta-sts-invalid"}),
    ("id-33-chars", ["v=STSv1; id=" + "a" * 33], 1, {"mta-sts-invalid"}),
    ("id-hyphen", ["v=STSv1; id=2024-01-01"], 1, {"mta-sts-invalid"}),
    ("id-twice", ["v=STSv1; id=a1; id=b2"], 1, {"mta-sts-invalid"}),
    ("extension-name-invalid", ["v=STSv1; id=a1; bad name=x"], 1, {"mta-sts-invalid"}),
]


@pytest.mark.parametrize("records, count, expected", [v[1:] for v in TXT_VECTORS], ids=[v[0] for v in TXT_VECTORS])
def test_mta_sts_txt_vectors(https, records, count, expected):
    facts, got = audit(records, https)
    assert facts["mta_sts.txt.record_count"] == count
    assert got == expected, (facts["mta_sts.txt.errors"], facts["mta_sts.policy.errors"])


# RFC 8461 3.2 / 4.1 / 5: (id, policy body, expected findings)
POLICY_VECTORS = [
    ("valid-enforce", policy(), set()),
    ("lf-line-endings", policy(eol="\n"), set()),
    ("unknown-field-ignored", policy(extra="note: anything\r\n"), set()),
    ("testing", policy(mode="testing"), {"mta-sts-not-enforced"}),
    ("mode-case-sensitive", policy(mode="Enforce"), {"mta-sts-invalid"}),
    ("version-2", policy().replace("STSv1", "STSv2"), {"mta-sts-invalid"}),
    ("max-age-one-year", policy(max_age="31557600"), set()),
    ("max-age-over-one-year", policy(max_age="31557601"), {"mta-sts-invalid"}),
    ("max-age-not-number", policy(max_age="1w"), {"mta-sts-invalid"}),
    ("max-age-11-digits", policy(max_age="00000000001"), {"mta-sts-invalid"}),
    ("mx-star-inside-label", policy(mx=("foo*.example.org", "mx1.example.org", "mx2.example.org")), {"mta-sts-invalid"}),
    ("mx-double-wildcard", policy(mx=("*.*.example.org", "*.example.org")), {"mta-sts-invalid"}),
    ("mx-leading-hyphen", policy(mx=("-mail.example.org", "*.example.org")), {"mta-sts-invalid"}),
    ("mx-underscore", policy(mx=("mx_1.example.org", "*.example.org")), {"mta-sts-invalid"}),
    ("mx-empty-label", policy(mx=("mx1..example.org", "*.example.org")), {"mta-sts-invalid"}),
    ("mx-not-covered", policy(mx=("mx1.example.org",)), {"mta-sts-mx-not-covered"}),
    ("mx-wildcard-one-label-only", policy(mx=("*.org",)), {"mta-sts-mx-not-covered"}),
    ("mx-not-covered-testing", policy(mode="testing", mx=("mx1.example.org",)),
     {"mta-sts-mx-not-covered", "mta-sts-not-enforced"}),
    ("mode-none-uncovered-is-fine", policy(mode="none", mx=("mail.example.net",)), {"mta-sts-not-enforced"}),
    ("no-mx-in-enforce", policy(mx=()), {"mta-sts-invalid", "mta-sts-mx-not-covered"}),
]


@pytest.mark.parametrize("body, expected", [v[1:] for v in POLICY_VECTORS], ids=[v[0] for v in POLICY_VECTORS])
def test_mta_sts_policy_vectors(https, body, expected):
    facts, got = audit([GOOD_TXT], https, body)
    assert facts["mta_sts.policy.fetched"] is True, facts["mta_sts.policy.fetch_message"]
    assert got == expected, facts["mta_sts.policy.errors"]


# RFC 8461 4.1: (pattern, host, matches)
MATCH_VECTORS = [
    ("mx1.example.org", "mx1.example.org", True),
    ("mx1.example.org", "MX1.Example.ORG.", True),  # DNS names compare case-insensitively
    ("*.example.org", "mx1.example.org", True),
    ("*.example.org", "a.mx1.example.org", False),  # one label only
    ("*.example.org", "example.org", False),
    ("*.example.org", "mx1.example.net", False),
    ("mx1.example.org", "mx2.example.org", False),
]


@pytest.mark.parametrize("pattern, host, ok", MATCH_VECTORS)
def test_mta_sts_mx_matching_vectors(pattern, host, ok):
    assert mtasts.mx_matches(pattern, host) is ok
