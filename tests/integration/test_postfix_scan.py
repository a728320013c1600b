"""The foundation against a real Postfix: the insecure instance yields its findings, the hardened one none of them."""

from __future__ import annotations

import json
import time

import pytest

from smtpaudit.cli import main
from tests.report_schema import assert_valid_report

pytestmark = pytest.mark.lab

FOUNDATION_RULES = ["auth-before-starttls", "plaintext-auth-accepted", "vrfy-discloses-users", "expn-discloses-lists",
                    "software-version-disclosed", "starttls-not-offered", "starttls-broken"]


def scan(target: str, tmp_path, *extra: str) -> tuple[int, dict, float]:
    out = tmp_path / f"{target.replace(':', '_').replace('/', '_')}.json"
    args = ["scan", target, "-o", str(out), "-q", "--ehlo-name", "scanner.example.net"]
    for rid in FOUNDATION_RULES:
        args += ["--rule", rid]
    t0 = time.monotonic()
    code = main([*args, *extra])
    elapsed = time.monotonic() - t0
    report = json.loads(out.read_text())
    assert_valid_report(report)
    return code, report, elapsed


def test_insecure_postfix_findings(postfix_insecure, tmp_path):
    code, report, elapsed = scan(f"{postfix_insecure.host}:{postfix_insecure.ports['smtp']}", tmp_path)
    entry = report["endpoints"][0]
    assert entry["status"] == "complete", entry["status_reasons"]
    ids = {f["rule_id"] for f in entry["findings"]}
    assert {"auth-before-starttls", "plaintext-auth-accepted", "vrfy-discloses-users", "software-version-disclosed"} <= ids, ids
    assert entry["facts"]["software.product"] == "postfix" and entry["facts"]["software.version"]
    assert entry["facts"]["smtp.starttls.works"] is True
    assert code == 1
    assert elapsed < 30, f"scan of the real Postfix took {elapsed:.1f}s"


def test_hardened_postfix_has_none_of_them(postfix_hardened, tmp_path):
    code, report, _ = scan(f"{postfix_hardened.host}:{postfix_hardened.ports['smtp']}", tmp_path)
    entry = report["endpoints"][0]
    assert entry["status"] == "complete", entry["status_reasons"]
    assert entry["findings"] == [], entry["findings"]
    assert entry["not_evaluated"] == []
    f = entry["facts"]
    assert f["smtp.starttls.works"] is True and f["smtp.auth.mechanisms_before_tls"] == []
    assert f["smtp.auth.mechanisms_after_tls"], "AUTH must be offered after STARTTLS"
    assert f["smtp.auth.plaintext_probe"] in ("encryption_required", "not_supported")
    assert f["software.product"] == "postfix" and f["software.version"] is None
    assert code == 0
    assert entry["score"]["grade"] == "A+"


def test_hardened_postfix_submission_and_smtps(postfix_hardened, tmp_path):
    host = postfix_hardened.host
    code, report, _ = scan(f"submission://{host}:{postfix_hardened.ports['submission']}", tmp_path)
    assert report["endpoints"][0]["findings"] == []
    code, report, _ = scan(f"smtps://{host}:{postfix_hardened.ports['smtps']}", tmp_path)
    entry = report["endpoints"][0]
    assert entry["status"] == "complete" and entry["facts"]["smtp.implicit_tls"] is True
    assert entry["facts"]["smtp.tls.version"] in ("TLSv1.2", "TLSv1.3")
    assert "starttls-not-offered" in entry["not_applicable"]
