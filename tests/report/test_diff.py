"""`smtpaudit diff`: new, fixed, unchanged and unverified findings, grade changes, and the nightly exit code."""

from __future__ import annotations

import json

import pytest

from smtpaudit import diff as differ
from tests.fakes.smtp import ThreadedFake
from tests.report.conftest import run_cli, scan_to, weak_fake

RULES = ("--rule", "vrfy-discloses-users", "--rule", "software-version-disclosed", "--rule", "auth-before-starttls")


@pytest.mark.lab
def test_finding_fixed_after_the_lab_server_config_changes(exim_insecure, lab_reconfigure, tmp_path, capsys):
    target = exim_insecure.targets["smtp"]
    _, old = scan_to(tmp_path / "old.json", target, extra=RULES)
    old_ids = {f["rule_id"] for f in old["endpoints"][0]["findings"]}
    assert {"vrfy-discloses-users", "software-version-disclosed", "auth-before-starttls"} <= old_ids
    # The admin turns VRFY off and hides the version; AUTH before TLS stays.
    lab_reconfigure(exim_insecure, ALLOW_VRFY=None, smtp_banner="$smtp_active_hostname ESMTP")
    _, new = scan_to(tmp_path / "new.json", target, extra=RULES)

    result = differ.compare(old, new)
    ep = result["endpoints"][0]
    assert {f["rule_id"] for f in ep["fixed"]} == {"vrfy-discloses-users", "software-version-disclosed"}
    assert {f["rule_id"] for f in ep["unchanged"]} == {"auth-before-starttls"}
    assert ep["new"] == [] and ep["unverified"] == []
    assert ep["grade"]["old"] != ep["grade"]["new"] or ep["score"]["new"] > ep["score"]["old"]

    capsys.readouterr()
    assert run_cli("diff", tmp_path / "old.json", tmp_path / "new.json") == 0
    out = capsys.readouterr().out
    assert "- FIXED   MEDIUM   vrfy-discloses-users" in out and "fixed: 2" in out
    # Backwards (the config regressed): the two come back as new, and the nightly alert fires.
    assert run_cli("diff", tmp_path / "new.json", tmp_path / "old.json", "--fail-on", "medium") == 1
    assert run_cli("diff", tmp_path / "new.json", tmp_path / "old.json", "--fail-on", "high") == 0
    assert run_cli("diff", tmp_path / "new.json", tmp_path / "old.json", "--format", "json", "-o", tmp_path / "d.json", "--fail-on", "critical") == 0
    assert json.loads((tmp_path / "d.json").read_text())["totals"]["new"] == 2


def test_unreachable_endpoint_is_unverified_not_fixed(tmp_path):
    fake = ThreadedFake(weak_fake())
    srv = fake.__enter__()
    target = srv.target
    try:
        _, old = scan_to(tmp_path / "old.json", target, extra=RULES)
    finally:
        fake.__exit__(None, None, None)
    code, new = scan_to(tmp_path / "new.json", target, extra=RULES)  # the server is gone
    assert code == 3 and new["endpoints"][0]["status"] == "unreachable"
    result = differ.compare(old, new)
    ep = result["endpoints"][0]
    assert ep["fixed"] == [] and {f["rule_id"] for f in ep["unverified"]} == {f["rule_id"] for f in old["endpoints"][0]["findings"]}
    assert result["totals"]["fixed"] == 0


def test_rule_dropped_or_not_evaluated_is_unverified(tmp_path):
    with ThreadedFake(weak_fake()) as srv:
        _, old = scan_to(tmp_path / "old.json", srv.target, extra=RULES)
        _, new = scan_to(tmp_path / "new.json", srv.target, extra=("--rule", "auth-before-starttls"))
    ep = differ.compare(old, new)["endpoints"][0]
    assert {f["rule_id"] for f in ep["unverified"]} == {"vrfy-discloses-users", "software-version-disclosed"}
    assert ep["fixed"] == []


def test_added_and_removed_endpoints(tmp_path):
    with ThreadedFake(weak_fake()) as a, ThreadedFake(weak_fake()) as b:
        _, old = scan_to(tmp_path / "old.json", a.target, extra=RULES)
        _, new = scan_to(tmp_path / "new.json", b.target, extra=RULES)
    result = differ.compare(old, new)
    changes = {e["endpoint"]: e["change"] for e in result["endpoints"]}
    assert changes == {b.target: "added", a.target: "removed"}
    assert differ.has_new_at_or_above(result, "high")
