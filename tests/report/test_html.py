"""HTML report: self-contained, escaped, and clean in real headless Chromium (no errors, no requests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smtpaudit.report import html
from tests.fakes.smtp import ThreadedFake
from tests.report.browser import BLOCKING_IMPACTS, Chromium, find_axe, pdf_first_page_png
from tests.report.conftest import chromium_binary, run_cli, scan_to, tool_unavailable, weak_fake

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
    for heading in ("At a glance", "What to fix first", "Contents", "Scope and methodology", "Findings", "Why it matters",
                    "Remediation", "References", "Scoring formula"):
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
    _pdf_tools()
    with Chromium(binary) as browser:
        res = check_in_chromium(out, tmp_path, browser)
    page = res[1400]
    assert "auth-before-starttls" in page.text and "Postfix (3.7" in page.text
    assert "TLS: protocols and cipher suites" in page.text and "Certificate" in page.text
    assert page.screenshot.stat().st_size > 50_000


def _axe_js() -> Path:
    js = find_axe()
    if js is None:
        tool_unavailable("axe-core not installed (npm): run .ci/install-report-tools.sh")
    return js


def _pdf_tools() -> None:
    import shutil

    if not (shutil.which("pdftoppm") and shutil.which("pdfinfo")):
        tool_unavailable("pdftoppm/pdfinfo (poppler-utils) not installed: run .ci/install-report-tools.sh")


def check_in_chromium(path: Path, tmp_path: Path, browser: Chromium) -> dict:
    """What the done-criteria ask of an auditor's page: clean at 1400 and 390 px, no serious or
    critical axe-core violation, and a print-to-PDF that poppler renders. Returns the results."""
    out = {}
    for width in (1400, 390):
        page = browser.open(path, screenshot=tmp_path / f"{path.stem}-{width}.png", width=width, max_height=2400)
        assert page.errors == [] and page.requests == [] and page.script_elements == 0, (width, page.errors, page.requests)
        out[width] = page
    violations = browser.axe(path, _axe_js(), width=1400) + browser.axe(path, _axe_js(), width=390)
    blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
    assert blocking == [], blocking
    pdf = browser.pdf(path, tmp_path / f"{path.stem}.pdf")
    pages, png = pdf_first_page_png(pdf, tmp_path / f"{path.stem}-page1")
    assert pages >= 1 and png.stat().st_size > 5_000  # a real first page, not a blank sheet
    out["pdf_pages"] = pages
    return out


def test_first_screen_ranks_confirmed_findings_and_groups_the_cve_guesses(tmp_path):
    report = _hostile_report(tmp_path)
    page = html.render(report)
    glance = page[page.index('id="glance"'):page.index('<nav class="toc"')]
    # the grade tile, the counts and the fix-first list are on the first screen
    assert 'class="big f"' in glance and "What to fix first" in glance and "Fix: " in glance
    first = re.findall(r'<li><span class="sev (\w+)">', glance)
    assert first and first[0] == "critical"
    # the CVE matches are one group (one article with a table), not one article per CVE
    assert page.count("Known vulnerabilities by version: exim 4.91") == 2  # fix-first entry + the group's own heading
    assert len(re.findall(r'<article class="finding [a-z]+" id="f-', page)) < len(report["endpoints"][0]["findings"])
    # a tentative guess is labelled for what it is: only version matches blame backported fixes
    assert html._tentative_note({"confidence": "tentative", "tags": ["relay"], "family": "relay"}).startswith("tentative: inferred")
    assert html._tentative_note({"confidence": "tentative", "tags": ["cve", "version-based"], "family": "software"}).startswith("version-based")
    assert html._tentative_note({"confidence": "firm", "tags": []}) == ""
    assert page.count("Passed: ") == 1 and "<details" in page


def test_demo_report_passes_chromium_axe_and_print(tmp_path):
    binary = chromium_binary()
    _pdf_tools()
    path = tmp_path / "weak.html"
    path.write_text(html.render(_hostile_report(tmp_path)))
    with Chromium(binary) as browser:
        res = check_in_chromium(path, tmp_path, browser)
    assert "What to fix first" in res[390].text


def test_ten_endpoint_fleet_passes_chromium_axe_and_print(tmp_path):
    binary = chromium_binary()
    _pdf_tools()
    from contextlib import ExitStack

    with ExitStack() as stack:
        servers = [stack.enter_context(ThreadedFake(weak_fake(f"mx{i}.example.test ESMTP Exim 4.9{i}", vrfy=i % 2 == 0))) for i in range(10)]
        targets = tmp_path / "fleet.txt"
        targets.write_text("".join(f"{s.target}\n" for s in servers))
        code = run_cli("scan", "-f", targets, "--format", "html", "-o", tmp_path / "fleet.html", "-q", "--concurrency", "10",
                       "--greeting-timeout", "3", "--command-timeout", "3", "--timeout", "60")
    assert code in (1, 3)
    page = (tmp_path / "fleet.html").read_text()
    assert "Fleet overview" in page and page.count('<li class="tile ') == 10 and "<svg" in page
    with Chromium(binary) as browser:
        res = check_in_chromium(tmp_path / "fleet.html", tmp_path, browser)
    assert "Grade distribution" in res[1400].text and "Open findings by family" in res[1400].text


def test_fleet_overview_groups_endpoints_by_mail_domain(tmp_path):
    import copy

    report = _hostile_report(tmp_path)
    base = report["endpoints"][0]
    entries = []
    for i, domain in enumerate(("example.org", "example.org", "example.net", None)):
        e = copy.deepcopy(base)
        e["endpoint"] = dict(e["endpoint"], id=f"mx{i}.example.test:25", url=f"smtp://mx{i}.example.test:25", domain=domain)
        entries.append(e)
    report["endpoints"] = entries
    page = html.render(report)
    rows = re.findall(r'<tr class="domain"><th scope="rowgroup"[^>]*>([^<]+)</th>', page)
    assert rows == ["mail domain example.net", "mail domain example.org", "hosts given directly"]
    table = page[page.index('id="fleet"'):page.index('class="endpoint"')]
    assert table.index("mx2.example.test") < table.index("mx0.example.test") < table.index("mx3.example.test")
