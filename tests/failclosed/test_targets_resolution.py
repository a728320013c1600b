"""Bare names: a mail domain when it has MX records, its own implicit MX when it only has an address
(RFC 5321 section 5.1), and a target error (exit 3, one line) when it does not exist at all.

DNS answers come from the in-memory stub zone (no sockets); the implicit MX's SMTP server is a
fake on loopback, reached through an address record pointing at 127.0.0.1.
"""

from __future__ import annotations

import asyncio

from smtpaudit import api
from smtpaudit.probes.base import Timeouts
from smtpaudit.targets import parse_target
from tests.dns.stub_dns import StubZone
from tests.fakes.smtp import FakeSmtpServer, Send, simple_responder

OPTIONS = dict(timeouts=Timeouts(connect=2, greeting=2, command=2, tls=2, endpoint=30), probe_options={"idle_watch": 0.0})


def _scan(target: str, zone: dict, port: int = 25, **extra) -> dict:
    ruleset = api.load_ruleset()
    options = api.ScanOptions(**{**OPTIONS, "probe_options": {"idle_watch": 0.0, "mx_port": port}}, **extra)
    with StubZone(zone).installed():
        return asyncio.run(api.scan_async([parse_target(target)], ruleset, options))


def test_nxdomain_is_a_target_error_not_a_grade():
    report = _scan("example.invalid", {})
    assert [e["status"] for e in report["endpoints"]] == ["unreachable"]
    entry = report["endpoints"][0]
    assert "does not exist" in entry["error"] and entry["score"]["grade"] is None
    assert entry["findings"] == [] and entry["passed"] == []
    assert report["gate"]["exit_code"] == 3


def test_nxdomain_on_the_command_line_says_one_line_and_exits_3(capsys, monkeypatch, tmp_path):
    from smtpaudit.cli import main

    with StubZone({}).installed():
        code = main(["scan", "example.invalid", "-o", str(tmp_path / "r.json"), "--timeout", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and "example.invalid" in err[0] and "does not exist" in err[0], err


def test_a_name_with_only_an_address_is_its_own_implicit_mx():
    async def go() -> dict:
        server = FakeSmtpServer(script=[Send(b"220 mx.example.test ESMTP\r\n")],
                                responder=simple_responder(ehlo=["mx.example.test", "SIZE 1000"]))
        async with server:
            ruleset = api.load_ruleset()
            options = api.ScanOptions(**{**OPTIONS, "probe_options": {"idle_watch": 0.0, "mx_port": server.port}})
            with StubZone({"mx.example.test": [{"A": "127.0.0.1"}]}).installed():
                report = await api.scan_async([parse_target("mx.example.test")], ruleset, options)
        return report, server

    report, server = asyncio.run(go())
    kinds = [(e["endpoint"]["role"], e["endpoint"]["host"]) for e in report["endpoints"]]
    assert kinds == [("domain", "mx.example.test"), ("mx", "mx.example.test")]
    mx = report["endpoints"][1]
    assert mx["endpoint"]["address"] == "127.0.0.1" and server.connections > 0
    assert mx["facts"]["smtp.greeting.code"] == 220
