"""Fleets: 50 endpoints (real lab servers on several ports plus fakes, some dead or hostile) complete,
every failure is reported and none stops the rest; --output-dir and --shard."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest

from smtpaudit.fleet import parse_shard, select_shard, shard_of, FleetError
from smtpaudit.targets import parse_target
from tests.fakes.smtp import Close, Delay, FakeSmtpServer, Send, Silence, ThreadedFake, simple_responder
from tests.report.conftest import run_cli, weak_fake
from tests.report_schema import assert_valid_report


def _good() -> FakeSmtpServer:
    return FakeSmtpServer(script=[Send(b"220 good.example.test ESMTP\r\n")],
                          responder=simple_responder(ehlo=["good.example.test", "PIPELINING"], replies={"VRFY": b"252 2.0.0 Cannot VRFY\r\n"}))


def _hostile_kinds():
    return {
        "silent": lambda: FakeSmtpServer(script=[Silence()]),
        "garbage": lambda: FakeSmtpServer(script=[Send(b"\x00\xff\x1b[31mHELLO\r\n" * 50), Close()]),
        "421": lambda: FakeSmtpServer(script=[Send(b"421 4.3.2 Service not available, closing channel\r\n"), Close()]),
        "slowloris": lambda: FakeSmtpServer(script=[Send(b"220-"), Delay(30)]),
        "huge": lambda: FakeSmtpServer(script=[Send(b"220-" + b"A" * 200_000 + b"\r\n"), Silence()]),
    }


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.lab
def test_fleet_of_50_endpoints(postfix_hardened, postfix_insecure, exim_secure, exim_insecure, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lab_targets = [srv.targets[k] for srv in (postfix_hardened, postfix_insecure, exim_secure, exim_insecure) for k in ("smtp", "submission", "smtps")]
    kinds = _hostile_kinds()
    fakes = [weak_fake() for _ in range(10)] + [_good() for _ in range(10)] + [make() for make in kinds.values() for _ in range(2)]
    with contextlib.ExitStack() as stack:
        started = [stack.enter_context(ThreadedFake(f)) for f in fakes]
        dead = [f"127.0.0.1:{_dead_port()}" for _ in range(50 - len(lab_targets) - len(started))]
        targets = lab_targets + [s.target for s in started] + dead
        assert len(targets) == 50
        (tmp_path / "fleet.txt").write_text("# 50 endpoints\n" + "\n".join(targets) + "\n")
        t0 = time.monotonic()
        code = run_cli("scan", "-f", "fleet.txt", "--output-dir", "out", "--format", "sarif", "-q", "--concurrency", "16",
                       "--greeting-timeout", "3", "--command-timeout", "3", "--connect-timeout", "3", "--timeout", "60",
                       "--skip-tag", "dns")
        elapsed = time.monotonic() - t0
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert_valid_report(report)
    assert code == 3
    by_id = {e["endpoint"]["id"]: e for e in report["endpoints"]}
    assert len(by_id) == 50
    failed = {i for i, e in by_id.items() if e["status"] == "unreachable"}
    # every dead, silent, 421 and slow endpoint is reported as not scanned, with a reason
    expected_failed = {t for t in dead} | {s.target for s, f in zip(started, fakes) if f.script and isinstance(f.script[0], (Silence,))}
    assert expected_failed <= failed, expected_failed - failed
    assert all(by_id[i]["error"] for i in failed)
    # ...and none of them stopped the real servers from being judged
    for t in lab_targets:
        eid = parse_target(t).id
        assert by_id[eid]["status"] in ("complete", "incomplete"), (eid, by_id[eid]["probes"])
    insecure = parse_target(postfix_insecure.targets["smtp"]).id
    assert any(f["rule_id"] == "auth-before-starttls" for f in by_id[insecure]["findings"])
    assert report["summary"]["failed"] == len(failed) and report["summary"]["endpoints"] == 50
    # one report per endpoint (json + sarif) plus the combined ones
    per = sorted(p.name for p in (tmp_path / "out/endpoints").iterdir())
    assert len([p for p in per if p.endswith(".json")]) == 50 and len([p for p in per if p.endswith(".sarif")]) == 50
    assert (tmp_path / "out/report.sarif").is_file()
    one = json.loads((tmp_path / "out/endpoints" / f"{insecure.replace(':', '_')}.json").read_text())
    assert_valid_report(one)
    assert [e["endpoint"]["id"] for e in one["endpoints"]] == [insecure]
    print(f"fleet of 50: {elapsed:.1f}s, {len(failed)} not scanned")
    assert elapsed < 240


def test_shards_partition_the_fleet_deterministically():
    eps = [parse_target(f"mx{i}.example.org:{25 + i % 3}") for i in range(200)]
    shards = [select_shard(eps, i, 4) for i in range(1, 5)]
    ids = [e.id for s in shards for e in s]
    assert sorted(ids) == sorted(e.id for e in eps) and len(ids) == len(set(ids))  # exactly once
    assert all(20 < len(s) < 80 for s in shards)  # roughly balanced
    # order of the list does not matter, and adding a target moves nobody else
    assert [e.id for e in select_shard(list(reversed(eps)), 2, 4)] == [e.id for e in reversed(shards[1])]
    more = eps + [parse_target("new.example.org:25")]
    assert {e.id for e in select_shard(more, 3, 4)} - {"new.example.org:25"} == {e.id for e in shards[2]}
    assert shard_of("mx1.example.org:26", 4) == shard_of("mx1.example.org:26", 4)


@pytest.mark.parametrize("bad", ["0/4", "5/4", "1/0", "a/b", "3"])
def test_bad_shard_specs(bad):
    with pytest.raises(FleetError):
        parse_shard(bad)


def test_shard_runs_write_side_by_side_and_merge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(ThreadedFake(weak_fake())) for _ in range(6)]
        (tmp_path / "fleet.txt").write_text("\n".join(s.target for s in servers) + "\n")
        for i in (1, 2, 3):
            run_cli("scan", "-f", "fleet.txt", "--shard", f"{i}/3", "--output-dir", "out", "-q", "--rule", "vrfy-discloses-users")
    shard_files = sorted((tmp_path / "out").glob("report-shard-*-of-3.json"))
    assert len(shard_files) == 3
    seen = [e["endpoint"]["id"] for f in shard_files for e in json.loads(f.read_text())["endpoints"]]
    assert sorted(seen) == sorted(s.target for s in servers)
    code = run_cli("report", *shard_files, "--format", "json", "-o", tmp_path / "merged.json", "-q")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert_valid_report(merged)
    assert code == 0 and merged["summary"]["endpoints"] == 6 and merged["summary"]["findings"]["medium"] == 6


def test_progress_only_on_a_terminal():
    import io

    from smtpaudit.fleet import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    entry = {"status": "complete", "findings": [{"suppressed": None}]}
    quiet, tty = io.StringIO(), Tty()
    p1, p2 = Progress(2, stream=quiet), Progress(2, stream=tty)
    for p in (p1, p2):
        p("a:25", entry)
        p("b\x1b[2J:25", {"status": "unreachable", "findings": []})
        p.finish()
    assert quiet.getvalue() == ""
    out = tty.getvalue()
    assert "[2/2]" in out and "not complete 1" in out and "findings 1" in out and "\x1b[2J" not in out
