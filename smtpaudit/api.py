"""The library API: load a rule set, scan targets, re-judge a saved report. The CLI is a thin layer on it.

    from smtpaudit import api
    rules = api.load_ruleset()
    report = api.scan(["mx.example.org:25"], rules, api.ScanOptions(fail_on="medium"))
    report["gate"]["exit_code"], report["endpoints"][0]["score"]["grade"]

Composes the three layers and nothing else (the network side is imported only by ``scan``): ``scan.py`` observes (network), ``engine/`` judges
(pure), ``report/build.py`` assembles the report. Errors a caller can fix raise ``UsageError``,
``TargetError``, ``RuleSetError`` or ``ReportError`` with a message that names what is wrong.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from smtpaudit.catalog import Catalog, load_catalog
from smtpaudit.engine.crossendpoint import judge_domains
from smtpaudit.engine.judge import judge_entry
from smtpaudit.engine.planner import drop_intrusive, probes_needed
from smtpaudit.engine.policy import DEFAULT_POLICY, Policy, apply_policy, find_policy, load_policy
from smtpaudit.engine.rules import Rule, Selection, load_rules
from smtpaudit.engine.scoring import FORMULA
from smtpaudit.errors import UsageError
from smtpaudit.interrupt import run_until_signal
from smtpaudit.paths import builtin_rules_dir
from smtpaudit.probes.base import ProbeSettings, Timeouts
from smtpaudit.report.build import build_report, refresh, ruleset_digest
from smtpaudit.targets import Endpoint, parse_target
from smtpaudit.timeutil import now_iso

__all__ = ["RuleSet", "ScanOptions", "UsageError", "load_ruleset", "plan", "rejudge", "scan", "scan_async"]


@dataclass(frozen=True)
class RuleSet:
    rules: dict[str, Rule]
    directories: list[Path]
    policy: Policy
    catalog: Catalog

    @property
    def fact_probe(self) -> dict[str, str]:
        return {name: spec.probe for name, spec in self.catalog.facts.items()}


@dataclass(frozen=True)
class ScanOptions(ProbeSettings):
    """Everything a scan needs besides targets and rules: the probe settings plus the gate. Defaults
    are the CLI's defaults."""

    fail_on: str | None = "high"
    allow_incomplete: bool = False
    argv: tuple[str, ...] = ()
    recorded_options: Mapping[str, Any] = field(default_factory=dict)  # what the report says was asked

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("connect", "greeting", "command", "tls", "endpoint"):
            value = getattr(self.timeouts, name)
            if not value > 0:
                raise UsageError(f"timeout {name} must be a positive number of seconds, got {value}")


def load_ruleset(
    directories: Iterable[str | Path] = (),
    *,
    builtin: bool = True,
    policy: str | None = None,
    selection: Selection | None = None,
    catalog: Catalog | None = None,
) -> RuleSet:
    """Built-in rules (unless ``builtin=False``) plus ``directories``, a policy applied, a selection made."""
    catalog = catalog or load_catalog()
    known = {name: spec.type for name, spec in catalog.facts.items()}
    dirs = [builtin_rules_dir()] if builtin else []
    for d in directories:
        p = Path(d)
        if not p.is_dir():
            raise UsageError(f"--rules {d}: not a directory")
        dirs.append(p)
    if not dirs:
        raise UsageError("no rule directories: drop --no-builtin-rules or give --rules DIR")
    rules = load_rules(dirs, known)
    chosen = DEFAULT_POLICY
    if policy:
        chosen = load_policy(find_policy(policy, dirs))
        rules = apply_policy(chosen, rules, known)
    if selection is not None:
        rules = selection.apply(rules)
    if not rules:
        raise UsageError("the rule selection is empty")
    return RuleSet(rules, dirs, chosen, catalog)


def without_intrusive(ruleset: RuleSet) -> tuple[RuleSet, list[dict[str, str]]]:
    """The rule set minus rules that need an intrusive probe, and the list of those left out."""
    intrusive = [name for name, spec in ruleset.catalog.probes.items() if spec.intrusive]
    kept, skipped = drop_intrusive(ruleset.rules, ruleset.fact_probe, intrusive)
    return replace(ruleset, rules=kept), skipped


