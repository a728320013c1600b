"""OpenSMTPD 6.8 on OpenSSL 3, implicit TLS (port 465 style): the handshake never completes.

Before: the endpoint was "unreachable" and its TLS was never judged. Now the TLS probes still
run (a TLS port that answers hellos is reachable), tls-unusable is the one finding, the SMTP
rules are not evaluated (no session could be had) and the endpoint is incomplete, not graded.
"""

from __future__ import annotations

import json

import pytest

from smtpaudit.cli import main

pytestmark = pytest.mark.lab


def test_opensmtpd_smtps_reports_unusable_tls_not_unreachable(opensmtpd, tmp_path):
    target = opensmtpd.targets["smtps"]
    code = main(["scan", target, "-q", "-o", str(tmp_path / "r.json")])
    entry = json.loads((tmp_path / "r.json").read_text())["endpoints"][0]
    rules = {f["rule_id"] for f in entry["findings"]}
    assert code == 3 and entry["status"] == "incomplete" and entry["score"]["grade"] is None
    assert "tls-unusable" in rules and "starttls-broken" not in rules
    assert entry["facts"].get("tls.available") is False
    assert not any(r.startswith(("smtp", "auth", "open-relay")) for r in entry["passed"])
