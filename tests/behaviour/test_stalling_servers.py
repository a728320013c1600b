"""Silence is detected, not waited out: each way of going silent costs a few timeouts, never the deadline.

Whole scans (``api.scan``, every default probe) against the fakes of ``tests/fakes/stalling.py``,
with short timeouts (T = 2 s) so the bound is visible in seconds, and the endpoint deadline left at
its default (120 s) so that waiting it out would show. The endpoint's ``SilenceWatch`` gives up on a step
(dripped greeting, EHLO, the command after it, STARTTLS, the first TLS bytes) after three silent connections
that never saw an answer there (``scan.SILENT_CONNECTIONS``).

For every case: the wall time stays under a few timeouts, the fake counts how often it was made to
go silent (bounded too, whatever the machine's load), the endpoint is incomplete (no grade,
exit 3), and no rule passed on facts of a probe that did not finish (``assert_fail_closed``).
A server that is silent only for some TLS versions is still scanned fully: those versions stay
undetermined, the others get their verdicts.
"""

from __future__ import annotations

import time

import pytest

from smtpaudit import api
from smtpaudit.probes.base import Timeouts
from smtpaudit.scan import SILENT_CONNECTIONS
from tests.failclosed.test_cut_dialogue import assert_fail_closed
from tests.fakes.stalling import StallingServer

T = 2.0  # command and TLS timeout of these scans
# Generous for a loaded 2-core machine: the silence itself costs about 2-3 T here.
BOUND = 4 * T + 10
# The default endpoint deadline: waiting it out would show in the wall time.
OPTIONS = api.ScanOptions(timeouts=Timeouts(connect=3, greeting=10, command=T, tls=T, endpoint=Timeouts().endpoint))


def _scan(server: StallingServer) -> tuple[dict, dict, float]:
    t0 = time.monotonic()
    report = api.scan([server.target], api.load_ruleset(), OPTIONS)
    return report, report["endpoints"][0], time.monotonic() - t0


def _probe(entry: dict, name: str) -> dict:
    return next(p for p in entry["probes"] if p["probe"] == name)


def _tls_rules_passed(entry: dict) -> list[str]:
    ruleset = api.load_ruleset()
    return [rid for rid in entry["passed"]
            if any(ruleset.fact_probe.get(f, "").startswith("tls.") for f in ruleset.rules[rid].facts)]


def _assert_incomplete(report: dict, entry: dict) -> None:
    assert entry["status"] == "incomplete", entry["status_reasons"]
    assert entry["score"]["grade"] is None and report["gate"]["exit_code"] == 3
    assert_fail_closed(report)


@pytest.mark.parametrize("kind", ["silent_tls", "greeting_then_silence", "silent_after_ehlo", "silent_starttls"])
def test_silence_costs_a_few_timeouts_not_the_deadline(kind: str) -> None:
    with StallingServer(kind) as srv:
        report, entry, wall = _scan(srv)
        silences = srv.silences
    assert wall < BOUND, f"{kind}: {wall:.1f}s"
    # Before the watch: one silence per hello or probe connection (silent_tls: 15, the others more).
    # Now: the watch's limit, plus what was already in flight when it gave up (two per probe pair).
    assert silences <= SILENT_CONNECTIONS + 3, silences
    _assert_incomplete(report, entry)
    assert _tls_rules_passed(entry) == []
    given_up = [p for p in entry["probes"] if p["status"] == "error" and "not waited for" in (p["error_message"] or "")]
    assert given_up, entry["probes"]
    # Silence is reported as silence: every probe it stopped says read_timeout (never connect, never a pass).
    stopped = [p for p in entry["probes"] if p["status"] == "error"]
    assert {p["error_reason"] for p in stopped} == {"read_timeout"}, stopped
    # TLS never claimed: nothing after STARTTLS was seen.
    assert entry["facts"].get("smtp.starttls.works") is not True
    assert not entry["facts"].get("tls.protocols.accepted")
    assert entry["facts"].get("tls.starttls_injection.vulnerable") is None


def test_silent_after_starttls_leaves_plain_smtp_verdicts_alone() -> None:
    with StallingServer("silent_tls") as srv:
        report, entry, wall = _scan(srv)
    assert wall < BOUND, wall
    assert _probe(entry, "tls.protocols")["error_reason"] == "read_timeout"
    assert _probe(entry, "tls.cert")["error_reason"] == "read_timeout"
    assert entry["facts"]["tls.protocols.undetermined"] == ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    assert entry["facts"]["tls.protocols.rejected"] == []  # silence is not refusal
    # The session saw STARTTLS offered and then silence: whether it works stays unknown (no
    # starttls-broken drawn from a deadline), and the session probe says read_timeout.
    assert _probe(entry, "smtp.session")["error_reason"] == "read_timeout"
    assert entry["facts"]["smtp.starttls.offered"] is True and "smtp.starttls.works" not in entry["facts"]
    assert "starttls-broken" not in {f["rule_id"] for f in entry["findings"]}
    # The SMTP side answered normally: its probes finished and were judged.
    for name in ("smtp.relay", "smtp.vrfy", "smtp.pipelining"):
        assert _probe(entry, name)["status"] == "ok", _probe(entry, name)
    assert "open-relay" in entry["passed"]  # every relay attempt was refused with 554
    assert "tls-12-not-supported" not in entry["passed"] and "tls-sslv3-accepted" not in entry["passed"]


def test_dripped_greeting_costs_a_few_greetings_not_the_deadline() -> None:
    # 30 bytes at 0.1 s: 3 s a greeting, a complete one, on every connection (about 45 in a scan).
    with StallingServer("drip", drip=0.1) as srv:
        report, entry, wall = _scan(srv)
        connections = srv.connections
    assert wall < BOUND, wall
    assert connections <= SILENT_CONNECTIONS + 3, connections
    _assert_incomplete(report, entry)
    assert any("dripped its greeting" in (p["error_message"] or "") for p in entry["probes"]), entry["probes"]


