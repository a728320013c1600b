"""The ``tls.protocols`` probe: protocol versions, cipher suites, preference, groups, DH sizes,
secure renegotiation, compression and TLS_FALLBACK_SCSV, all from hand-made hellos.

Turns ``scanner.TlsScanner`` results into the facts declared in
``smtpaudit/facts/tls.protocols.toml``. Observes only; the rules in ``rules/tls/`` judge.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeResult
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.probes.tls.connect import SmtpTlsConnector, sni_for, starttls_unavailable
from smtpaudit.probes.tls.registry import PROTOCOLS, Registry, load_registry
from smtpaudit.probes.tls.scanner import ProtocolResult, ScanConfig, TlsScanner
from smtpaudit.targets import Endpoint

FACTS = (
    "tls.available",
    "tls.protocols.accepted",
    "tls.protocols.rejected",
    "tls.protocols.undetermined",
    "tls.protocols.best",
    "tls.protocols.detail",
    "tls.suites.accepted",
    "tls.suites.names",
    "tls.suites.by_protocol",
    "tls.suites.preference",
    "tls.suites.flags",
    "tls.suites.tls12_aead",
    "tls.suites.forward_secrecy",
    "tls.groups.tls13",
    "tls.groups.tls12",
    "tls.groups.accepted",
    "tls.groups.min_ec_bits",
    "tls.groups.pq_hybrid",
    "tls.dh.min_bits",
    "tls.secure_renegotiation",
    "tls.compression",
    "tls.fallback_scsv",
    "tls.scan.errors",
    "tls.scan.hellos",
)


def scan_config(endpoint: Endpoint, ctx: ProbeContext) -> ScanConfig:
    opts = ctx.options.get("tls", {}) if isinstance(ctx.options.get("tls"), dict) else {}
    return ScanConfig(
        server_name=sni_for(endpoint),
        timeout=float(opts.get("hello_timeout", ctx.timeouts.tls)),
        max_suites_per_hello=int(opts.get("max_suites_per_hello", 0)),
        connect_retries=int(opts.get("connect_retries", 2)),
        retry_delay=float(opts.get("retry_delay", 1.0)),
        concurrency=int(opts.get("concurrency", 2)),
    )


def facts_from_scan(
    reg: Registry,
    results: Mapping[str, ProtocolResult],
    *,
    tls13_groups: list[int],
    tls12_curves: list[int],
    compression: bool | None,
    fallback: bool | None,
    errors: list[str],
) -> dict[str, Any]:
    """Pure: scanner results -> facts. Kept separate so it is tested without a network."""
    f: dict[str, Any] = {}
    accepted = [p for p in PROTOCOLS if p in results and results[p].accepted is True]
    f["tls.protocols.accepted"] = accepted
    f["tls.protocols.rejected"] = [p for p in PROTOCOLS if p in results and results[p].accepted is False]
    f["tls.protocols.undetermined"] = [p for p in PROTOCOLS if p in results and results[p].accepted is None]
    f["tls.protocols.best"] = accepted[-1] if accepted else None
    f["tls.protocols.detail"] = {p: r.detail for p, r in results.items()}
    f["tls.available"] = bool(accepted) if accepted or not f["tls.protocols.undetermined"] else None

    items: list[dict[str, Any]] = []
    by_protocol: dict[str, list[str]] = {}
    preference: dict[str, str | None] = {}
    names: list[str] = []
    flags: set[str] = set()
    dh_bits: list[int] = []
    for p in accepted:
        r = results[p]
        lookup = reg.sslv2_by_code if p == "SSLv2" else reg.suite_by_code
        by_protocol[p] = []
        preference[p] = r.preference
        for order, code in enumerate(r.suites):
            suite = lookup.get(code)
            item: dict[str, Any] = suite.to_json() if suite else {"code": f"0x{code:04X}", "name": f"UNKNOWN_0x{code:04X}", "flags": []}
            item["protocol"] = p
            item["server_order"] = order if r.preference == "server" else None
            kx = r.kx.get(code)
            item["dh_bits"] = kx.dh_bits if kx else None
            item["curve"] = reg.group_name(kx.curve) if kx and kx.curve is not None else None
            items.append(item)
            by_protocol[p].append(item["name"])
            if item["name"] not in names:
                names.append(item["name"])
            flags.update(item["flags"])
            if kx and kx.dh_bits:
                dh_bits.append(kx.dh_bits)
    f["tls.suites.accepted"] = items
    f["tls.suites.names"] = names
    f["tls.suites.by_protocol"] = by_protocol
    f["tls.suites.preference"] = preference
    f["tls.suites.flags"] = sorted(flags)
    if "TLSv1.2" in accepted:
        f["tls.suites.tls12_aead"] = any("aead" in i["flags"] for i in items if i["protocol"] == "TLSv1.2")
    else:
        f["tls.suites.tls12_aead"] = None
    if items:
        fs = ["fs" in i["flags"] for i in items]
        f["tls.suites.forward_secrecy"] = "all" if all(fs) else ("some" if any(fs) else "none")
    else:
        f["tls.suites.forward_secrecy"] = None

    f["tls.groups.tls13"] = [reg.group_name(g) for g in tls13_groups] if "TLSv1.3" in accepted else None
    f["tls.groups.tls12"] = [reg.group_name(g) for g in tls12_curves] if any(p in accepted for p in ("TLSv1.0", "TLSv1.1", "TLSv1.2", "SSLv3")) else None
    all_groups: list[str] = []
    for name in (f["tls.groups.tls13"] or []) + (f["tls.groups.tls12"] or []):
        if name not in all_groups:
            all_groups.append(name)
    f["tls.groups.accepted"] = all_groups
    ec_bits = [reg.group_by_code[g].bits for g in tls13_groups + tls12_curves if g in reg.group_by_code and reg.group_by_code[g].kind == "ec"]
    f["tls.groups.min_ec_bits"] = min(ec_bits) if ec_bits else None
    f["tls.groups.pq_hybrid"] = (
        any(reg.group_by_code[g].kind in ("hybrid", "kem") for g in tls13_groups if g in reg.group_by_code)
        if "TLSv1.3" in accepted
        else None
    )
    f["tls.dh.min_bits"] = min(dh_bits) if dh_bits else None
    legacy = [p for p in ("TLSv1.2", "TLSv1.1", "TLSv1.0", "SSLv3") if p in accepted]
    f["tls.secure_renegotiation"] = results[legacy[0]].secure_renegotiation if legacy else None
    f["tls.compression"] = compression
    f["tls.fallback_scsv"] = fallback
    f["tls.scan.errors"] = errors
    return f


class TlsProtocolsProbe:
    """Which protocol versions, suites and groups the endpoint accepts (hand-made hellos)."""

    name: ClassVar[str] = "tls.protocols"
    intrusive: ClassVar[bool] = False
    sockets: ClassVar[int] = 2  # hellos run two at a time
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        result = ProbeResult(probe=self.name)
        started = time.monotonic()
        transcript = Transcript(ctx.secrets)
        why_not = starttls_unavailable(endpoint, prior)
        if why_not:
            result.status = "skipped"
            result.error_reason = "no_tls"
            result.error_message = why_not
            # Only this fact: the rest are absent, so rules over them are "not applicable", not "passed".
            result.facts = {"tls.available": False}
            return result
        connector = SmtpTlsConnector(endpoint, ctx, transcript)
        reg = load_registry()
        scanner = TlsScanner(
            connector,
            scan_config(endpoint, ctx),
            registry=reg,
            on_event=lambda conn, d, text: transcript.add(d, text, conn),
        )
        try:
            results = await scanner.scan_protocols()
            errors = [e for r in results.values() for e in r.errors]
            accepted = [p for p in PROTOCOLS if results[p].accepted]
            tls13_groups: list[int] = []
            if "TLSv1.3" in accepted:
                tls13_groups, errs = await scanner.scan_tls13_groups(results["TLSv1.3"].suites)
                errors += errs
            curves: list[int] = []
            legacy = [p for p in ("TLSv1.2", "TLSv1.1", "TLSv1.0", "SSLv3") if p in accepted]
            compression: bool | None = None
            if legacy:
                best = legacy[0]
                ecdhe = [c for c in results[best].suites if (s := reg.suite(c)) is not None and s.kx == "ECDHE"]
                if ecdhe:
                    curves, errs = await scanner.scan_ecdhe_curves(best, ecdhe)
                    errors += errs
                compression, _ = await scanner.compression(best)
            fallback, _ = await scanner.fallback_scsv(accepted)
            result.facts = facts_from_scan(
                reg, results, tls13_groups=tls13_groups, tls12_curves=curves, compression=compression, fallback=fallback, errors=errors
            )
            result.facts["tls.scan.hellos"] = scanner.hellos
            undecided = result.facts["tls.protocols.undetermined"]
            if undecided:
                result.status = "error"
                result.error_reason = "connect"
                result.error_message = f"could not test {', '.join(undecided)}: " + "; ".join(errors[:3])
        finally:
            result.connections = scanner.connections
            result.transcript = transcript.lines
            result.duration = time.monotonic() - started
        return result
