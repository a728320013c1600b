"""Hostile servers scanned by the real CLI next to a healthy one: bounded CPU and wall time, the
documented exit code, a valid report, no traceback, and the healthy endpoint's results exactly
what they are when it is scanned alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.smtp import FakeSmtpServer, Send, ThreadedFake, simple_responder
from tests.hostile.helpers import assert_no_traceback, cli, load_valid_report
from tests.hostile.test_files import write_rule

DEADLINE = 20.0
MARGIN = 5.0
SCAN = ("-q", "--skip-tag", "dns", "--timeout", str(DEADLINE), "--greeting-timeout", "3", "--command-timeout", "3",
        "--connect-timeout", "3")


def auth_flood_ehlo(lines: int = 199, width: int = 4000) -> list[str]:
    """199 EHLO lines of ~4 KB of distinct AUTH mechanisms each (the reply-line and line-count caps)."""
    out, k = ["hostile.example.test"], 0
    for _ in range(lines):
        mechs, size = [], 5
        while size < width:
            mechs.append(f"M{k}")
            size += len(mechs[-1]) + 1
            k += 1
        out.append("AUTH " + " ".join(mechs))
    return out


def healthy() -> FakeSmtpServer:
    return FakeSmtpServer(script=[Send(b"220 healthy.example.test ESMTP\r\n")],
                          responder=simple_responder(ehlo=["healthy.example.test", "PIPELINING", "AUTH PLAIN LOGIN", "SIZE 1000000"]))


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    """What must not change for a healthy endpoint because of its neighbours."""
    return {
        "status": entry["status"],
        "findings": sorted(f["rule_id"] for f in entry["findings"]),
        "passed": entry["passed"],
        "not_evaluated": sorted(n["rule_id"] for n in entry["not_evaluated"]),
        "grade": (entry["score"] or {}).get("grade"),
        "probes": {p["probe"]: p["status"] for p in entry["probes"]},
    }


@pytest.fixture(scope="module")
def healthy_alone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("alone") / "alone.json"
    with ThreadedFake(healthy()) as srv:
        run = cli("scan", srv.target, "-o", out, *SCAN)
    assert_no_traceback(run)
    return summary(load_valid_report(out)["endpoints"][0])


def scan_with_healthy(tmp_path: Path, hostile: FakeSmtpServer, *extra: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    out = tmp_path / "run.json"
    with ThreadedFake(hostile) as bad, ThreadedFake(healthy()) as good:
        run = cli("scan", bad.target, good.target, "-o", out, *SCAN, *extra)
        ids = (f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}")
    assert_no_traceback(run)
    report = load_valid_report(out)
    by_id = {e["endpoint"]["id"]: e for e in report["endpoints"]}
    return run, by_id[ids[0]], by_id[ids[1]]


def test_auth_flood_in_ehlo_is_linear_and_leaves_the_neighbour_alone(tmp_path, healthy_alone):
    """Was: 136 s of CPU for 200 AUTH lines, deadline blown, the healthy server's grade moved E -> B."""
    hostile = FakeSmtpServer(script=[Send(b"220 hostile.example.test ESMTP\r\n")], responder=simple_responder(ehlo=auth_flood_ehlo()))
    run, bad, good = scan_with_healthy(tmp_path, hostile)
    assert run.wall < DEADLINE + MARGIN, run.wall
    assert run.cpu < DEADLINE, run.cpu
    assert run.code in (0, 1), run.err  # both scanned: findings decide, never 3
    assert bad["status"] == "complete"
    mechs = bad["facts"]["smtp.auth.mechanisms"]
    assert 0 < len(mechs) <= 64 and mechs[:2] == ["M0", "M1"]
    assert summary(good) == healthy_alone


@pytest.mark.parametrize("greeting", [
    [b"220 hostile.example.test ESMTP Exim 4." + b"9" * 4000 + b"\r\n"],  # version of 4000 digits
    [b"220 hostile.example.test ESMTP Postfix \xc2\xb2.\xd9\xa3\r\n"],  # '²' and Arabic-Indic digits
    [b"220-" + b"\xff\xfe" * 2000 + b"\r\n", b"220 hostile.example.test\r\n"],  # undecodable bytes
], ids=["4000-digit-version", "unicode-digits", "binary-greeting"])
def test_hostile_greetings(tmp_path, healthy_alone, greeting):
    hostile = FakeSmtpServer(script=[Send(b"".join(greeting))], responder=simple_responder())
    run, bad, good = scan_with_healthy(tmp_path, hostile)
    assert run.wall < DEADLINE + MARGIN
    assert run.code in (0, 1, 3), run.err
    assert bad["status"] in ("complete", "incomplete")
    assert not [p for p in bad["probes"] if p["error_reason"] == "bug"]
    assert summary(good) == healthy_alone


def test_catastrophic_user_regex_cannot_hang_the_scan(tmp_path):
    """Was: matches = "(a+)+$" against a hostile greeting hung the scan regardless of --timeout."""
    rules = tmp_path / "rules"
    write_rule(rules, "greeting-nested", "(a+)+$")
    lines = [b"220-" + b"a" * 4000 + b"\r\n"] * 198 + [b"220 " + b"a" * 4000 + b"!\r\n"]
    flood = FakeSmtpServer(script=[Send(b"".join(lines))], responder=simple_responder())
    short = FakeSmtpServer(script=[Send(b"220 " + b"a" * 4000 + b"!\r\n")], responder=simple_responder())
    out = tmp_path / "run.json"
    with ThreadedFake(flood) as big, ThreadedFake(short) as small:
        run = cli("scan", big.target, small.target, "--rules", rules, "--rule", "greeting-nested", "-o", out, *SCAN)
        big_id, small_id = f"127.0.0.1:{big.port}", f"127.0.0.1:{small.port}"
    assert_no_traceback(run)
    assert run.wall < DEADLINE + MARGIN and run.cpu < DEADLINE
    report = load_valid_report(out)
    by_id = {e["endpoint"]["id"]: e for e in report["endpoints"]}
    # Backtracking engines take exponential time on a's not followed by the end; RE2 answers at once.
    assert [f["rule_id"] for f in by_id[big_id]["findings"]] == ["greeting-nested"]  # the stored greeting is all a's
    assert by_id[small_id]["passed"] == ["greeting-nested"]  # 4000 a's then '!': no match, a pass
    assert report["summary"]["endpoints"] == 2


def test_regex_over_text_past_the_bound_is_not_evaluated(tmp_path, saved_report):
    """A saved report is user input too: a 1 MB greeting fact is past the regex subject bound, so the
    rule is not evaluated, with the reason, instead of matched (or passed)."""
    rules = tmp_path / "rules"
    write_rule(rules, "greeting-nested", "(a+)+$")
    report = json.loads(saved_report.read_text())
    report["endpoints"][0]["facts"]["smtp.greeting.text"] = "a" * 1_000_000 + "!"
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(report))
    out = tmp_path / "judged.json"
    run = cli("evaluate", doctored, "--rules", rules, "--rule", "greeting-nested", "-o", out, "-q")
    assert_no_traceback(run)
    assert run.wall < 30
    entry = load_valid_report(out)["endpoints"][0]
    [ne] = entry["not_evaluated"]
    assert ne["rule_id"] == "greeting-nested" and "regular expression not run" in ne["reason"] and "262144" in ne["reason"]
    assert entry["passed"] == [] and entry["findings"] == []
