"""Version-based CVE rules in the engine: preconditions from EHLO, active tests overriding the banner,
detection quality and the gate (score, caps and exit code ignore unreliable version guesses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpaudit.catalog import load_catalog
from smtpaudit.engine.evaluate import judge
from smtpaudit.engine.rules import RuleError, load_rules
from smtpaudit.engine.scoring import ScoredFinding, score_endpoint
from smtpaudit.engine.vulntable import expand_table
from smtpaudit.report.build import gate

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {name: spec.type for name, spec in load_catalog().facts.items()}


@pytest.fixture(scope="module")
def rules():
    return load_rules([ROOT / "rules"], KNOWN)


EXIM_496 = {
    "endpoint.role": "mx", "endpoint.mode": "starttls",
    "software.product": "exim", "software.version": "4.96", "software.distribution": None,
    "smtp.ehlo.keywords": ["SIZE", "PIPELINING", "CHUNKING", "STARTTLS"],
    "smtp.ehlo_tls.keywords": ["SIZE", "PIPELINING", "CHUNKING", "AUTH"],
    "smtp.starttls.offered": True,
    "smtp.auth.mechanisms": [], "smtp.auth.mechanisms_after_tls": ["PLAIN", "LOGIN"],
}


def outcome(rule, facts):
    return judge(rule, facts, fact_probe={}, probe_errors={})


def test_precondition_absent_means_not_applicable(rules):
    out = outcome(rules["cve-2023-42115"], EXIM_496)
    assert out.status == "not_applicable" and "AUTH EXTERNAL" in out.reason


def test_precondition_present_keeps_the_version_finding(rules):
    facts = {**EXIM_496, "smtp.auth.mechanisms_after_tls": ["PLAIN", "EXTERNAL"]}
    out = outcome(rules["cve-2023-42115"], facts)
    assert out.status == "finding" and out.detection_quality == 30 and out.gate is False


def test_precondition_unobserved_is_not_evaluated(rules):
    facts = {k: v for k, v in EXIM_496.items() if not k.startswith("smtp.auth")}
    out = outcome(rules["cve-2023-42116"], facts)
    assert out.status == "not_evaluated" and "smtp.auth.mechanisms" in out.missing


def test_precondition_irrelevant_when_version_is_fixed(rules):
    facts = {**EXIM_496, "software.version": "4.97", "smtp.auth.mechanisms": ["EXTERNAL"]}
    assert outcome(rules["cve-2023-42115"], facts).status == "passed"


def test_two_preconditions_must_both_hold(rules):
    facts = {**EXIM_496, "software.version": "4.98"}
    assert outcome(rules["cve-2026-45185"], facts).status == "finding"
    no_chunking = {**facts, "smtp.ehlo.keywords": ["STARTTLS"], "smtp.ehlo_tls.keywords": ["AUTH"]}
    out = outcome(rules["cve-2026-45185"], no_chunking)
    assert out.status == "not_applicable" and "CHUNKING" in out.reason


def test_active_test_that_showed_nothing_overrides_the_banner(rules):
    facts = {**EXIM_496, "smtp.smuggling.tested": True, "smtp.smuggling.accepted_producible": []}
    out = outcome(rules["cve-2023-51766"], facts)
    assert out.status == "passed" and "active test" in out.reason


def test_active_test_that_showed_the_flaw_confirms_it(rules):
    facts = {**EXIM_496, "software.version": "4.98", "smtp.smuggling.tested": True,
             "smtp.smuggling.accepted_producible": ["lf-dot-crlf"]}
    out = outcome(rules["cve-2023-51766"], facts)  # 4.98 is outside the range: the active result decides
    assert out.status == "finding" and out.confidence == "firm"
    assert out.detection_quality == 95 and out.detection_method == "remote_active" and out.gate is True
    assert "confirmed by the active smuggling test" in out.message


def test_active_test_not_run_leaves_the_version_guess(rules):
    facts = {**EXIM_496, "smtp.smuggling.tested": False}  # e.g. the recipient was refused
    out = outcome(rules["cve-2023-51766"], facts)
    assert out.status == "finding" and out.detection_method == "remote_banner_unreliable"


def test_active_test_on_another_product_does_not_confirm(rules):
    facts = {**EXIM_496, "software.product": "postfix", "software.version": "3.7.11",
             "smtp.smuggling.tested": True, "smtp.smuggling.accepted_producible": ["lf-dot-crlf"]}
    assert outcome(rules["cve-2023-51766"], facts).status == "passed"


def test_banner_of_unpatched_product_gates_until_it_names_a_distribution(rules):
    facts = {**EXIM_496, "software.product": "haraka", "software.version": "2.8.8"}
    out = outcome(rules["cve-2016-1000282"], facts)
    assert (out.detection_quality, out.detection_method, out.gate) == (80, "remote_banner", True)
    out = outcome(rules["cve-2016-1000282"], {**facts, "software.distribution": "debian"})
    assert (out.detection_quality, out.gate) == (30, False) and "debian" in out.message


def test_ordinary_rules_carry_no_quality_and_gate(rules):
    facts = {**EXIM_496, "software.version_source": "banner", "software.evidence": "220 mx ESMTP Exim 4.96"}
    out = outcome(rules["software-version-disclosed"], facts)
    assert out.status == "finding" and out.detection_quality is None and out.gate is True


def test_score_and_caps_ignore_non_gating_findings():
    guess = ScoredFinding("cve-x", "high", "tentative", grade_cap="C", title="guess", gate=False)
    real = ScoredFinding("tls-legacy-protocols", "medium", "certain", title="real")
    assert score_endpoint([guess]).to_json() == score_endpoint([]).to_json()
    assert score_endpoint([guess, real]).score == score_endpoint([real]).score
    assert score_endpoint([guess, real]).caps == []


def _report(*findings):
    return {"endpoints": [{"endpoint": {"id": "smtp://192.0.2.1:25"}, "status": "complete", "findings": list(findings)}]}


def test_exit_code_ignores_non_gating_findings():
    guess = {"rule_id": "cve-x", "severity": "high", "suppressed": None, "gate": False}
    assert gate(_report(guess), "low")["exit_code"] == 0
    assert gate(_report({**guess, "gate": True}), "low")["exit_code"] == 1
    assert gate(_report({k: v for k, v in guess.items() if k != "gate"}), "low")["exit_code"] == 1  # older reports


def test_table_errors_name_the_key(tmp_path):
    base = {"schema": 1, "vulnerability": [{
        "id": "CVE-2099-0001", "product": "exim", "title": "t", "summary": "s", "affected": ["<1"], "fixed": ["1"],
        "attack_surface": "smtp", "sources": ["https://example.org"], "requires": ["nope"]}]}
    with pytest.raises(RuleError, match=r"vulnerability\[0\]\.requires"):
        expand_table(base, tmp_path / "t.toml", KNOWN)
    bad_active = {**base, "active_test": {"x": {"probe": "smtp.smuggling", "ran": {"fact": "smtp.ehlo.keywords", "exists": True},
                                                 "confirms": {"fact": "smtp.smuggling.tested", "equals": True},
                                                 "method": "remote_active", "message": "m"}}}
    with pytest.raises(RuleError, match=r"active_test\.x\.ran"):
        expand_table(bad_active, tmp_path / "t.toml", KNOWN)


def _scan(*findings):
    entry = {"endpoint": {"id": "smtp://192.0.2.1:25", "url": "smtp://192.0.2.1:25"}, "status": "complete",
             "findings": list(findings), "passed": [], "not_applicable": [], "score": {"score": 100, "grade": "A+"}}
    return {"endpoints": [entry], "tool": {"version": "test"}, "ruleset": {"rules": {}}}


def test_diff_alert_ignores_new_non_gating_findings():
    from smtpaudit import diff as differ

    guess = {"rule_id": "cve-x", "title": "t", "severity": "high", "confidence": "tentative", "message": "m",
             "fingerprint": "0" * 16, "suppressed": None, "gate": False}
    result = differ.compare(_scan(), _scan(guess))
    assert result["totals"]["new"] == 1 and result["endpoints"][0]["new"][0]["gate"] is False
    assert not differ.has_new_at_or_above(result, "low")
    assert differ.has_new_at_or_above(differ.compare(_scan(), _scan({**guess, "gate": True})), "low")