def plan(ruleset: RuleSet) -> list[str]:
    """The probes the rules need, dependencies first (the session probe always runs)."""
    from smtpaudit.scan import probe_dependencies  # the network side only when scanning

    derived = {name: spec.derived_from for name, spec in ruleset.catalog.probes.items() if spec.derived_from}
    return probes_needed(ruleset.rules.values(), ruleset.fact_probe, probe_dependencies(), always=("smtp.session",),
                         derived=derived)


def _probes_section(names: Sequence[str], catalog: Catalog) -> dict[str, dict[str, Any]]:
    return {
        name: {"intrusive": catalog.probes[name].intrusive if name in catalog.probes else False,
               "description": catalog.probes[name].description if name in catalog.probes else ""}
        for name in names
    }


def _assemble(entries: list[dict[str, Any]], ruleset: RuleSet, *, started: str, finished: str, duration: float,
              argv: Sequence[str], options: Mapping[str, Any], probes: Mapping[str, Any],
              skipped_rules: list[dict[str, str]], fail_on: str | None, allow_incomplete: bool) -> dict[str, Any]:
    summaries = {rid: r.summary() for rid, r in ruleset.rules.items()}
    return build_report(
        entries,
        rules=summaries,
        rules_digest=ruleset_digest(summaries, {rid: r.when for rid, r in ruleset.rules.items()}),
        rule_dirs=[str(d) for d in ruleset.directories],
        policy=ruleset.policy.to_json(),
        started=started, finished=finished, duration=duration,
        argv=list(argv), options=dict(options), probes=probes,
        skipped_rules=skipped_rules, scoring={"formula": FORMULA},
        fail_on=fail_on, allow_incomplete=allow_incomplete,
    )


async def scan_async(
    targets: Sequence[str | Endpoint],
    ruleset: RuleSet,
    options: ScanOptions = ScanOptions(),
    *,
    on_entry: Callable[[dict[str, Any]], Any] | None = None,
    on_probe: Callable[[str, str], None] | None = None,
    spool: Any = None,
) -> dict[str, Any]:
    """Scan, judge and assemble the report (see ``scan``).

    With ``spool`` (a ``report.stream.EntrySpool``) every judged entry goes to disk as soon as it
    is finished (after ``on_entry``, which may still mark it, e.g. with a baseline) and the
    report's ``endpoints`` are the spool's skeletons in target order: write the full report with
    ``report.stream.write_json`` / ``sarif.write_stream``. Memory then stays flat in fleet size.
    """
    # Imported here so the offline commands (report, evaluate, diff, baseline) never load the network side.
    from smtpaudit.scan import run_endpoints

    endpoints = [t if isinstance(t, Endpoint) else parse_target(t) for t in targets]
    skipped: list[dict[str, str]] = []
    if not options.intrusive:
        ruleset, skipped = without_intrusive(ruleset)
        if not ruleset.rules:
            raise UsageError("every selected rule needs an intrusive probe: add --intrusive")
    probe_names = plan(ruleset)
    fact_probe = ruleset.fact_probe

    finished: list[dict[str, Any]] = []

    async def judged(entry: dict[str, Any]) -> Any:
        # Judged as soon as it is finished, so progress displays and streaming writers see verdicts.
        # Judging is CPU work (every rule over up to a megabyte of facts): in a worker thread, so
        # the event loop keeps serving the other endpoints' connections meanwhile.
        await asyncio.to_thread(judge_entry, entry, ruleset.rules, fact_probe)
        if spool is None:
            finished.append(entry)
        result = on_entry(entry) if on_entry is not None else None
        if asyncio.iscoroutine(result):
            await result
        if spool is not None:
            spool.add(entry)  # after on_entry, which may still mark it (a baseline)

    started, t0 = now_iso(), time.monotonic()
    outcome, signum = await run_until_signal(
        run_endpoints(endpoints, probe_names, options, ruleset.catalog, on_entry=judged, on_probe=on_probe,
                      keep=spool is None))
    if outcome is not None:
        entries, peaks = outcome
    else:
        # SIGINT/SIGTERM: the endpoints finished so far are reported (in input order), marked below.
        order = {ep.id: i for i, ep in enumerate(endpoints)}
        entries = sorted(finished, key=lambda e: order.get(e["endpoint"]["id"], len(order)))
        peaks = {}
    # Domain entries again, now with the facts only their MX entries together can tell.
    judge_domains(entries, ruleset.rules, fact_probe)
    if spool is not None:
        # (A streamed scan has no domain targets: their judging needs every MX entry's facts.)
        spool.close()
        entries = _in_target_order(spool.skeletons, endpoints)
    recorded = {"ehlo_name": options.ehlo_name, "intrusive": options.intrusive, "fail_on": options.fail_on,
                "allow_incomplete": options.allow_incomplete, "timeouts": vars(options.timeouts),
                "concurrency": options.concurrency, "per_host": options.per_host, **options.recorded_options}
    report = _assemble(entries, ruleset, started=started, finished=now_iso(), duration=time.monotonic() - t0,
                       argv=options.argv, options=recorded, probes=_probes_section(probe_names, ruleset.catalog),
                       skipped_rules=skipped, fail_on=options.fail_on, allow_incomplete=options.allow_incomplete)
    report["invocation"]["peak_sockets_per_host"] = peaks
    if signum is not None:
        done = {e["endpoint"]["id"] for e in entries}
        report["interrupted"] = {
            "signal": signal.Signals(signum).name,
            "at": now_iso(),
            "endpoints_finished": len(entries),
            "not_finished": [ep.id for ep in endpoints if ep.id not in done],
        }
    return report


