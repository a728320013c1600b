"""Fleet-sized output at flat memory (report/stream.py): spooled entries, streamed JSON/SARIF/HTML,
and Kubernetes Indexed Job shards (JOB_COMPLETION_INDEX)."""

from __future__ import annotations

import contextlib
import io
import json
import socket
from pathlib import Path

import pytest

from smtpaudit import fleet
from smtpaudit.fleet import FleetError, parse_shard, select_shard
from smtpaudit.report import model, sarif, stream
from smtpaudit.targets import parse_target
from tests.fakes.smtp import ThreadedFake
from tests.report.conftest import run_cli, weak_fake
from tests.report_schema import assert_valid_report

SAMPLE = Path(__file__).resolve().parents[2] / "reports" / "samples" / "lab-fleet.json"


def _spooled(report: dict) -> tuple[stream.EntrySpool, dict]:
    spool = stream.EntrySpool()
    for e in reversed(report["endpoints"]):  # finished in another order than the targets
        spool.add(e)
    spool.close()
    skeleton = {**report, "endpoints": [spool.skeleton(e) for e in report["endpoints"]]}
    return spool, skeleton


def test_streamed_json_and_sarif_are_byte_identical_to_the_in_memory_writers() -> None:
    report = model.load(SAMPLE)
    spool, skeleton = _spooled(report)
    try:
        ids = [e["endpoint"]["id"] for e in report["endpoints"]]
        out = io.StringIO()
        stream.write_json(skeleton, spool.ordered(ids)(), out)
        assert out.getvalue() == model.dumps(report)
        out = io.StringIO()
        sarif.write_stream(skeleton, spool.ordered(ids)(), out)
        assert out.getvalue() == sarif.dumps(report)
    finally:
        spool.cleanup()


def test_skeletons_hold_no_facts_and_share_finding_kinds() -> None:
    report = model.load(SAMPLE)
    spool, skeleton = _spooled(report)
    spool.cleanup()
    sks = skeleton["endpoints"]
    assert all("facts" not in s and "transcripts" not in s for s in sks)
    kinds = {id(f) for s in sks for f in s["findings"]}
    total = sum(len(s["findings"]) for s in sks)
    assert total > len(kinds)  # one shared dict per kind of finding, not one per finding
    # Per endpoint only a few KB stay in memory (the findings list holds references to shared kinds).
    assert all(len(json.dumps({k: v for k, v in s.items() if k != "findings"})) < 4000 for s in sks)


def _dead_ports(n: int) -> list[int]:
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def test_fleet_output_dir_streams_and_html_becomes_an_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fleet, "HTML_FULL_LIMIT", 2)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(ThreadedFake(weak_fake())) for _ in range(3)]
        targets = [s.target for s in servers] + [f"127.0.0.1:{p}" for p in _dead_ports(2)]
        (tmp_path / "fleet.txt").write_text("\n".join(targets) + "\n")
        run_cli("scan", "-f", "fleet.txt", "--output-dir", "out", "--format", "html", "-q", "--rule", "vrfy-discloses-users",
                "--connect-timeout", "2")
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert_valid_report(report)
    assert [e["endpoint"]["id"] for e in report["endpoints"]] == [parse_target(t).id for t in targets]  # target order
    assert all("facts" in e and "transcripts" in e for e in report["endpoints"])  # full entries, not skeletons
    assert report["summary"]["endpoints"] == 5 and report["summary"]["unreachable"] == 2
    assert not (out / "report.jsonl").exists()  # the spool is gone once everything is written
    page = (out / "report.html").read_text()
    assert "fleet overview" in page and page.count('href="endpoints/') == 5
    for e in report["endpoints"]:
        name = fleet.slug(e["endpoint"]["id"])
        assert (out / "endpoints" / f"{name}.html").is_file() and (out / "endpoints" / f"{name}.json").is_file()


def test_kubernetes_job_completion_index_selects_the_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_shard("index/4", {"JOB_COMPLETION_INDEX": "0"}) == (1, 4)
    assert parse_shard("index/4", {"JOB_COMPLETION_INDEX": "3"}) == (4, 4)
    with pytest.raises(FleetError, match="JOB_COMPLETION_INDEX is not set"):
        parse_shard("index/4", {})
    with pytest.raises(FleetError):
        parse_shard("index/4", {"JOB_COMPLETION_INDEX": "4"})  # pods 0..3 of a 4-completion Job
    # The CLI: pod 1 of 3 scans exactly what --shard 2/3 scans, into report-shard-2-of-3.json.
    targets = [f"127.0.0.1:{p}" for p in _dead_ports(9)]
    (tmp_path / "fleet.txt").write_text("\n".join(targets) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    run_cli("scan", "-f", "fleet.txt", "--shard", "index/3", "--output-dir", "out", "-q", "--connect-timeout", "2")
    got = [e["endpoint"]["id"] for e in json.loads((tmp_path / "out" / "report-shard-2-of-3.json").read_text())["endpoints"]]
    assert got == [ep.id for ep in select_shard([parse_target(t) for t in targets], 2, 3)]


def test_single_endpoint_files_from_the_shared_encoding_are_byte_identical() -> None:
    import json as _json

    report = model.load(SAMPLE)
    ruleset_text = _json.dumps(report["ruleset"], indent=2, ensure_ascii=False)
    for entry in report["endpoints"]:
        one = fleet.single_endpoint_report(report, entry)
        assert stream.dumps_single(one, stream.entry_text(entry), ruleset_text) == model.dumps(one)


def test_reports_are_read_back_one_entry_at_a_time_and_merged_like_in_memory(tmp_path: Path) -> None:
    report = model.load(SAMPLE)
    head, entries = stream.read_report(SAMPLE)
    assert list(entries) == report["endpoints"] and {**head, "endpoints": report["endpoints"]} == report
    # Two "shards" of the sample, merged streamed and in memory: the same report.
    half = len(report["endpoints"]) // 2
    shards = []
    for i, part in enumerate((report["endpoints"][:half], report["endpoints"][half:])):
        shard = {**report, "endpoints": part}
        path = tmp_path / f"shard-{i}.json"
        path.write_text(model.dumps(shard))
        shards.append(path)
    merged, spool = fleet.merge_streamed([str(p) for p in shards])
    try:
        out = io.StringIO()
        fleet.write_streamed(merged, spool, "json", out)
    finally:
        spool.cleanup()
    expected = fleet.merge_reports([model.load(p) for p in shards])
    assert json.loads(out.getvalue()) == json.loads(model.dumps(expected))


def test_cli_report_streams_large_inputs_with_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smtpaudit import cli

    report = model.load(SAMPLE)
    half = len(report["endpoints"]) // 2
    shards = []
    for i, part in enumerate((report["endpoints"][:half], report["endpoints"][half:])):
        path = tmp_path / f"shard-{i}.json"
        path.write_text(model.dumps({**report, "endpoints": part}))
        shards.append(path)
    run_cli("report", *shards, "-o", tmp_path / "memory.json", "-q")
    monkeypatch.setattr(cli, "STREAM_REPORTS_ABOVE", 0)  # every input counts as large: streamed
    run_cli("report", *shards, "-o", tmp_path / "streamed.json", "-q")
    assert (tmp_path / "streamed.json").read_text() == (tmp_path / "memory.json").read_text()
    assert_valid_report(json.loads((tmp_path / "streamed.json").read_text()))
