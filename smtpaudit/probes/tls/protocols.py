"""The ``tls.protocols`` probe: protocol versions, cipher suites, preference, groups, DH sizes,
secure renegotiation, compression and TLS_FALLBACK_SCSV, from hand-made hellos, confirmed by
real handshakes.

A ServerHello only says what the server *selected*. Each (version, suite class) it selected is
then finished once with OpenSSL (``scanner.confirm``): only what completes is reported as
accepted; what was selected and then failed is kept apart as evidence (``tls.handshake.*``).
Turns ``scanner.TlsScanner`` results into the facts declared in
``smtpaudit/facts/tls.protocols.toml``. Observes only; the rules in ``rules/tls/`` judge.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Mapping

from smtpaudit.outcomes import ProbeStatus, Reason
from smtpaudit.probes.base import ProbeContext, ProbeResult
from smtpaudit.probes.smtp.client import Transcript
from smtpaudit.probes.tls.connect import SmtpTlsConnector, sni_for, starttls_unavailable
from smtpaudit.probes.tls import handshake, wire
from smtpaudit.probes.tls.registry import PROTOCOLS, Registry, load_registry
from smtpaudit.probes.tls.scanner import CONNECT_ERROR, Confirmation, ProtocolResult, ScanConfig, TlsScanner, suite_class
from smtpaudit.targets import Endpoint

FACTS = (
    "tls.available",
    "tls.protocols.selected",
    "tls.protocols.accepted",
    "tls.protocols.handshake_failed",
    "tls.protocols.confirmation",
    "tls.protocols.rejected",
    "tls.protocols.undetermined",
    "tls.protocols.best",
    "tls.protocols.deprecated",
    "tls.protocols.detail",
    "tls.suites.accepted",
    "tls.suites.names",
    "tls.suites.by_protocol",
    "tls.suites.preference",
    "tls.suites.flags",
    "tls.suites.tls12_aead",
    "tls.suites.tls12_authenticated_aead",
    "tls.suites.anonymous",
    "tls.suites.anonymous_only",
    "tls.handshake.failed",
    "tls.handshake.failures",
    "tls.handshake.confirmations",
    "tls.handshake.summary",
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


def tls_reply_sink(ctx: ProbeContext) -> Callable[[bool], None] | None:
    """What the scanner calls after each hello or handshake: feeds the endpoint's SilenceWatch."""
    watch = ctx.silence
    if watch is None:
        return None
    return lambda silent: watch.saw("tls", silent=silent)


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


def judge_confirmations(
    reg: Registry, results: Mapping[str, ProtocolResult], confirmations: list[Confirmation]
) -> tuple[dict[tuple[str, int], str], dict[str, str]]:
    """Pure: what each selected suite and protocol turned out to be once handshakes were finished.

    Returns ``(suite_status, protocol_status)``. A suite is ``handshake`` (its class completed at
    its protocol), ``inferred`` (its class could not be tried here, SSLv2/SSLv3 or no local
    OpenSSL support, but the same class completed at another version or another class completed
    at this one), ``failed`` (its class was selected and the handshake then failed) or
    ``unconfirmed`` (no decision: timeouts, connection errors). A protocol is ``handshake`` /
    ``inferred`` when one of its suites is, ``failed`` when every tried class failed, else
    ``unconfirmed``.
    """
    by_key = {(c.protocol, c.kx, c.auth): c for c in confirmations}
    completed_classes = {(c.kx, c.auth) for c in confirmations if c.completed}
    completed_protocols = {c.protocol for c in confirmations if c.completed}
    suite_status: dict[tuple[str, int], str] = {}
    protocol_status: dict[str, str] = {}
    for p, r in results.items():
        if not r.accepted:
            continue
        states: list[str] = []
        for code in r.suites:
            kx, auth = suite_class(reg, p, code)
            c = by_key.get((p, kx, auth))
            if c is None:
                st = "unconfirmed"
            elif c.completed:
                st = "handshake"
            elif c.outcome == handshake.FAILED:
                st = "failed"
            elif c.outcome == handshake.LOCAL and (p in completed_protocols or (kx, auth) in completed_classes):
                st = "inferred"
            else:
                st = "unconfirmed"
            suite_status[(p, code)] = st
            states.append(st)
        if "handshake" in states:
            protocol_status[p] = "handshake"
        elif "inferred" in states:
            protocol_status[p] = "inferred"
        elif states and all(st == "failed" for st in states):
            protocol_status[p] = "failed"
        else:
            protocol_status[p] = "unconfirmed"
    return suite_status, protocol_status


