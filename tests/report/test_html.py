"""HTML report: self-contained, escaped, and clean in real headless Chromium (no errors, no requests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smtpaudit.report import html
from tests.fakes.smtp import ThreadedFake
from tests.report.browser import Chromium
from tests.report.conftest import chromium_binary, run_cli, scan_to, weak_fake

HOSTILE_BANNER = '<script>document.title="pwned"</script><img src="http://evil.example.com/x.png"> ESMTP Exim 4.91'


def _hostile_report(tmp_path: Path) -> dict:
    with ThreadedFake(weak_fake(HOSTILE_BANNER)) as srv:
        _, report = scan_to(tmp_path / "hostile.json", srv.target)
    return report


def test_server_strings_are_escaped_and_the_page_is_self_contained(tmp_path):
    report = _hostile_report(tmp_path)
    page = html.render(report)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;document.title=" in page
    assert "<img" not in page
    # nothing to fetch: no external stylesheet, script, font, image or frame
    assert not re.search(r'<(link|script|iframe|object|embed|img)\b', page, re.I)
    assert not re.search(r'url\(\s*["\']?(https?:)?//', page, re.I)
    assert "default-src 'none'" in page
    # the auditor's sections are there
    for heading in ("Scope and methodology", "Overview", "Findings", "Why it matters", "Remediation", "References", "Scoring formula"):
        assert heading in page


def test_hostile_banner_shows_as_text_in_chromium(tmp_path):
    binary = chromium_binary()
    path = tmp_path / "hostile.html"
    path.write_text(html.render(_hostile_report(tmp_path)))
    with Chromium(binary) as browser:
        page = browser.open(path, screenshot=tmp_path / "hostile.png")
    assert page.script_elements == 0
    assert page.title.startswith("smtpaudit report")  # the banner's script did not run
    assert '<script>document.title="pwned"</script>' in page.text
    assert page.requests == []
    assert page.errors == []
    assert page.screenshot and page.screenshot.stat().st_size > 10_000


def test_diff_page_in_chromium(tmp_path):
    binary = chromium_binary()
    report = _hostile_report(tmp_path)
    (tmp_path / "old.json").write_text((tmp_path / "hostile.json").read_text())
    code = run_cli("diff", tmp_path / "old.json", tmp_path / "hostile.json", "--format", "html", "-o", tmp_path / "diff.html", "-q")
    assert code == 0 and report["endpoints"]
    with Chromium(binary) as browser:
        page = browser.open(tmp_path / "diff.html")
    assert page.errors == [] and page.requests == [] and page.script_elements == 0
    assert "What changed between two scans" in page.text


@pytest.mark.lab
def test_insecure_lab_postfix_report_renders_cleanly(postfix_insecure, tmp_path):
    binary = chromium_binary()
    out = tmp_path / "postfix-insecure.html"
    code = run_cli("scan", postfix_insecure.targets["smtp"], postfix_insecure.targets["smtps"], "--format", "html", "-o", out, "-q")
    assert code == 1
    with Chromium(binary) as browser:
        page = browser.open(out, screenshot=tmp_path / "postfix-insecure.png")
    assert page.errors == [], page.errors
    assert page.requests == [], page.requests
    assert page.script_elements == 0
    assert "auth-before-starttls" in page.text and "Postfix (3.7" in page.text
    assert page.screenshot.stat().st_size > 50_000