def test_silence_for_some_versions_only_keeps_every_other_verdict() -> None:
    """Silent to SSLv2 and SSLv3 hellos, a working TLS 1.2/1.3 server otherwise: those two stay
    undetermined (never 'not accepted'), everything else is scanned and judged as usual."""
    with StallingServer("picky_tls") as srv:
        report, entry, wall = _scan(srv)
    f = entry["facts"]
    assert f["tls.protocols.accepted"] == ["TLSv1.2", "TLSv1.3"]
    assert f["tls.protocols.rejected"] == ["TLSv1.0", "TLSv1.1"]
    assert f["tls.protocols.undetermined"] == ["SSLv2", "SSLv3"]
    assert f["tls.suites.tls12_aead"] is True and f["tls.groups.tls13"]
    assert f["smtp.starttls.works"] is True and _probe(entry, "tls.cert")["status"] == "ok"
    assert f["tls.starttls_injection.vulnerable"] is False
    # The undecided versions make the probe (and the endpoint) unfinished: no grade, exit 3...
    _assert_incomplete(report, entry)
    assert _probe(entry, "tls.protocols")["status"] == "error"
    assert _probe(entry, "tls.protocols")["error_reason"] == "read_timeout"  # silence, not a failed connection
    # ... and the rules about them are not evaluated, never passed.
    judged = set(entry["passed"]) | {x["rule_id"] for x in entry["findings"]}
    assert not {"tls-sslv3-accepted", "tls-sslv2-accepted"} & judged
    # Two timeouts each for SSLv2 and SSLv3 (first hello and its retry), run two at a time.
    assert wall < BOUND + 2 * T, wall


def test_silence_to_tls13_hellos_is_not_tls13_unsupported() -> None:
    """Silent to hellos offering only TLS 1.3, a working server otherwise: TLS 1.3 is undetermined,
    so tls-13-not-supported is not evaluated (it used to be a finding drawn from two timeouts:
    findings may come from an unfinished probe, and "accepted excludes TLSv1.3" held)."""
    with StallingServer("picky_tls13") as srv:
        report, entry, wall = _scan(srv)
    f = entry["facts"]
    assert f["tls.protocols.accepted"] == ["TLSv1.2"] and "TLSv1.3" in f["tls.protocols.undetermined"]
    assert f["smtp.starttls.works"] is True
    findings = {x["rule_id"] for x in entry["findings"]}
    assert not {"tls-13-not-supported", "tls-12-not-supported"} & findings
    assert "tls-13-not-supported" in {x["rule_id"] for x in entry["not_evaluated"]}
    _assert_incomplete(report, entry)
    assert wall < BOUND + 2 * T, wall


def test_silence_to_feature_hellos_is_no_compression_or_fallback_verdict() -> None:
    """Silent to the hello offering DEFLATE and to the one with TLS_FALLBACK_SCSV, a working
    server otherwise: whether it compresses or protects against downgrade is unknown, so
    tls-compression and tls-no-fallback-scsv are not evaluated (before: both facts were null
    with the probe ok, and a rule reads null as false: both passed on two timeouts)."""
    with StallingServer("picky_features") as srv:
        report, entry, wall = _scan(srv)
    f = entry["facts"]
    assert f["tls.protocols.accepted"] == ["TLSv1.2", "TLSv1.3"]
    assert "tls.compression" not in f and "tls.fallback_scsv" not in f
    not_evaluated = {x["rule_id"] for x in entry["not_evaluated"]}
    assert {"tls-compression", "tls-no-fallback-scsv"} <= not_evaluated
    assert wall < BOUND + 2 * T, wall


def test_silence_mid_suite_enumeration_is_no_pass_on_the_partial_list() -> None:
    """Silent to TLS 1.2 hellos once the first suite was found: the suites not yet found are
    unknown, so the weak-suite rules must not pass on the one found (before: the probe finished
    ok and tls-rc4-suites, tls-des-3des-suites, tls-no-forward-secrecy ... passed)."""
    with StallingServer("picky_suites") as srv:
        report, entry, wall = _scan(srv)
    f = entry["facts"]
    assert "TLSv1.2" in f["tls.protocols.accepted"] and len(f["tls.suites.by_protocol"]["TLSv1.2"]) == 1
    probe = _probe(entry, "tls.protocols")
    assert probe["status"] == "error" and probe["error_reason"] == "read_timeout", probe
    assert "cut short for TLSv1.2" in probe["error_message"]
    assert not {"tls-rc4-suites", "tls-des-3des-suites", "tls-no-forward-secrecy", "tls-null-export-suites"} & set(entry["passed"])
    _assert_incomplete(report, entry)
    assert wall < BOUND + 2 * T, wall


def test_silence_mid_curve_enumeration_is_no_pass_of_weak_groups() -> None:
    """Silent to ECDHE hellos once x25519 was found: the curves not yet found are unknown, so
    tls-weak-groups must not pass on the strong one found first (before: min_ec_bits=253 from
    x25519 alone, probe ok, the rule passed)."""
    with StallingServer("picky_curves") as srv:
        report, entry, wall = _scan(srv)
    f = entry["facts"]
    assert f["tls.groups.tls12"] == ["x25519"], f["tls.groups.tls12"]
    probe = _probe(entry, "tls.protocols")
    assert probe["status"] == "error" and probe["error_reason"] == "read_timeout", probe
    assert "tls-weak-groups" not in entry["passed"]
    _assert_incomplete(report, entry)
    assert wall < BOUND + 2 * T, wall