def facts_from_scan(
    reg: Registry,
    results: Mapping[str, ProtocolResult],
    *,
    tls13_groups: list[int],
    tls12_curves: list[int],
    compression: bool | None,
    fallback: bool | None,
    errors: list[str],
    confirmations: list[Confirmation] | None = None,
) -> dict[str, Any]:
    """Pure: scanner results -> facts. Kept separate so it is tested without a network.

    Support is claimed only from completed handshakes (``confirmations``); what the server only
    selected in a ServerHello is kept apart (``tls.protocols.selected``, ``tls.handshake.*``).
    ``confirmations=None`` trusts the ServerHellos (codec tests without a real handshake).
    """
    f: dict[str, Any] = {}
    selected = [p for p in PROTOCOLS if p in results and results[p].accepted is True]
    if confirmations is None:
        suite_status = {(p, c): "handshake" for p in selected for c in results[p].suites}
        protocol_status = {p: "handshake" for p in selected}
    else:
        suite_status, protocol_status = judge_confirmations(reg, results, confirmations)
    accepted = [p for p in selected if protocol_status.get(p) in ("handshake", "inferred")]
    failed = [p for p in selected if protocol_status.get(p) == "failed"]
    unconfirmed = [p for p in selected if protocol_status.get(p) == "unconfirmed"]
    f["tls.protocols.selected"] = selected
    f["tls.protocols.accepted"] = accepted
    f["tls.protocols.handshake_failed"] = failed
    f["tls.protocols.rejected"] = [p for p in PROTOCOLS if p in results and results[p].accepted is False]
    f["tls.protocols.undetermined"] = [p for p in PROTOCOLS if p in results and results[p].accepted is None] + unconfirmed
    f["tls.protocols.best"] = accepted[-1] if accepted else None
    f["tls.protocols.deprecated"] = [p for p in accepted if p in ("TLSv1.0", "TLSv1.1")]
    f["tls.protocols.detail"] = {p: r.detail for p, r in results.items()}
    f["tls.protocols.confirmation"] = {p: protocol_status[p] for p in selected}
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
            status = suite_status.get((p, code))
            if status not in ("handshake", "inferred"):
                continue
            suite = lookup.get(code)
            item: dict[str, Any] = suite.to_json() if suite else {"code": f"0x{code:04X}", "name": f"UNKNOWN_0x{code:04X}", "flags": []}
            item["protocol"] = p
            item["server_order"] = order if r.preference == "server" else None
            item["confirmed"] = status
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
    tls12 = [i for i in items if i["protocol"] == "TLSv1.2"]
    f["tls.suites.tls12_aead"] = any("aead" in i["flags"] for i in tls12) if "TLSv1.2" in accepted else None
    # TLS 1.2 suites with a certificate (what a client that authenticates can use): CBC-only there
    # while AEAD exists is a finding of its own, apart from anonymous AEAD suites.
    authed12 = [i for i in tls12 if "anon" not in i["flags"] and "null" not in i["flags"]]
    f["tls.suites.tls12_authenticated_aead"] = any("aead" in i["flags"] for i in authed12) if authed12 else None
    if items:
        fs = ["fs" in i["flags"] for i in items]
        f["tls.suites.forward_secrecy"] = "all" if all(fs) else ("some" if any(fs) else "none")
    else:
        f["tls.suites.forward_secrecy"] = None
    anon = [f"{i['protocol']} {i['name']}" for i in items if "anon" in i["flags"]]
    f["tls.suites.anonymous"] = anon
    f["tls.suites.anonymous_only"] = bool(items) and len(anon) == len(items)

    failures: list[dict[str, Any]] = []
    for c in confirmations or []:
        if c.outcome == handshake.FAILED:
            lookup = reg.sslv2_by_code if c.protocol == "SSLv2" else reg.suite_by_code
            failures.append({
                "protocol": c.protocol,
                "kx": c.kx,
                "auth": c.auth,
                "suites": [lookup[x].iana if x in lookup else f"UNKNOWN_0x{x:04X}" for x in c.suites],
                "error": c.detail,
            })
    f["tls.handshake.failures"] = failures
    f["tls.handshake.failed"] = bool(failures) if confirmations is not None else None
    f["tls.handshake.confirmations"] = [
        {"protocol": c.protocol, "kx": c.kx, "auth": c.auth, "suites": len(c.suites), "outcome": c.outcome,
         "cipher": c.cipher, "detail": c.detail}
        for c in confirmations or []
    ]
    f["tls.handshake.summary"] = _failure_summary(failures, accepted)

    f["tls.groups.tls13"] = [reg.group_name(g) for g in tls13_groups] if "TLSv1.3" in accepted else None
    f["tls.groups.tls12"] = [reg.group_name(g) for g in tls12_curves] if any(p in accepted for p in ("TLSv1.0", "TLSv1.1", "TLSv1.2", "SSLv3")) else None
    all_groups: list[str] = []
    for name in (f["tls.groups.tls13"] or []) + (f["tls.groups.tls12"] or []):
        if name not in all_groups:
            all_groups.append(name)
    f["tls.groups.accepted"] = all_groups
    used13 = tls13_groups if "TLSv1.3" in accepted else []
    used12 = tls12_curves if f["tls.groups.tls12"] is not None else []
    ec_bits = [reg.group_by_code[g].bits for g in used13 + used12 if g in reg.group_by_code and reg.group_by_code[g].kind == "ec"]
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