def _in_target_order(entries: list[dict[str, Any]], endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    """Entries (finished in any order) in the order of the targets; MX endpoints of a domain
    target follow it, by id."""
    order = {ep.id: i for i, ep in enumerate(endpoints)}
    domain_order = {ep.host: i for i, ep in enumerate(endpoints) if ep.role.value == "domain"}

    def key(e: dict[str, Any]) -> tuple[int, int, str]:
        eid = e["endpoint"]["id"]
        if eid in order:
            return (order[eid], 0, eid)
        return (domain_order.get(e["endpoint"].get("domain") or "", len(order)), 1, eid)

    return sorted(entries, key=key)


def scan(targets: Sequence[str | Endpoint], ruleset: RuleSet, options: ScanOptions = ScanOptions(),
         **kwargs: Any) -> dict[str, Any]:
    """Scan ``targets`` with ``ruleset``; returns the report (plain JSON data).

    ``report["gate"]["exit_code"]`` is the CLI's exit code: 3 when any endpoint was not fully
    scanned (unless ``allow_incomplete``), 1 when an open finding reaches ``fail_on``, else 0.
    """
    return asyncio.run(scan_async(targets, ruleset, options, **kwargs))


def rejudge(report: dict[str, Any], ruleset: RuleSet, *, argv: Sequence[str] = (), fail_on: str | None = "high",
            allow_incomplete: bool = False) -> dict[str, Any]:
    """A new report judging a saved report's facts with other rules or another policy (no network).

    Facts, transcripts and probe outcomes are kept as observed; status, findings, passes, scores
    and the rule-set section are recomputed. Rules needing facts of probes that did not run in the
    original scan come out *not evaluated*, with the reason. The saved scan's choice about
    intrusive probes is kept.
    """
    skipped: list[dict[str, str]] = []
    if not report.get("invocation", {}).get("options", {}).get("intrusive"):
        ruleset, skipped = without_intrusive(ruleset)
        if not ruleset.rules:
            raise UsageError("every selected rule needs an intrusive probe, and the saved scan ran without --intrusive")
    fact_probe = ruleset.fact_probe
    entries = []
    for old in report["endpoints"]:
        entry = dict(old)
        judge_entry(entry, ruleset.rules, fact_probe)
        entries.append(entry)
    judge_domains(entries, ruleset.rules, fact_probe)
    options = dict(report.get("invocation", {}).get("options", {}))
    options["evaluated_from"] = {"started": report["started"], "tool": report["tool"]["version"],
                                 "ruleset": report.get("ruleset", {}).get("digest")}
    options["fail_on"] = fail_on
    new = _assemble(entries, ruleset, started=report["started"], finished=report["finished"],
                    duration=report.get("duration", 0.0), argv=argv, options=options,
                    probes=report.get("probes", {}), skipped_rules=skipped, fail_on=fail_on,
                    allow_incomplete=allow_incomplete)
    new["invocation"]["evaluated"] = now_iso()
    return new


def regate(report: dict[str, Any], fail_on: str | None, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """Summary and gate recomputed for this caller's threshold (after a baseline, or for `report`)."""
    refresh(report, fail_on, allow_incomplete=allow_incomplete)
    return report["gate"]
