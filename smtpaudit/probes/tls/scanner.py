"""Protocol, cipher-suite, group and feature enumeration with hand-made hellos, fewest connections.

The scanner knows nothing about SMTP: it is given a ``connect`` coroutine that returns a stream
positioned where a TLS ClientHello may be sent (right after ``220`` to STARTTLS, or a fresh
implicit-TLS socket). Every hello costs one connection, so the algorithms are built to need few:

* suites: offer every candidate, remove the one the server picks, repeat until it refuses
  (n accepted suites cost n+1 hellos); the first hello of a version doubles as the protocol test.
* preference: offer the accepted suites in reverse; if the server still picks its first choice
  it enforces its own order, which is then the discovery order.
* TLS 1.3 groups: an empty key_share makes the server name its group in a HelloRetryRequest;
  TLS 1.2 curves come from the ServerKeyExchange. Remove and repeat, as for suites.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from smtpaudit.probes.base import BUSY_RETRIES, busy_delay
from smtpaudit.probes.tls import codec, handshake, wire
from smtpaudit.probes.tls.codec import HelloSpec
from smtpaudit.probes.tls.registry import PROTOCOL_VERSION, Registry, load_registry

Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
EventSink = Callable[[int, str, str], None]  # (connection number, "C"|"S"|"*", text)
# Told after each hello or handshake that reached the server: True when nothing came back in time.
ReplySink = Callable[[bool], None]
_T = TypeVar("_T")

LEGACY_PROTOCOLS = ("SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2")
CONNECT_ERROR = "connect_error"


class ConnectError(Exception):
    """The connector could not give us a stream ready for a ClientHello (refused, 421, no STARTTLS)."""

    def __init__(self, message: str, *, retryable: bool = True, busy: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.busy = busy  # a 421 greeting: the server is full for a moment (see busy_delay)


class _Retries:
    """When one hello may reconnect: soon and a few times after a 421 greeting (a server counting
    our closed connections for some milliseconds), later and fewer times after other failures."""

    def __init__(self, config: "ScanConfig") -> None:
        self.config = config
        self.busy = 0
        self.other = 0

    def next_wait(self, exc: ConnectError) -> float | None:
        """Seconds to wait before the next attempt, or None: give up."""
        if not exc.retryable:
            return None
        if exc.busy:
            if self.busy >= BUSY_RETRIES:
                return None
            self.busy += 1
            return busy_delay(self.busy - 1)
        if self.other >= self.config.connect_retries:
            return None
        self.other += 1
        return self.config.retry_delay * self.other


@dataclass
class ScanConfig:
    server_name: str | None = None  # SNI; None for IP literals
    timeout: float = 10.0  # per hello: from sending the ClientHello to a decided answer
    max_suites_per_hello: int = 0  # 0 = offer every candidate at once (fewest connections)
    connect_retries: int = 2
    retry_delay: float = 1.0
    concurrency: int = 2  # used when no shared semaphore is given


@dataclass
class KxInfo:
    """Key exchange parameters observed for one accepted suite."""

    dh_bits: int | None = None
    curve: int | None = None


@dataclass
class ProtocolResult:
    protocol: str
    accepted: bool | None  # None: could not be decided (connection errors)
    detail: str = ""  # how the server answered the first hello
    suites: list[int] = field(default_factory=list)  # in discovery order
    preference: str | None = None  # "server" | "client" | None (fewer than two suites)
    kx: dict[int, KxInfo] = field(default_factory=dict)
    secure_renegotiation: bool | None = None
    errors: list[str] = field(default_factory=list)
    certificates: list[bytes] = field(default_factory=list)
    # Set when the suite enumeration was cut short after suites were found (wire.TIMEOUT: a hello
    # went unanswered; CONNECT_ERROR: no connection any more): the suites found stand, the rest
    # are unknown, so nothing may be concluded from their absence.
    cut_by: str | None = None


@dataclass
class Confirmation:
    """One completed-or-not handshake for a (protocol, suite class) the server selected.

    A class is the suites sharing key exchange and authentication: what decides whether the
    server can finish (its key signs or decrypts; anonymous suites need no key at all).
    """

    protocol: str
    kx: str
    auth: str
    suites: list[int]  # the selected suites of this class, in discovery order
    outcome: str  # handshake.COMPLETED | FAILED | TIMEOUT | LOCAL | CONNECT_ERROR
    detail: str = ""
    cipher: str | None = None  # what the completed handshake negotiated (OpenSSL name)

    @property
    def completed(self) -> bool:
        return self.outcome == handshake.COMPLETED


def suite_class(reg: Registry, protocol: str, code: int) -> tuple[str, str]:
    """(kx, auth) of a suite; TLS 1.3 suites form one class (the certificate signs every one)."""
    if protocol == "TLSv1.3":
        return ("TLS1.3", "certificate")
    s = reg.sslv2_by_code.get(code) if protocol == "SSLv2" else reg.suite(code)
    return (s.kx, s.auth) if s else ("unknown", "unknown")


class TlsScanner:
    """Runs hand-made hellos against one endpoint; counts the connections it opens."""

    def __init__(
        self,
        connect: Connector,
        config: ScanConfig | None = None,
        *,
        registry: Registry | None = None,
        slots: asyncio.Semaphore | None = None,
        on_event: EventSink | None = None,
        on_reply: ReplySink | None = None,
    ) -> None:
        self.on_reply = on_reply
        self.connect = connect
        self.config = config or ScanConfig()
        self.reg = registry or load_registry()
        self.slots = slots or asyncio.Semaphore(max(1, self.config.concurrency))
        self.on_event = on_event
        self.connections = 0
        self.hellos = 0

    # ------------------------------------------------------------------ plumbing

    def _emit(self, conn: int, direction: str, text: str) -> None:
        if self.on_event is not None:
            self.on_event(conn, direction, text)

    def _heard(self, silent: bool) -> None:
        if self.on_reply is not None:
            self.on_reply(silent)

    def _kx_for(self, code: int) -> str:
        s = self.reg.suite(code)
        return s.kx if s else ""

    async def _on_fresh_stream(
        self, exchange: Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[_T]]
    ) -> _T | wire.HelloOutcome:
        """Run ``exchange`` on a new connection (through the slots), closing it afterwards;
        reconnect as ``_Retries`` allows when no stream was had. A ``HelloOutcome`` of kind
        CONNECT_ERROR when none ever was."""
        retries = _Retries(self.config)
        last_error = ""
        while True:
            async with self.slots:
                self.connections += 1
                conn = self.connections
                try:
                    reader, writer = await self.connect()
                except ConnectError as exc:
                    last_error = str(exc)
                    self._emit(conn, "*", f"connection failed: {exc}")
                    wait = retries.next_wait(exc)
                else:
                    try:
                        return await exchange(conn, reader, writer)
                    finally:
                        writer.close()
                        try:
                            await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
                        except (OSError, asyncio.TimeoutError, TimeoutError):
                            pass
            if wait is None:
                break
            await asyncio.sleep(wait)
        return wire.HelloOutcome(kind=CONNECT_ERROR, detail=last_error)

    async def hello(
        self, data: bytes, *, label: str, sslv2: bool = False, full_flight: bool = False
    ) -> wire.HelloOutcome:
        """Open a connection, send one hello, read the answer, close. Never raises for server behaviour."""

        async def exchange(conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> wire.HelloOutcome:
            self.hellos += 1
            self._emit(conn, "C", label)
            out = await wire.exchange(
                reader,
                writer,
                data,
                timeout=self.config.timeout,
                full_flight=full_flight,
                kx_for=self._kx_for,
                sslv2=sslv2,
            )
            self._emit(conn, "S", out.describe())
            self._heard(out.silent)
            return out

        return await self._on_fresh_stream(exchange)

    def legacy_spec(self, protocol: str, suites: list[int], **kw: object) -> HelloSpec:
        version = PROTOCOL_VERSION[protocol]
        groups = [g.code for g in self.reg.groups if g.kind == "ec" and g.code <= 30] + [
            g.code for g in self.reg.groups if g.kind == "ffdhe"
        ]
        if version == 0x0300:
            # SSLv3 clients sent no extensions; signal secure renegotiation with the SCSV instead.
            spec = HelloSpec(version=version, suites=suites, extensions=False, renegotiation_scsv=True)
        else:
            spec = HelloSpec(
                version=version,
                suites=suites,
                server_name=self.config.server_name,
                groups=_prefer(groups, (29, 23, 24, 25, 30)),
                sigalgs=list(self.reg.sigalgs),
            )
        for k, v in kw.items():
            setattr(spec, k, v)
        return spec

    def tls13_spec(self, suites: list[int], *, groups: list[int] | None = None, shares: list[int] | None = (29, 23)) -> HelloSpec:  # type: ignore[assignment]
        all_groups = groups if groups is not None else _prefer([g.code for g in self.reg.groups if g.tls13], (0x11EC, 29, 23, 24, 25, 30))
        key_shares: list[tuple[int, bytes]] = []
        for g in shares or ():
            if g in all_groups:
                pub = codec.key_share_for(g)
                if pub is not None:
                    key_shares.append((g, pub))
        return HelloSpec(
            version=0x0303,
            suites=suites,
            server_name=self.config.server_name,
            groups=all_groups,
            point_formats=False,
            sigalgs=list(self.reg.sigalgs),
            renegotiation_info=False,
            extended_master_secret=False,
            tls13_versions=[0x0304],
            key_shares=key_shares,
        )

    # ------------------------------------------------------------------ protocols and suites

    async def scan_sslv2(self) -> ProtocolResult:
        """One SSLv2 CLIENT-HELLO; the SERVER-HELLO lists every SSLv2 cipher the server shares with us."""
        res = ProtocolResult("SSLv2", accepted=False)
        specs = [s.code for s in self.reg.suites if s.sslv2]
        out = await self.hello(codec.build_sslv2_client_hello(specs), label=f"SSLv2 CLIENT-HELLO ({len(specs)} cipher specs)", sslv2=True)
        if out.kind == wire.TIMEOUT:
            # One retry, as for the other versions: a slow start must not decide anything.
            out = await self.hello(codec.build_sslv2_client_hello(specs), label=f"SSLv2 CLIENT-HELLO ({len(specs)} cipher specs, retry)", sslv2=True)
        res.detail = out.describe()
        if out.kind == wire.SSLV2_HELLO and out.sslv2 is not None:
            offered = set(specs)
            chosen = [c for c in out.sslv2.cipher_specs if c in offered]
            res.accepted = out.sslv2.version == 0x0002 and bool(chosen)
            res.suites = chosen if res.accepted else []
            if out.sslv2.certificate:
                res.certificates = [out.sslv2.certificate]
            if not res.accepted:
                res.detail += " (no usable SSLv2 cipher)"
        elif out.kind in (CONNECT_ERROR,):
            res.accepted = None
            res.errors.append(out.detail)
        elif out.kind in (wire.TIMEOUT, wire.GARBAGE):
            res.errors.append(f"SSLv2: {out.describe()}")
            if out.kind == wire.TIMEOUT:
                res.accepted = None  # silence decides nothing
        return res

    def _chunks(self, codes: list[int]) -> list[list[int]]:
        n = self.config.max_suites_per_hello
        if n <= 0 or len(codes) <= n:
            return [list(codes)]
        return [codes[i : i + n] for i in range(0, len(codes), n)]

    async def _enumerate(
        self,
        protocol: str,
        candidates: list[int],
        make: Callable[[list[int]], HelloSpec],
        res: ProtocolResult,
        *,
        full_flight: bool,
    ) -> None:
        """Offer, take the chosen suite out, offer again. Fills ``res.suites`` and ``res.kx``."""
        version = PROTOCOL_VERSION[protocol]
        first = True
        chunks = self._chunks(candidates)
        for chunk in chunks:
            if res.cut_by:
                break
            remaining = list(chunk)
            while remaining:
                spec = make(remaining)
                label = f"ClientHello {protocol} ({len(remaining)} suites)"
                out = await self.hello(codec.build_client_hello(spec), label=label, full_flight=full_flight)
                if first and out.kind in (wire.TIMEOUT, wire.GARBAGE, wire.RESET) and not res.suites:
                    # One retry: a slow or flaky start must not read as "protocol refused".
                    out = await self.hello(codec.build_client_hello(make(remaining)), label=label + " (retry)", full_flight=full_flight)
                if first:
                    res.detail = out.describe()
                first = False
                if out.kind == CONNECT_ERROR:
                    res.errors.append(f"{protocol}: {out.detail}")
                    if not res.suites:
                        res.accepted = None
                        return
                    # The version was selected (it stays accepted); the suites not yet found are unknown.
                    res.cut_by = CONNECT_ERROR
                    break
                sh = out.server_hello
                if out.kind != wire.HELLO or sh is None:
                    if out.kind in (wire.TIMEOUT, wire.GARBAGE):
                        res.errors.append(f"{protocol}: {out.describe()}")
                    if out.kind == wire.TIMEOUT and not res.suites:
                        # Silence (twice) is not a refusal: the version stays undecided, so a
                        # server that stalls on SSLv3 hellos does not pass "SSLv3 not accepted".
                        res.accepted = None
                    elif out.kind == wire.TIMEOUT:
                        res.cut_by = wire.TIMEOUT  # silence is no "no more suites"
                    break
                if sh.negotiated_version != version:
                    # The server answered with another version: it does not do this one (with these suites).
                    break
                suite = sh.cipher_suite
                if suite not in remaining:
                    res.errors.append(f"{protocol}: server picked suite 0x{suite:04X} that was not offered")
                    break
                if res.secure_renegotiation is None and version < 0x0304:
                    res.secure_renegotiation = sh.secure_renegotiation
                res.suites.append(suite)
                remaining.remove(suite)
                if out.key_exchange is not None:
                    res.kx[suite] = KxInfo(dh_bits=out.key_exchange.dh_prime_bits, curve=out.key_exchange.curve)
                elif version >= 0x0304 and sh.selected_group is not None:
                    res.kx[suite] = KxInfo(curve=sh.selected_group)
                if out.certificates and not res.certificates:
                    res.certificates = out.certificates
        if res.accepted is not None:
            res.accepted = bool(res.suites)
        if len(res.suites) >= 2 and res.accepted:
            await self._preference(protocol, res, make, full_flight=False, chunked=len(chunks) > 1)

    async def _preference(
        self, protocol: str, res: ProtocolResult, make: Callable[[list[int]], HelloSpec], *, full_flight: bool, chunked: bool
    ) -> None:
        reverse = list(reversed(res.suites))
        out = await self.hello(codec.build_client_hello(make(reverse)), label=f"ClientHello {protocol} (accepted suites, reversed)")
        if out.kind != wire.HELLO or out.server_hello is None:
            res.errors.append(f"{protocol}: preference test: {out.describe()}")
            return
        picked = out.server_hello.cipher_suite
        if picked == reverse[0]:
            res.preference = "client"
            return
        res.preference = "server"
        if chunked:
            # Discovery happened per chunk, so the order is only per chunk: redo it over the winners.
            order: list[int] = []
            left = list(res.suites)
            while len(left) > 1:
                o = await self.hello(codec.build_client_hello(make(left)), label=f"ClientHello {protocol} (ordering, {len(left)} suites)")
                if o.kind != wire.HELLO or o.server_hello is None or o.server_hello.cipher_suite not in left:
                    res.errors.append(f"{protocol}: ordering: {o.describe()}")
                    return
                order.append(o.server_hello.cipher_suite)
                left.remove(o.server_hello.cipher_suite)
            res.suites = order + left

    async def scan_legacy(self, protocol: str) -> ProtocolResult:
        res = ProtocolResult(protocol, accepted=False)
        candidates = [s.code for s in self.reg.legacy_tls_suites()]
        await self._enumerate(protocol, candidates, lambda rem: self.legacy_spec(protocol, rem), res, full_flight=True)
        return res

    async def scan_tls13(self) -> ProtocolResult:
        res = ProtocolResult("TLSv1.3", accepted=False)
        candidates = [s.code for s in self.reg.suites_for("TLSv1.3")]
        await self._enumerate("TLSv1.3", candidates, lambda rem: self.tls13_spec(rem), res, full_flight=False)
        return res

    async def scan_protocols(self, protocols: tuple[str, ...] = ("SSLv2", *LEGACY_PROTOCOLS, "TLSv1.3")) -> dict[str, ProtocolResult]:
        """Every protocol, concurrently (bounded by the slots); each enumerates its suites."""

        async def one(p: str) -> ProtocolResult:
            if p == "SSLv2":
                return await self.scan_sslv2()
            if p == "TLSv1.3":
                return await self.scan_tls13()
            return await self.scan_legacy(p)

        results = await asyncio.gather(*(one(p) for p in protocols))
        return {r.protocol: r for r in results}

    # ------------------------------------------------------------------ groups

    async def scan_tls13_groups(self, suites: list[int]) -> tuple[list[int], list[str], str | None]:
        """Groups a TLS 1.3 server accepts, in the order it picks them (empty key_share -> HRR),
        the errors, and the outcome kind (wire.TIMEOUT, CONNECT_ERROR) of a hello without answer
        that ended the enumeration early, else None."""
        candidates = _prefer([g.code for g in self.reg.groups if g.tls13], (0x11EC, 29, 23, 24, 25, 30))
        found: list[int] = []
        errors: list[str] = []
        cut: str | None = None
        while candidates:
            spec = self.tls13_spec(suites, groups=candidates, shares=())
            out = await self.hello(codec.build_client_hello(spec), label=f"ClientHello TLSv1.3 (empty key_share, {len(candidates)} groups)")
            sh = out.server_hello
            if out.kind != wire.HELLO or sh is None:
                if out.kind not in wire.REJECTIONS:
                    errors.append(f"TLS 1.3 groups: {out.describe()}")
                    cut = _unanswered(out)
                break
            group = sh.selected_group
            if sh.negotiated_version != 0x0304 or group is None or group not in candidates:
                errors.append(f"TLS 1.3 groups: unexpected answer {out.describe()} group={group}")
                break
            found.append(group)
            candidates.remove(group)
        return found, errors, cut

    async def scan_ecdhe_curves(
        self, protocol: str, ecdhe_suites: list[int], *, client_preference: bool = False
    ) -> tuple[list[int], list[str], str | None]:
        """Curves a TLS <= 1.2 server uses for ECDHE, read from its ServerKeyExchange; with the
        errors and, as for groups, the kind of an unanswered hello that ended it early.

        RFC 8422 5.1: the client's supported_groups also bound the curve of an ECDSA
        certificate, so a server with a P-256 key refuses every hello without P-256 once that
        curve is taken out. When a hello is refused, each curve already found is tried as a
        companion at the end of the offer; the one that makes the server answer again stays
        there, and enumeration goes on (a server that then still prefers the companion ends it).
        Only with ECDSA-authenticated suites: an RSA certificate puts no curve in that list.
        """
        ecdsa_only = all((s := self.reg.suite(c)) is not None and s.auth == "ECDSA" for c in ecdhe_suites)
        candidates = _prefer([g.code for g in self.reg.groups if g.kind == "ec" and g.code <= 30], (29, 23, 24, 25, 30))
        found: list[int] = []
        errors: list[str] = []
        cut: str | None = None
        companion: list[int] = []

        async def offer(groups: list[int]) -> wire.HelloOutcome:
            spec = self.legacy_spec(protocol, list(ecdhe_suites), groups=groups)
            return await self.hello(codec.build_client_hello(spec), label=f"ClientHello {protocol} (ECDHE, {len(groups)} curves)", full_flight=True)

        while candidates and ecdhe_suites:
            out = await offer(candidates + companion)
            if out.kind != wire.HELLO or out.server_hello is None:
                if out.kind not in wire.REJECTIONS:
                    errors.append(f"ECDHE curves: {out.describe()}")
                    cut = _unanswered(out)
                    break
                if companion or not found or not ecdsa_only:
                    break
                for helper in found:
                    retry = await offer(candidates + [helper])
                    if retry.kind == wire.HELLO and retry.key_exchange is not None and retry.key_exchange.curve in candidates:
                        companion, out = [helper], retry
                        break
                    if retry.kind == wire.HELLO and retry.key_exchange is not None and retry.key_exchange.curve == helper:
                        # Picked last in a client-preference server's list: none of the rest works.
                        # A server that imposes its order may just prefer it: then we cannot tell.
                        if client_preference:
                            break
                        left = ", ".join(self.reg.group_name(c) for c in candidates)
                        errors.append(f"ECDHE curves: the server prefers {self.reg.group_name(helper)}, which its certificate needs, to {left}: not enumerated")
                        break
                else:
                    break
                if not companion:
                    break
            ske = out.key_exchange
            if ske is None or ske.curve is None:
                errors.append(f"ECDHE curves: no named curve in ServerKeyExchange ({out.describe()})")
                break
            if ske.curve in companion:
                if client_preference:
                    break  # offered last and still chosen: none of the rest works
                # The server prefers the companion to every curve left: those stay unknown.
                left = ", ".join(self.reg.group_name(c) for c in candidates)
                errors.append(f"ECDHE curves: the server prefers {self.reg.group_name(ske.curve)}, which its certificate needs, to {left}: not enumerated")
                break
            if ske.curve not in candidates:
                # RFC 8422 5.1: the server must pick from our list; one that does not is noted and stops us.
                errors.append(f"ECDHE curves: server used curve {ske.curve} that was not offered")
                found.append(ske.curve)
                break
            found.append(ske.curve)
            candidates.remove(ske.curve)
        return found, errors, cut

    # ------------------------------------------------------------------ features

    async def fallback_scsv(self, accepted: list[str]) -> tuple[bool | None, str]:
        """RFC 7507: offer TLS_FALLBACK_SCSV below the best version; a compliant server aborts."""
        versions = [p for p in ("SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3") if p in accepted]
        if len(versions) < 2:
            return None, "fewer than two protocol versions accepted"
        below = versions[-2]
        spec = self.legacy_spec(below, [s.code for s in self.reg.legacy_tls_suites()], fallback_scsv=True)
        out = await self.hello(codec.build_client_hello(spec), label=f"ClientHello {below} + TLS_FALLBACK_SCSV")
        if out.kind == wire.ALERT and out.alert is not None and out.alert.description == 86:
            return True, out.describe()
        if out.kind == wire.HELLO:
            return False, out.describe()
        if out.rejected:
            # Some stacks hang up instead of sending inappropriate_fallback. The same hello without
            # the SCSV was accepted during enumeration, so the refusal is the SCSV's doing.
            return True, out.describe() + " (refused without the inappropriate_fallback alert)"
        return None, out.describe()

    async def compression(self, protocol: str) -> tuple[bool | None, str]:
        """Offer DEFLATE before null compression (CRIME); the ServerHello says which was taken."""
        spec = self.legacy_spec(protocol, [s.code for s in self.reg.legacy_tls_suites()], compression=[1, 0])
        out = await self.hello(codec.build_client_hello(spec), label=f"ClientHello {protocol} (DEFLATE, null compression)")
        if out.kind == wire.HELLO and out.server_hello is not None:
            return out.server_hello.compression != 0, out.describe() + f" compression={out.server_hello.compression}"
        return None, out.describe()

    # ------------------------------------------------------------------ completed handshakes

    async def full_handshake(
        self, *, label: str, protocol: str | None, ciphers: str, tls13_ciphers: str | None
    ) -> handshake.HandshakeResult | wire.HelloOutcome:
        """One full OpenSSL handshake on a fresh connection (through the slots, with retries on
        connection failures). A ``HelloOutcome`` of kind CONNECT_ERROR when no stream was had."""

        async def exchange(conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> handshake.HandshakeResult:
            self._emit(conn, "C", label)
            res = await handshake.run_handshake(
                reader,
                writer,
                server_name=self.config.server_name,
                timeout=self.config.timeout,
                protocol=protocol,
                ciphers=ciphers,
                tls13_ciphers=tls13_ciphers,
            )
            self._heard(res.silent)
            if res.completed:
                self._emit(conn, "S", f"handshake completed: {res.version} {res.cipher}")
            else:
                self._emit(conn, "S", f"handshake {res.outcome}: {res.detail}")
            return res

        return await self._on_fresh_stream(exchange)

    async def confirm(self, results: dict[str, ProtocolResult]) -> list[Confirmation]:
        """Finish one real handshake per (protocol, suite class) the server selected.

        Offers exactly that class's selected suites, pinned to that protocol, so a completed
        handshake proves a client can use the class at that version; a failure after the
        ServerHello proves it cannot (OpenSMTPD 6.8 on OpenSSL 3 selects RSA suites it cannot
        sign with). SSLv2 and SSLv3 are outside what the local OpenSSL can speak (LOCAL)."""
        plan: list[Confirmation] = []
        for protocol, res in results.items():
            if not res.accepted:
                continue
            classes: dict[tuple[str, str], list[int]] = {}
            for code in res.suites:
                classes.setdefault(suite_class(self.reg, protocol, code), []).append(code)
            for (kx, auth), codes in classes.items():
                plan.append(Confirmation(protocol, kx, auth, codes, outcome=""))

        async def one(c: Confirmation) -> None:
            if c.protocol in ("SSLv2", "SSLv3"):
                c.outcome, c.detail = handshake.LOCAL, f"the local OpenSSL cannot speak {c.protocol}"
                return
            names = [s.openssl for code in c.suites if (s := self.reg.suite(code)) is not None and s.openssl]
            if not names:
                c.outcome, c.detail = handshake.LOCAL, "no suite of this class is known to OpenSSL"
                return
            if c.protocol == "TLSv1.3":
                ciphers, tls13 = handshake.AUTHENTICATED_CIPHERS, ":".join(names)
            else:
                ciphers, tls13 = ":".join(names) + ":@SECLEVEL=0", None
            label = f"full handshake {c.protocol} {c.kx}/{c.auth} ({len(names)} suites)"
            out = await self.full_handshake(label=label, protocol=c.protocol, ciphers=ciphers, tls13_ciphers=tls13)
            if isinstance(out, wire.HelloOutcome):
                c.outcome, c.detail = CONNECT_ERROR, out.detail
                return
            c.outcome, c.detail, c.cipher = out.outcome, out.detail, out.cipher

        await asyncio.gather(*(one(c) for c in plan))
        return plan


def _unanswered(out: wire.HelloOutcome) -> str | None:
    """The outcome kind when a hello got no answer (silence, or no connection), else None."""
    return out.kind if out.kind in (wire.TIMEOUT, CONNECT_ERROR) else None


def _prefer(codes: list[int], first: tuple[int, ...]) -> list[int]:
    """``codes`` reordered with ``first`` (those present) at the front: a realistic client order."""
    head = [c for c in first if c in codes]
    return head + [c for c in codes if c not in head]
