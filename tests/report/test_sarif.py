"""SARIF output: schema-valid, shaped for GitHub code scanning, stable fingerprints, accepted by the Multitool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smtpaudit.engine.severity import SARIF_LEVEL
from smtpaudit.report import sarif
from tests.fakes.smtp import ThreadedFake
from tests.report.conftest import assert_valid_sarif, multitool_findings, run_cli, scan_to, weak_fake


def _targets_file(tmp_path: Path, *lines: str) -> Path:
    f = tmp_path / "targets.txt"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_sarif_from_a_fleet_file_is_valid_and_located_on_target_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ThreadedFake(weak_fake()) as a, ThreadedFake(weak_fake("b.example.test ESMTP")) as b:
        targets = _targets_file(tmp_path, "# fleet", f"{a.target}", "", f"{b.target}", "127.0.0.1:1")
        code, report = scan_to(tmp_path / "scan.json", "-f", "targets.txt", extra=("--rule", "auth-before-starttls",
                               "--rule", "vrfy-discloses-users", "--rule", "software-version-disclosed"))
    assert code == 3  # 127.0.0.1:1 refused
    log = sarif.render(report, srcroot=tmp_path)
    assert_valid_sarif(log)
    run = log["runs"][0]
    results = run["results"]
    assert results, "the weak fakes must give findings"
    line_of = {a.target: 2, b.target: 4}
    for r in results:
        ep = r["properties"]["endpoint"]
        loc = r["locations"][0]
        assert loc["physicalLocation"]["artifactLocation"]["uri"] == "targets.txt"
        assert loc["physicalLocation"]["region"] == {"startLine": line_of[ep], "startColumn": 1, "endLine": line_of[ep], "endColumn": 2}
        assert loc["logicalLocations"][0] == {"name": ep, "fullyQualifiedName": f"smtp://{ep}", "kind": "resource"}
        assert ep in r["message"]["text"]
        sev = r["properties"]["severity"]
        # a tentative finding sits one level below a confirmed one of the same severity
        expected = SARIF_LEVEL[sev] if r["properties"]["confidence"] != "tentative" else {"error": "warning", "warning": "note", "note": "note"}[SARIF_LEVEL[sev]]
        assert r["level"] == expected
        assert run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
    # one descriptor per rule used, each with what GitHub reads
    used = {r["ruleId"] for r in results}
    rules = run["tool"]["driver"]["rules"]
    assert {d["id"] for d in rules} == used and len(rules) == len(used)
    for d in rules:
        assert d["shortDescription"]["text"] and d["fullDescription"]["text"] and d["help"]["text"]
        assert "**Remediation:**" in d["help"]["markdown"]
        assert "security" in d["properties"]["tags"] and len(d["properties"]["tags"]) <= 20
        sev = d["properties"]["security-severity"]
        assert isinstance(sev, str) and not 8.9 < float(sev) <= 9.0
        assert d["properties"]["precision"] in ("very-high", "high", "medium")
    # fingerprints distinct per rule and endpoint
    fps = [r["partialFingerprints"]["primaryLocationLineHash"] for r in results]
    assert len(set(fps)) == len(fps)
    assert run["automationDetails"]["id"].startswith("smtpaudit/targets/")
    inv = run["invocations"][0]
    assert inv["executionSuccessful"] is False
    notes = inv["toolExecutionNotifications"]
    assert [n["locations"][0]["logicalLocations"][0]["name"] for n in notes if n["descriptor"]["id"] == "endpoint-not-scanned"] == ["127.0.0.1:1"]


def test_two_scans_give_identical_fingerprints(tmp_path):
    with ThreadedFake(weak_fake()) as a:
        _, r1 = scan_to(tmp_path / "1.json", a.target)
        _, r2 = scan_to(tmp_path / "2.json", a.target)
    fp = lambda r: sorted((x["ruleId"], json.dumps(x["partialFingerprints"], sort_keys=True)) for x in sarif.render(r)["runs"][0]["results"])  # noqa: E731
    assert fp(r1) == fp(r2) and fp(r1)


def test_cli_targets_use_an_embedded_virtual_targets_artifact(tmp_path):
    with ThreadedFake(weak_fake()) as a:
        _, report = scan_to(tmp_path / "s.json", a.target, "127.0.0.1:1")
    log = sarif.render(report)
    assert_valid_sarif(log)
    run = log["runs"][0]
    art = run["artifacts"][0]
    assert art["location"]["uri"] == sarif.VIRTUAL_TARGETS
    assert art["contents"]["text"] == f"{a.target}\n127.0.0.1:1\n"
    assert {r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in run["results"]} == {1}
    assert run["automationDetails"]["id"].startswith("smtpaudit/cli/")


def test_artifact_override_and_suppressions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "main.cf").write_text("smtpd_banner = $myhostname ESMTP\n")
    with ThreadedFake(weak_fake()) as a:
        baseline = tmp_path / "baseline.toml"
        baseline.write_text(f'version = 1\n[[accept]]\nrule = "software-version-disclosed"\nendpoint = "{a.target}"\njustification = "banner kept for a partner"\n')
        code = run_cli("scan", a.target, "-q", "--format", "sarif", "-o", "out.sarif", "--sarif-artifact", "etc/main.cf:1",
                       "--baseline", str(baseline))
    log = json.loads((tmp_path / "out.sarif").read_text())
    assert_valid_sarif(log)
    results = log["runs"][0]["results"]
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "etc/main.cf" for r in results)
    sup = [r for r in results if r.get("suppressions")]
    assert [r["ruleId"] for r in sup] == ["software-version-disclosed"]
    assert sup[0]["suppressions"][0] == {"kind": "external", "status": "accepted", "justification": "banner kept for a partner",
                                         "properties": {"source": str(baseline), "entry": 1, "pattern": a.target}}
    assert code == 1


def test_multitool_github_rules_report_zero_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ThreadedFake(weak_fake()) as a:
        _targets_file(tmp_path, a.target, "127.0.0.1:1")
        baseline = tmp_path / "b.toml"
        baseline.write_text('version = 1\n[[accept]]\nrule = "vrfy-discloses-users"\nendpoint = "*"\njustification = "test"\n'
                            '[[accept]]\nrule = "expn-discloses-lists"\nendpoint = "*"\njustification = "old"\nexpires = 2001-01-01\n')
        run_cli("scan", "-f", "targets.txt", "-q", "--format", "sarif", "-o", "fleet.sarif", "--baseline", str(baseline),
                "--connect-timeout", "2")
    log = json.loads((tmp_path / "fleet.sarif").read_text())
    assert_valid_sarif(log)
    assert log["runs"][0]["invocations"][0]["toolConfigurationNotifications"]
    found = multitool_findings(tmp_path / "fleet.sarif", tmp_path)
    errors = [r for r in found if r.get("level") == "error"]
    warnings = [r for r in found if r.get("level") == "warning"]
    assert not errors, json.dumps(errors[:5], indent=1)
    assert not warnings, json.dumps(warnings[:5], indent=1)


@pytest.mark.lab
def test_sarif_of_the_insecure_lab_exim_is_stable_across_scans(exim_insecure, tmp_path, monkeypatch):
    # Exim, not Postfix: the lab's Dovecot penalises a client IP after a failed AUTH, so a second
    # Postfix scan right after the first may legitimately see a different AUTH outcome.
    monkeypatch.chdir(tmp_path)
    _targets_file(tmp_path, exim_insecure.targets["smtp"], exim_insecure.targets["smtps"])
    _, r1 = scan_to(tmp_path / "1.json", "-f", "targets.txt")
    _, r2 = scan_to(tmp_path / "2.json", "-f", "targets.txt")
    logs = [sarif.render(r) for r in (r1, r2)]
    for log in logs:
        assert_valid_sarif(log)
    fps = [{(x["ruleId"], x["properties"]["endpoint"]): x["partialFingerprints"]["primaryLocationLineHash"] for x in log["runs"][0]["results"]} for log in logs]
    assert fps[0] == fps[1] and len(fps[0]) >= 5
    assert len(set(fps[0].values())) == len(fps[0])
    (tmp_path / "lab.sarif").write_text(json.dumps(logs[0]))
    found = multitool_findings(tmp_path / "lab.sarif", tmp_path)
    assert not [r for r in found if r.get("level") == "error"]


def test_tentative_cve_matches_are_one_level_lower_and_grouped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ThreadedFake(weak_fake()) as a:  # banner Exim 4.91: many version-based CVE matches
        _, report = scan_to(tmp_path / "r.json", a.target)
    log = sarif.render(report)
    assert_valid_sarif(log)
    results = log["runs"][0]["results"]
    cves = [r for r in results if r["ruleId"].startswith("cve-")]
    assert len(cves) >= 2
    assert all(r["properties"]["group"] == "exim 4.91 version-based CVEs" for r in cves)
    # a high CVE guess is a warning; the confirmed high finding of the same scan stays an error
    assert {r["level"] for r in cves if r["properties"]["severity"] == "high"} == {"warning"}
    confirmed = [r for r in results if r["ruleId"] == "auth-before-starttls"]
    assert confirmed and confirmed[0]["level"] == "error"
    # results follow the ranking: the confirmed high finding before any tentative one of its severity
    order = [r["ruleId"] for r in results]
    assert order.index("auth-before-starttls") < min(order.index(r["ruleId"]) for r in cves if r["properties"]["severity"] == "high")
    rules = {d["id"]: d for d in log["runs"][0]["tool"]["driver"]["rules"]}
    assert "one group" in rules[cves[0]["ruleId"]]["help"]["text"] and "**Grouping:**" in rules[cves[0]["ruleId"]]["help"]["markdown"]
    assert "one group" not in rules["auth-before-starttls"]["help"]["text"]