def _failure_summary(failures: list[dict[str, Any]], accepted: list[str]) -> str | None:
    """One line for the finding: which versions / suite classes the server picks but cannot finish."""
    if not failures:
        return None
    parts = []
    for fl in failures:
        what = "TLS 1.3" if fl["protocol"] == "TLSv1.3" else f"{fl['protocol']} {fl['kx']}/{fl['auth']} ({len(fl['suites'])} suites)"
        parts.append(f"{what}: {fl['error']}")
    usable = ", ".join(accepted) if accepted else "none"
    return f"selected by the server but the handshake fails: {'; '.join(parts[:6])}" + (
        f" (+{len(parts) - 6} more)" if len(parts) > 6 else ""
    ) + f"; versions that complete: {usable}"


class TlsProtocolsProbe:
    """Which protocol versions, suites and groups the endpoint accepts (hand-made hellos)."""

    name: ClassVar[str] = "tls.protocols"
    intrusive: ClassVar[bool] = False
    sockets: ClassVar[int] = 2  # hellos run two at a time
    sockets_min: ClassVar[int] = 1
    after: ClassVar[tuple[str, ...]] = ("smtp.session",)

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        result = ProbeResult(probe=self.name)
        started = time.monotonic()
        transcript = Transcript(ctx.secrets)
        why_not = starttls_unavailable(endpoint, prior)
        if why_not:
            result.status = ProbeStatus.SKIPPED
            result.error_reason = Reason.NO_TLS
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
            on_reply=tls_reply_sink(ctx),
        )
        try:
            results = await scanner.scan_protocols()
            errors = [e for r in results.values() for e in r.errors]
            # A ServerHello is a choice, not a working handshake: finish one per suite class.
            confirmations = await scanner.confirm(results)
            suite_status, protocol_status = judge_confirmations(reg, results, confirmations)
            accepted = [p for p in PROTOCOLS if results[p].accepted and protocol_status.get(p) in ("handshake", "inferred")]
            usable = {(p, c) for (p, c), st in suite_status.items() if st in ("handshake", "inferred")}
            tls13_groups: list[int] = []
            groups_cut: list[str] = []  # group enumerations that ended on a hello without answer
            if "TLSv1.3" in accepted:
                tls13_groups, errs, cut_by = await scanner.scan_tls13_groups([c for c in results["TLSv1.3"].suites if ("TLSv1.3", c) in usable])
                errors += errs
                groups_cut += [cut_by] if cut_by else []
            curves: list[int] = []
            legacy = [p for p in ("TLSv1.2", "TLSv1.1", "TLSv1.0", "SSLv3") if p in accepted and p != "SSLv3"]
            compression: bool | None = None
            compression_how = ""
            if legacy:
                best = legacy[0]
                ecdhe = [
                    c for c in results[best].suites
                    if (best, c) in usable and (s := reg.suite(c)) is not None and s.kx == "ECDHE"
                ]
                # An ECDSA certificate's curve must stay offered (RFC 8422 5.1); RSA-authenticated
                # ECDHE, when the server has it too, shows the curves without that constraint.
                ecdsa = [c for c in ecdhe if (s := reg.suite(c)) is not None and s.auth == "ECDSA"]
                if ecdsa and len(ecdsa) < len(ecdhe):
                    ecdhe = [c for c in ecdhe if c not in ecdsa]
                if ecdhe:
                    curves, errs, cut_by = await scanner.scan_ecdhe_curves(
                        best, ecdhe, client_preference=results[best].preference == "client"
                    )
                    errors += errs
                    groups_cut += [cut_by] if cut_by else []
                compression, compression_how = await scanner.compression(best)
            fallback, fallback_how = await scanner.fallback_scsv(accepted)
            result.facts = facts_from_scan(
                reg, results, tls13_groups=tls13_groups, tls12_curves=curves, compression=compression,
                fallback=fallback, errors=errors, confirmations=confirmations,
            )
            result.facts["tls.scan.hellos"] = scanner.hellos
            for fact, how in (("tls.compression", compression_how), ("tls.fallback_scsv", fallback_how)):
                if result.facts.get(fact) is None and how.startswith((wire.TIMEOUT, CONNECT_ERROR)):
                    # The hello that decides it got no answer: unknown, so absent (a null would
                    # read as "no compression" / "protected" and pass the rule).
                    del result.facts[fact]
            undecided = result.facts["tls.protocols.undetermined"]
            if undecided:
                result.status = ProbeStatus.ERROR
                why = [f"{c.protocol} {c.kx}/{c.auth}: {c.outcome} {c.detail}" for c in confirmations
                       if c.protocol in undecided and not c.completed]
                # Never reached (connection refused, 421) vs. selected but no handshake decided.
                no_hello = any(results[p].accepted is None for p in undecided)
                result.error_reason = Reason.CONNECT if no_hello else Reason.TLS_HANDSHAKE
                if no_hello and all(results[p].detail.startswith(wire.TIMEOUT) for p in undecided
                                    if p in results and results[p].accepted is None):
                    # Hellos that got no answer at all (a server silent to SSLv3 hellos, say):
                    # the version is undetermined because nothing came back, not for want of a connection.
                    result.error_reason = Reason.READ_TIMEOUT
                result.error_message = f"could not test {', '.join(undecided)}: " + "; ".join((errors + why)[:3])
                if connector.silenced:
                    # Silent (after STARTTLS, or earlier) on every connection so far: nothing was
                    # refused, nothing seen; the hellos left were not sent.
                    result.error_reason = Reason.READ_TIMEOUT
                    result.error_message = f"could not test {', '.join(undecided)}: {connector.silenced}"
            cut = [p for p in PROTOCOLS if results[p].cut_by]
            if (cut or groups_cut) and not undecided:
                # Suites or groups found before a hello went unanswered (or no connection was had)
                # stand and may prove findings; the rest are unknown, so no rule may pass on the
                # partial lists.
                result.status = ProbeStatus.ERROR
                silent = wire.TIMEOUT in [results[p].cut_by for p in cut] + groups_cut
                result.error_reason = Reason.READ_TIMEOUT if silent else Reason.CONNECT
                what = [f"suite enumeration cut short for {', '.join(cut)}"] if cut else []
                what += ["group enumeration cut short"] if groups_cut else []
                result.error_message = "; ".join(what) + ": " + "; ".join(errors[:3])
        finally:
            result.connections = scanner.connections
            result.transcript = transcript.lines
            result.duration = time.monotonic() - started
        return result
