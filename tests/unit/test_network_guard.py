"""The test suite's loopback-only guard really blocks other destinations (so no test can leak traffic)."""

import socket

import pytest


def test_non_loopback_udp_and_tcp_are_blocked():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(PermissionError):
        s.sendto(b"x", ("192.0.2.1", 53))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(PermissionError):
        s.connect(("192.0.2.1", 25))


def test_scan_of_a_loopback_literal_sends_no_dns_query(tmp_path):
    from smtpaudit.cli import main
    from tests.fakes.smtp import FakeSmtpServer, Send, ThreadedFake, simple_responder

    with ThreadedFake(FakeSmtpServer(script=[Send(b"220 x.example.test\r\n")], responder=simple_responder())) as srv:
        code = main(["scan", srv.target, "-q", "-o", str(tmp_path / "r.json")])
    assert code in (0, 1)
    import json

    entry = json.loads((tmp_path / "r.json").read_text())["endpoints"][0]
    assert all(p["status"] in ("ok", "skipped") for p in entry["probes"]), entry["probes"]
    assert entry["not_evaluated"] == [] and entry["status"] == "complete"
    assert "tls-legacy-protocols" in entry["not_applicable"]
    assert entry["facts"]["dane.tlsa.lookup_status"] == "not_applicable"
