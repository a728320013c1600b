"""Enumeration against modelled servers: what is found, in which order, with how many connections."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from smtpaudit.probes.tls.scanner import ConnectError, ScanConfig, TlsScanner
from tests.tls import fakes
from tests.tls.fakes import FakeTls


async def with_server(model: FakeTls, body: Callable[[TlsScanner, fakes.Served], Awaitable[Any]], **cfg: Any) -> Any:
    served = await fakes.serve(model.handler)
    try:
        scanner = TlsScanner(served.connect, ScanConfig(timeout=2.0, server_name="mx.example.net", **cfg))
        return await body(scanner, served)
    finally:
        await served.close()


def scan(model: FakeTls, **cfg: Any) -> tuple[dict, TlsScanner, fakes.Served]:
    async def body(s: TlsScanner, served: fakes.Served) -> tuple[dict, TlsScanner, fakes.Served]:
        return await s.scan_protocols(), s, served

    return asyncio.run(with_server(model, body, **cfg))


def test_sslv3_is_detected_with_its_suites() -> None:
    model = FakeTls(versions={0x0300, 0x0301}, suites=[0x000A, 0x0005, 0x002F])
    res, scanner, served = scan(model)
    assert res["SSLv3"].accepted is True
    assert res["SSLv3"].suites == [0x000A, 0x0005, 0x002F]
    assert res["SSLv3"].preference == "server"
    assert res["SSLv3"].secure_renegotiation is True  # answered the SCSV with renegotiation_info
    assert res["TLSv1.0"].accepted is True
    assert res["TLSv1.2"].accepted is False and res["TLSv1.1"].accepted is False
    assert res["TLSv1.3"].accepted is False and res["SSLv2"].accepted is False
    sslv3_hellos = [h for h in model.seen if h.version == 0x0300 and not h.sslv2]
    assert sslv3_hellos and all(h.extensions == {} for h in sslv3_hellos)
    assert served.connections == scanner.connections


def test_sslv2_is_detected_from_one_server_hello() -> None:
    model = FakeTls(versions={0x0002, 0x0300}, sslv2_specs=[0x0700C0, 0x010080, 0x020080], suites=[0x0004])
    res, scanner, _ = scan(model)
    assert res["SSLv2"].accepted is True
    assert res["SSLv2"].suites == [0x0700C0, 0x010080, 0x020080]
    assert res["SSLv3"].accepted is True


def test_enumeration_costs_n_plus_one_hellos_plus_preference() -> None:
    suites = [0xC030, 0xC02F, 0xCCA8, 0x009F, 0x009E]
    model = FakeTls(versions={0x0303}, suites=suites)
    res, scanner, served = scan(model)
    assert res["TLSv1.2"].suites == suites and res["TLSv1.2"].preference == "server"
    # SSLv2, SSLv3, 1.0, 1.1, 1.3: one each; 1.2: 5 accepted + 1 refusal + 1 preference check.
    assert scanner.connections == served.connections == 5 + 7


def test_client_preference_is_recognised() -> None:
    model = FakeTls(versions={0x0303}, suites=[0xC030, 0xC02F, 0x009C], server_preference=False)
    res, _, _ = scan(model)
    assert set(res["TLSv1.2"].suites) == {0xC030, 0xC02F, 0x009C}
    assert res["TLSv1.2"].preference == "client"


def test_single_suite_has_no_preference() -> None:
    res, _, _ = scan(FakeTls(versions={0x0303}, suites=[0xC02F]))
    assert res["TLSv1.2"].suites == [0xC02F] and res["TLSv1.2"].preference is None


def test_chunked_offers_find_everything_and_the_true_order() -> None:
    suites = [0x0005, 0xC030, 0x000A, 0xC02F]  # server order mixes chunks
    model = FakeTls(versions={0x0303}, suites=suites)
    res, _, _ = scan(model, max_suites_per_hello=40)
    assert res["TLSv1.2"].suites == suites and res["TLSv1.2"].preference == "server"
    assert max(len(h.suites) for h in model.seen if not h.sslv2) <= 40 + 2


def test_tls13_suites_groups_via_hello_retry_request() -> None:
    model = FakeTls(versions={0x0303, 0x0304}, tls13_suites=[0x1302, 0x1303, 0x1301], tls13_groups=[0x11EC, 24, 29])

    async def body(s: TlsScanner, served: fakes.Served) -> Any:
        res = await s.scan_protocols(("TLSv1.3",))
        groups = await s.scan_tls13_groups(res["TLSv1.3"].suites)
        return res, groups

    res, (groups, errors, cut) = asyncio.run(with_server(model, body))
    assert res["TLSv1.3"].suites == [0x1302, 0x1303, 0x1301] and res["TLSv1.3"].preference == "server"
    assert groups == [0x11EC, 24, 29] and errors == [] and cut is None
    empty_share_hellos = [h for h in model.seen if h.key_share_groups == []]
    assert len(empty_share_hellos) == 4


def test_tls12_curves_and_dh_size() -> None:
    model = FakeTls(versions={0x0303}, suites=[0xC02F, 0x009E], curves=[24, 23], dh_bits=1024)

    async def body(s: TlsScanner, served: fakes.Served) -> Any:
        res = await s.scan_protocols(("TLSv1.2",))
        return res, await s.scan_ecdhe_curves("TLSv1.2", [0xC02F])

    res, (curves, errors, cut) = asyncio.run(with_server(model, body))
    assert curves == [24, 23] and errors == [] and cut is None
    assert res["TLSv1.2"].kx[0x009E].dh_bits == 1024
    assert res["TLSv1.2"].kx[0xC02F].curve == 24


def test_fallback_scsv_supported_and_not() -> None:
    async def body(s: TlsScanner, served: fakes.Served) -> Any:
        return await s.fallback_scsv(["TLSv1.1", "TLSv1.2"])

    assert asyncio.run(with_server(FakeTls(versions={0x0302, 0x0303}, suites=[0x002F]), body))[0] is True
    assert asyncio.run(with_server(FakeTls(versions={0x0302, 0x0303}, suites=[0x002F], fallback_scsv=False), body))[0] is False

    async def one(s: TlsScanner, served: fakes.Served) -> Any:
        return await s.fallback_scsv(["TLSv1.2"])

    assert asyncio.run(with_server(FakeTls(), one))[0] is None


def test_compression_and_insecure_renegotiation() -> None:
    model = FakeTls(versions={0x0303}, suites=[0x002F], compression=True, secure_renegotiation=False)

    async def body(s: TlsScanner, served: fakes.Served) -> Any:
        res = await s.scan_protocols(("TLSv1.2",))
        return res, await s.compression("TLSv1.2")

    res, (compressed, _) = asyncio.run(with_server(model, body))
    assert compressed is True
    assert res["TLSv1.2"].secure_renegotiation is False


def test_version_negotiated_down_means_not_accepted() -> None:
    res, _, _ = scan(FakeTls(versions={0x0301}, suites=[0x002F]))
    assert res["TLSv1.2"].accepted is False and res["TLSv1.0"].accepted is True
    assert "version=0x0301" in res["TLSv1.2"].detail


def test_connection_failures_are_undecided_not_refusals() -> None:
    async def refuse() -> Any:
        raise ConnectError("421 too many connections")

    scanner = TlsScanner(refuse, ScanConfig(connect_retries=1, retry_delay=0.01))
    res = asyncio.run(scanner.scan_protocols())
    assert all(r.accepted is None for r in res.values())
    assert all(r.errors for r in res.values())
    assert scanner.connections == 12


def test_concurrency_is_bounded() -> None:
    live = 0
    peak = 0
    model = FakeTls(versions={0x0301, 0x0302, 0x0303, 0x0304}, suites=[0x002F, 0x0035, 0xC02F])

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        try:
            await model.handler(reader, writer)
        finally:
            live -= 1

    async def main() -> None:
        served = await fakes.serve(counting)
        try:
            await TlsScanner(served.connect, ScanConfig(concurrency=2)).scan_protocols()
        finally:
            await served.close()

    asyncio.run(main())
    assert 1 <= peak <= 2


def test_garbage_server_yields_errors_not_acceptance() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"554 go away\r\n")
        await writer.drain()

    async def main() -> Any:
        served = await fakes.serve(garbage)
        try:
            s = TlsScanner(served.connect, ScanConfig(timeout=1))
            return await s.scan_protocols()
        finally:
            await served.close()

    res = asyncio.run(main())
    assert all(r.accepted is False for r in res.values())
    assert any("garbage" in e for r in res.values() for e in r.errors)


def test_a_busy_server_is_retried_soon_and_more_often_than_other_failures(monkeypatch) -> None:
    # Exim says 421 while it still counts our closed connections (its children sleep ~0.45 s
    # after a TLS negotiation that did not finish): short, growing waits, more of them.
    from smtpaudit.probes.tls import scanner as scanner_mod

    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(scanner_mod.asyncio, "sleep", recorded_sleep)
    calls = 0

    async def busy_then_gone() -> Any:
        nonlocal calls
        calls += 1
        raise ConnectError("greeting 421 Too many concurrent SMTP connections", busy=True)

    scanner = TlsScanner(busy_then_gone, ScanConfig(connect_retries=2, retry_delay=1.0))
    out = asyncio.run(scanner.hello(b"\x16", label="hello"))
    assert out.kind == "connect_error" and "421" in out.detail
    assert calls == 1 + scanner_mod.BUSY_RETRIES
    assert waits == [scanner_mod.busy_delay(n) for n in range(scanner_mod.BUSY_RETRIES)]
    assert waits[0] <= 0.1 and sum(waits) <= 3.0

    waits.clear()
    calls = 0

    async def closed() -> Any:
        nonlocal calls
        calls += 1
        raise ConnectError("connection closed")

    scanner = TlsScanner(closed, ScanConfig(connect_retries=2, retry_delay=1.0))
    asyncio.run(scanner.hello(b"\x16", label="hello"))
    assert calls == 3 and waits == [1.0, 2.0]

    waits.clear()
    calls = 0

    async def refused() -> Any:
        nonlocal calls
        calls += 1
        raise ConnectError("STARTTLS refused with 554", retryable=False)

    asyncio.run(TlsScanner(refused, ScanConfig()).hello(b"\x16", label="hello"))
    assert calls == 1 and waits == []


def test_connection_lost_mid_enumeration_keeps_the_version_accepted_and_marks_it_cut() -> None:
    """TLS 1.0 picks two suites, then no connection is had any more (a server refusing us after
    a few connections): the version was selected, never 'rejected' (before: accepted stayed
    False, so tls-legacy-protocols passed), and the suite list is marked cut short."""
    model = FakeTls(versions={0x0301}, suites=[0x002F, 0x0035, 0x000A])

    async def body(s: TlsScanner, served: fakes.Served) -> Any:
        seen = {"tls10": 0}

        async def connect() -> Any:
            # Let the first two TLS 1.0 hellos through, then refuse every connection.
            if seen["tls10"] >= 2:
                raise ConnectError("connection refused", retryable=False)
            seen["tls10"] += 1
            return await served.connect()

        s.connect = connect
        return await s.scan_legacy("TLSv1.0")

    res = asyncio.run(with_server(model, body))
    assert res.accepted is True and res.suites == [0x002F, 0x0035]
    assert res.cut_by == "connect_error"


def test_silence_mid_enumeration_marks_the_suite_list_cut() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        model = FakeTls(versions={0x0303}, suites=[0xC030, 0xC02F, 0x009C])
        raw = await fakes.read_client_hello(reader)
        from smtpaudit.probes.tls import codec

        if 0xC030 not in codec.parse_client_hello(raw).suites:
            await asyncio.wait_for(reader.read(1), 5)  # silent once the first pick is taken out
            return
        writer.write(model.answer(codec.parse_client_hello(raw)))
        await writer.drain()
        await asyncio.wait_for(reader.read(1), 5)

    async def go() -> Any:
        served = await fakes.serve(handler)
        try:
            return await TlsScanner(served.connect, ScanConfig(timeout=1.0)).scan_legacy("TLSv1.2")
        finally:
            await served.close()

    res = asyncio.run(go())
    assert res.accepted is True and res.suites == [0xC030] and res.cut_by == "timeout"
