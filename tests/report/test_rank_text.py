"""Ranking, grouping and the terminal summary: confirmed first, CVE guesses as one group, causes not rules."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from smtpaudit import diff as differ
from smtpaudit.report import rank, text


def _f(rule_id: str, severity: str, score: float, confidence: str = "certain", *, cve: str | None = None) -> dict:
    tags = ["software", "cve", "version-based", "exim"] if cve else ["smtp"]
    facts = {"software.product": "exim", "software.version": cve} if cve else {"x": 1}
    return {"rule_id": rule_id, "title": rule_id, "severity": severity, "score": score, "confidence": confidence,
            "family": "software" if cve else "smtp", "tags": tags, "message": f"msg {rule_id}",
            "evidence": {"facts": facts, "probes": ["smtp.session"]}, "fingerprint": rule_id, "suppressed": None}


def _entry(findings, not_evaluated=(), status="scanned", grade="F") -> dict:
    return {"endpoint": {"id": "127.0.0.1:25", "url": "smtp://127.0.0.1:25"}, "status": status, "error": None,
            "facts": {"software.product": "exim", "software.version": "4.91"}, "findings": list(findings),
            "not_evaluated": list(not_evaluated), "passed": [], "probes": [],
            "score": {"score": 10, "grade": grade, "complete": not not_evaluated,
                      "caps": [{"rule_id": "a-crit", "cap": "F", "reason": "long text"}, {"rule_id": "b-relay", "cap": "D", "reason": "x"}]}}


def test_order_is_severity_then_confirmed_then_score():
    fs = [_f("cve-1", "high", 8.9, "tentative", cve="4.91"), _f("relay", "high", 8.0, "tentative"),
          _f("starttls", "high", 7.5, "firm"), _f("auth", "high", 7.0, "certain"), _f("crit", "critical", 9.1),
          _f("vrfy", "medium", 5.0)]
    order = [f["rule_id"] for f in rank.rank_findings(fs)]
    assert order[0] == "crit" and set(order[1:3]) == {"starttls", "auth"} and order[3:] == ["cve-1", "relay", "vrfy"]


def test_version_based_matches_of_one_product_version_form_one_group():
    fs = [_f("cve-2019-1", "high", 8.9, "tentative", cve="4.91"), _f("cve-2020-2", "medium", 6.0, "tentative", cve="4.91"),
          _f("cve-2021-3", "low", 3.0, "tentative", cve="4.91"), _f("auth", "high", 7.0), _f("cve-2022-4", "high", 8.1, "tentative", cve="4.96")]
    items = rank.group_items(fs)
    assert [i.rule_id for i in items] == ["auth", "exim-4.91-cves", "cve-2022-4"]  # a lone match stays a finding
    g = items[1].group
    assert g["count"] == 3 and g["ids"] == ["CVE-2019-1", "CVE-2020-2", "CVE-2021-3"] and g["max_score"] == 8.9
    assert items[1].message.startswith("exim 4.91: 3 known CVEs by version (1 high, 1 medium, 1 low), highest score 8.9 (CVE-2019-1)")


def test_not_evaluated_grouped_by_cause_from_the_contract_or_the_reason_text():
    nes = [{"rule_id": f"r{i}", "reason": f"missing facts f{i} (probe smtp.session failed: deadline: endpoint deadline of 3 s)",
            "missing": [f"f{i}"], "cause": {"probe": "smtp.session", "reason": "deadline"}} for i in range(91)]
    nes += [{"rule_id": "t1", "reason": "missing facts tls.cert.x (probe tls.cert failed: tls_handshake: alert internal error)", "missing": []},
            {"rule_id": "t2", "reason": "missing facts tls.cert.y (probe tls.cert failed: tls_handshake: alert internal error)", "missing": []}]
    causes = rank.not_evaluated_causes(_entry([], nes))
    assert [(c.probe, c.reason, len(c.rule_ids)) for c in causes] == [("smtp.session", "deadline", 91), ("tls.cert", "tls_handshake", 2)]
    assert causes[0].label == "probe smtp.session: deadline: endpoint deadline of 3 s"


def test_summary_is_ranked_grouped_and_plain_by_default():
    fs = [_f(f"cve-20{i:02d}-1", "high", 8.9, "tentative", cve="4.91") for i in range(17)]
    fs += [_f("auth-before-starttls", "high", 7.5, "firm"), _f("plaintext-auth-accepted", "critical", 9.1)]
    nes = [{"rule_id": f"r{i}", "reason": "missing facts a (probe smtp.limits failed: deadline: endpoint deadline of 3 s)", "missing": ["a"]} for i in range(40)]
    report = {"tool": {"version": "t"}, "ruleset": {"count": 127, "skipped_rules": [{"rule_id": "x"}] * 5, "policy": {"id": "default"}},
              "summary": {"endpoints": 1, "findings": {"critical": 1, "high": 18, "medium": 0, "low": 0, "info": 0}, "worst_grade": "F"},
              "endpoints": [_entry(fs, nes, status="partial", grade=None)]}
    buf = io.StringIO()
    text.render(report, buf)
    out = buf.getvalue()
    lines = out.splitlines()
    assert "\033" not in out
    assert "127 rules (5 more need --intrusive)" in lines[0]
    assert lines[1].startswith("smtp://127.0.0.1:25  INCOMPLETE (no grade)") and "worst: plaintext-auth-accepted" in lines[1]
    body = [ln.strip() for ln in lines[3:]]
    assert body[1] == "capped at F by: a-crit; D by: b-relay"
    assert body[2].startswith("CRITICAL plaintext-auth-accepted") and body[3].startswith("HIGH     auth-before-starttls")
    assert body[4].startswith("HIGH     exim 4.91: 17 known CVEs by version") and sum("CVE" in ln for ln in lines) == 1
    assert "not evaluated: 40 rules: probe smtp.limits: deadline: endpoint deadline of 3 s" in body
    # byte-stable: the same report renders the same bytes
    again = io.StringIO()
    text.render(report, again)
    assert again.getvalue() == out


def test_colour_only_when_asked_or_on_a_terminal_without_no_color():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert text.use_color("auto", Tty(), {}) is True
    assert text.use_color("auto", Tty(), {"NO_COLOR": "1"}) is False
    assert text.use_color("auto", Tty(), {"TERM": "dumb"}) is False
    assert text.use_color("auto", io.StringIO(), {}) is False
    assert text.use_color("always", io.StringIO(), {"NO_COLOR": "1"}) is True
    assert text.use_color("never", Tty(), {}) is False
    assert text.style_for(io.StringIO(), "auto", {}).width is None  # a pipe is never wrapped
    assert text.style_for(io.StringIO(), "auto", {"COLUMNS": "100"}).width == 100


def test_wrapping_keeps_every_word_and_the_width():
    report = {"tool": {"version": "t"}, "ruleset": {"count": 1, "policy": {"id": "default"}},
              "summary": {"endpoints": 1, "findings": {"critical": 0, "high": 1, "medium": 0, "low": 0, "info": 0}, "worst_grade": "F"},
              "endpoints": [_entry([dict(_f("relay", "high", 8.0, "tentative"), message="word " * 60)])]}
    buf = io.StringIO()
    text.render(report, buf, text.Style(width=60))
    assert max(len(ln) for ln in buf.getvalue().splitlines()) <= 60
    assert buf.getvalue().count("word") == 60


def test_diff_keeps_the_tentative_marker():
    d = {"old": {"started": "a", "ruleset": "x"}, "new": {"started": "b", "ruleset": "x"},
         "totals": {"new": 1, "fixed": 1, "unchanged": 0, "unverified": 0}, "grade_changes": 0,
         "endpoints": [{"url": "smtp://h:25", "change": "compared", "status": {"new": "scanned"}, "error": None,
                        "grade": {"old": "F", "new": "F"}, "unverified": [],
                        "new": [{"severity": "high", "rule_id": "cve-1", "message": "m", "confidence": "tentative", "suppressed": None}],
                        "fixed": [{"severity": "high", "rule_id": "auth", "message": "m", "confidence": "firm"}]}]}
    buf = io.StringIO()
    differ.render_text(d, buf)
    assert "+ NEW     HIGH     cve-1: m (tentative)" in buf.getvalue()
    assert "- FIXED   HIGH     auth\n" in buf.getvalue()


def test_demo_fits_one_screen_with_confirmed_findings_first(tmp_path):
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, "-m", "smtpaudit", "demo", "-o", str(out)], capture_output=True, text=True,
                          timeout=60, env={"COLUMNS": "100", "PATH": "/usr/bin:/bin", "PYTHONPATH": sys.path[0] or "."})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) <= 40 and max(map(len, lines)) <= 100, proc.stdout
    findings = [ln.strip() for ln in lines if ln.startswith("  ") and ln.strip().split(" ", 1)[0] in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")]
    high = [ln for ln in findings if ln.startswith("HIGH")]
    # confirmed high findings before the tentative ones; the CVE matches are one line
    assert "(tentative)" not in high[0] and "known CVEs" not in high[0]
    assert sum("known CVEs by version" in ln for ln in proc.stdout.splitlines()) == 1
    assert not any(ln.startswith("HIGH     cve-") for ln in findings)
    report = json.loads(out.read_text())
    findings = report["endpoints"][0]["findings"]
    assert sum(1 for f in findings if f["rule_id"].startswith("cve-")) >= 10  # still all in JSON
    assert findings == rank.rank_findings(findings)  # the JSON report has the same order as every rendering


def test_with_an_output_file_stdout_gets_only_the_verdict_lines(tmp_path, capsys):
    from tests.fakes.smtp import ThreadedFake
    from tests.report.conftest import run_cli, weak_fake

    with ThreadedFake(weak_fake()) as srv:
        capsys.readouterr()
        run_cli("scan", srv.target, "-o", tmp_path / "r.html", "--format", "html", "--greeting-timeout", "3",
                "--command-timeout", "3", "--timeout", "30")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"smtp://{srv.target}  grade F") and "worst: plaintext-auth-accepted" in out[0]
    assert "\033" not in "".join(out)  # captured output is not a terminal: no colour
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
