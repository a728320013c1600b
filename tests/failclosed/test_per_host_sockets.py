"""``--per-host N`` is a promise to the operator: never more than N sockets to one host at once.

Measured on the server side: three fake servers on 127.0.0.1 (three endpoints of one host) count
how many connections from the scanner are open at the same moment, across all three.
"""

from __future__ import annotations

import asyncio

import pytest

from smtpaudit import api
from smtpaudit.probes.base import Timeouts
from tests.fakes.certs import server_context
from tests.fakes.smtp import FakeSmtpServer, Send, simple_responder


class Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0


class CountingServer(FakeSmtpServer):
    gauge: Gauge

    async def _handle(self, reader, writer):  # type: ignore[override]
        self.gauge.now += 1
        self.gauge.peak = max(self.gauge.peak, self.gauge.now)
        try:
            await super()._handle(reader, writer)
        finally:
            self.gauge.now -= 1


def _server(gauge: Gauge, name: str) -> CountingServer:
    ehlo = [name, "PIPELINING", "STARTTLS", "AUTH PLAIN LOGIN", "SIZE 1000000"]
    srv = CountingServer(script=[Send(f"220 {name} ESMTP\r\n".encode())],
                         responder=simple_responder(ehlo=ehlo, replies={"AUTH": b"535 5.7.8 no\r\n", "DATA": b"554 no\r\n"}),
                         tls_context=server_context())
    srv.gauge = gauge
    return srv


@pytest.mark.parametrize("per_host", [1, 2])
def test_per_host_bounds_sockets_to_one_host(per_host, record_property):
    gauge = Gauge()
    servers = [_server(gauge, f"mx{i}.example.test") for i in range(3)]
    ruleset = api.load_ruleset()
    options = api.ScanOptions(timeouts=Timeouts(connect=3, greeting=3, command=3, tls=3, endpoint=60),
                              per_host=per_host, probe_options={"idle_watch": 0.0})

    async def go() -> dict:
        for s in servers:
            await s.start()
        try:
            return await api.scan_async([s.target for s in servers], ruleset, options)
        finally:
            for s in servers:
                await s.stop()

    report = asyncio.run(go())
    record_property("server_side_peak", gauge.peak)
    print(f"--per-host {per_host}: peak sockets seen by the servers {gauge.peak}, "
          f"by the scanner {report['invocation']['peak_sockets_per_host']}")
    assert all(e["status"] == "complete" for e in report["endpoints"]), [e["status_reasons"] for e in report["endpoints"]]
    assert gauge.peak <= per_host
    assert report["invocation"]["peak_sockets_per_host"]["127.0.0.1"] <= per_host
    if per_host == 2:
        assert gauge.peak == 2  # the budget is used, not just respected
