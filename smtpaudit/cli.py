"""Command-line interface: argument parsing and exit codes only; the work happens elsewhere.

Exit codes (shared by every command):
  0  no open finding at or above --fail-on
  1  at least one open finding at or above --fail-on (diff: a new one)
  2  usage error, bad rule file, bad policy or bad report file
  3  some target could not be scanned (the report is still written; overrides 1)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from smtpaudit import __version__
from smtpaudit.catalog import load_catalog
from smtpaudit.engine.policy import DEFAULT_POLICY, Policy, apply_policy, find_policy, load_policy
from smtpaudit.engine.rules import Rule, RuleSetError, Selection, load_rules
from smtpaudit.engine.severity import SEVERITIES, at_or_above
from smtpaudit.paths import builtin_rules_dir
from smtpaudit.probes.base import Timeouts
from smtpaudit.report import model, text
from smtpaudit.targets import Endpoint, Role, TargetError, dedupe, parse_target, read_targets_file

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_UNSCANNED = 0, 1, 2, 3

EXIT_CODES_HELP = """exit codes:
  0  no open finding at or above --fail-on
  1  open findings at or above --fail-on
  2  usage error, invalid rule file, policy or report
  3  some target could not be scanned (report still written; takes precedence over 1)"""


class UsageError(Exception):
    """A mistake the user can fix; printed without a traceback, exit code 2."""


def fatal(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"smtpaudit: error: {message}\n")
    raise SystemExit(code)


def _add_rule_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rules")
    g.add_argument("--rules", metavar="DIR", action="append", default=[], help="extra rule directory (repeatable); rules override built-ins by id")
    g.add_argument("--no-builtin-rules", action="store_true", help="use only the --rules directories")
    g.add_argument("--rule", metavar="ID", action="append", default=[], help="run only this rule (repeatable)")
    g.add_argument("--skip-rule", metavar="ID", action="append", default=[], help="do not run this rule (repeatable)")
    g.add_argument("--tag", metavar="TAG", action="append", default=[], help="run only rules with this tag or family (repeatable)")
    g.add_argument("--skip-tag", metavar="TAG", action="append", default=[], help="skip rules with this tag or family (repeatable)")
    g.add_argument("--policy", metavar="NAME|FILE", help="policy profile: a name under rules/policies/ or a .toml file")


def _add_output_args(p: argparse.ArgumentParser, *, fail_on: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="FILE", help="write the report here ('-' for stdout); default: summary on stdout")
    g.add_argument("--format", choices=("json", "text"), default=None, help="report format (default: json for files, text for the terminal)")
    g.add_argument("-q", "--quiet", action="store_true", help="no summary or progress on the terminal")
    if fail_on:
        g.add_argument("--fail-on", choices=SEVERITIES, default="high", help="lowest severity that makes the exit code 1 (default: high)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtpaudit",
        description="Security hardening audit scanner for SMTP servers.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"smtpaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    scan = sub.add_parser("scan", help="scan SMTP endpoints", epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Targets: host, host:port, [v6]:port, smtp://host[:25], submission://host[:587], smtps://host[:465].")
    scan.add_argument("targets", nargs="*", metavar="TARGET")
    scan.add_argument("-f", "--targets-file", metavar="FILE", action="append", default=[], help="one target per line, '#' comments")
    scan.add_argument("--role", choices=[r.value for r in Role if r is not Role.DOMAIN], help="override the role implied by the port")
    scan.add_argument("--ehlo-name", default="smtpaudit.example.net", help="name sent in EHLO/HELO (default: %(default)s)")
    scan.add_argument("--intrusive", action="store_true", help="allow intrusive probes (bursts, smuggling); off by default")
    g = scan.add_argument_group("DNS and mail domains (a bare name or domain:NAME is a mail domain)")
    g.add_argument("--resolver", metavar="IP[:PORT]", help="DNS resolver for MX, SPF, DMARC, MTA-STS, DANE and DNSSEC lookups (default: /etc/resolv.conf)")
    g.add_argument("--mx-port", type=int, default=25, metavar="N", help="port of the MX endpoints found for a domain (default: %(default)s)")
    g.add_argument("--trust-anchors", metavar="FILE", help="DNSSEC trust anchors (DS/DNSKEY records in zone-file syntax) instead of the root KSKs")
    g.add_argument("--mta-sts-ca", metavar="FILE", help="CA bundle for the MTA-STS policy fetch (default: system CAs)")
    g.add_argument("--mta-sts-port", type=int, default=443, metavar="N", help="HTTPS port of mta-sts.<domain> (default: %(default)s)")
    g = scan.add_argument_group("timing and politeness")
    g.add_argument("--timeout", type=float, default=180.0, metavar="S", help="overall deadline per endpoint (default: %(default)s)")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    g.add_argument("--greeting-timeout", type=float, default=30.0, metavar="S", help="how long to wait for a delayed greeting")
    g.add_argument("--command-timeout", type=float, default=20.0, metavar="S")
    g.add_argument("--concurrency", type=int, default=16, metavar="N", help="endpoints scanned at once")
    g.add_argument("--per-host", type=int, default=2, metavar="N", help="concurrent connections per host")
    _add_rule_args(scan)
    _add_output_args(scan)

    demo = sub.add_parser("demo", help="start a built-in, deliberately weak SMTP server on loopback and scan it")
    demo.add_argument("-o", "--output", metavar="FILE", default="reports/demo.json", help="report file (default: %(default)s)")

    rules = sub.add_parser("rules", help="list or validate rules")
    rsub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rl = rsub.add_parser("list", help="list the loaded rules")
    _add_rule_args(rl)
    rl.add_argument("--json", action="store_true", help="machine-readable output")
    rv = rsub.add_parser("validate", help="validate a rule directory (exit 2 with precise errors)")
    rv.add_argument("directory", nargs="+", metavar="DIR")
    rf = rsub.add_parser("facts", help="list the facts rules can use")
    rf.add_argument("--json", action="store_true")
    return parser


def _rule_dirs(args: argparse.Namespace) -> list[Path]:
    dirs = [] if args.no_builtin_rules else [builtin_rules_dir()]
    for d in args.rules:
        p = Path(d)
        if not p.is_dir():
            raise UsageError(f"--rules {d}: not a directory")
        dirs.append(p)
    if not dirs:
        raise UsageError("no rule directories: drop --no-builtin-rules or give --rules DIR")
    return dirs


def load_ruleset(args: argparse.Namespace) -> tuple[dict[str, Rule], list[Path], Policy]:
    catalog = load_catalog()
    known = {name: spec.type for name, spec in catalog.facts.items()}
    dirs = _rule_dirs(args)
    rules = load_rules(dirs, known)
    policy = DEFAULT_POLICY
    if args.policy:
        policy = load_policy(find_policy(args.policy, dirs))
        rules = apply_policy(policy, rules, known)
    rules = Selection(tuple(args.rule), tuple(args.skip_rule), tuple(args.tag), tuple(args.skip_tag)).apply(rules)
    if not rules:
        raise UsageError("the rule selection is empty")
    return rules, dirs, policy


def _collect_targets(args: argparse.Namespace) -> list[Endpoint]:
    role = Role(args.role) if args.role else None
    endpoints: list[Endpoint] = []
    for f in args.targets_file:
        endpoints.extend(read_targets_file(f, role=role))
    for t in args.targets:
        endpoints.append(parse_target(t, role=role))
    if not endpoints:
        raise UsageError("no targets: give TARGET arguments or --targets-file FILE")
    return dedupe(endpoints)


def _check_positive(args: argparse.Namespace, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(args, name)
        if value is None or value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {value}")


def _write(report: dict[str, Any], args: argparse.Namespace) -> None:
    fmt = args.format or ("json" if args.output else "text")
    if fmt == "json":
        content = model.dumps(report)
    else:
        import io

        buf = io.StringIO()
        text.render(report, buf)
        content = buf.getvalue()
    if args.output and args.output != "-":
        out = Path(args.output)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(content, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        if not args.quiet:
            text.render(report, sys.stdout)
            sys.stdout.write(f"report written to {out}\n")
    elif not args.quiet or args.output == "-":
        sys.stdout.write(content)


def exit_code_for(report: dict[str, Any], fail_on: str) -> int:
    if any(e["status"] == "failed" for e in report["endpoints"]):
        return EXIT_UNSCANNED
    for e in report["endpoints"]:
        for f in e["findings"]:
            if not f.get("suppressed") and at_or_above(f["severity"], fail_on):
                return EXIT_FINDINGS
    return EXIT_OK


def _dns_options(args: argparse.Namespace) -> dict[str, Any]:
    from smtpaudit.probes.dns.resolver import ResolverSpecError, parse_resolver

    opts: dict[str, Any] = {"mx_port": args.mx_port, "mta_sts_port": args.mta_sts_port}
    if args.resolver:
        try:
            parse_resolver(args.resolver)
        except ResolverSpecError as exc:
            raise UsageError(f"--resolver: {exc}") from None
        opts["resolver"] = args.resolver
    for flag, key in (("trust_anchors", "dnssec_trust_anchors"), ("mta_sts_ca", "mta_sts_ca_file")):
        value = getattr(args, flag)
        if value:
            if not Path(value).is_file():
                raise UsageError(f"--{flag.replace('_', '-')}: {value} is not a file")
            opts[key] = value
    return opts


def run_scan_command(args: argparse.Namespace, argv: list[str]) -> int:
    from smtpaudit.scan import ScanOptions, build_report, drop_intrusive, now_iso, run_scan
    from smtpaudit.engine.planner import probes_needed
    from smtpaudit.probes.registry import PROBES

    _check_positive(args, ("timeout", "connect_timeout", "greeting_timeout", "command_timeout", "concurrency", "per_host"))
    endpoints = _collect_targets(args)
    rules, dirs, policy = load_ruleset(args)
    catalog = load_catalog()
    skipped_rules: list[dict[str, str]] = []
    if not args.intrusive:
        rules, skipped_rules = drop_intrusive(rules, catalog)
        if not rules:
            raise UsageError("every selected rule needs an intrusive probe: add --intrusive")
    options = ScanOptions(
        ehlo_name=args.ehlo_name,
        timeouts=Timeouts(connect=args.connect_timeout, greeting=args.greeting_timeout, command=args.command_timeout,
                          endpoint=args.timeout),
        intrusive=args.intrusive,
        concurrency=args.concurrency,
        per_host=args.per_host,
        probe_options=_dns_options(args),
    )
    progress = None
    if not args.quiet and sys.stderr.isatty():
        done = [0]

        def progress(endpoint_id: str, entry: dict[str, Any]) -> None:
            done[0] += 1
            sys.stderr.write(f"\r[{done[0]}/{len(endpoints)}] {endpoint_id} {entry['status']}\033[K")
            if done[0] == len(endpoints):
                sys.stderr.write("\n")

    started, t0 = now_iso(), time.monotonic()
    entries = asyncio.run(run_scan(endpoints, rules, catalog, options, progress=progress))
    fact_probe = {n: s.probe for n, s in catalog.facts.items()}
    probes_run = probes_needed(rules.values(), fact_probe, {n: c.after for n, c in PROBES.items()}, always=("smtp.session",))
    report = build_report(
        entries,
        rules=rules,
        rule_dirs=[str(d) for d in dirs],
        policy=policy.to_json(),
        started=started,
        finished=now_iso(),
        duration=time.monotonic() - t0,
        argv=argv,
        options={
            "ehlo_name": args.ehlo_name, "intrusive": args.intrusive, "fail_on": args.fail_on,
            "timeouts": vars(options.timeouts), "concurrency": args.concurrency, "per_host": args.per_host,
            "targets_files": args.targets_file,
            "dns": options.probe_options,
        },
        probes_run=probes_run,
        catalog=catalog,
        skipped_rules=skipped_rules,
    )
    _write(report, args)
    return exit_code_for(report, args.fail_on)


def run_rules_command(args: argparse.Namespace) -> int:
    from smtpaudit.engine.evaluate import check_examples

    catalog = load_catalog()
    known = {name: spec.type for name, spec in catalog.facts.items()}
    if args.rules_command == "validate":
        problems: list[str] = []
        count = 0
        for d in args.directory:
            p = Path(d)
            if not p.is_dir():
                problems.append(f"{d}: not a directory")
                continue
            try:
                rules = load_rules([p], known)
            except RuleSetError as exc:
                problems.extend(str(e) for e in exc.errors)
                continue
            count += len(rules)
            for rule in rules.values():
                problems.extend(check_examples(rule))
        if problems:
            for line in problems:
                sys.stderr.write(f"{line}\n")
            sys.stderr.write(f"{len(problems)} problem(s)\n")
            return EXIT_USAGE
        sys.stdout.write(f"{count} rule(s) valid, all examples pass\n")
        return EXIT_OK
    if args.rules_command == "facts":
        if args.json:
            import json

            sys.stdout.write(json.dumps({n: {"type": s.type, "probe": s.probe, "description": s.description} for n, s in sorted(catalog.facts.items())}, indent=2) + "\n")
        else:
            for name, spec in sorted(catalog.facts.items()):
                sys.stdout.write(f"{name:45} {spec.type:13} {spec.probe:16} {spec.description}\n")
        return EXIT_OK
    if args.rules_command == "list":
        rules, _, policy = load_ruleset(args)
        if args.json:
            import json

            sys.stdout.write(json.dumps([r.summary() for r in rules.values()], indent=2) + "\n")
        else:
            for rule in sorted(rules.values(), key=lambda r: (r.family, r.id)):
                sys.stdout.write(f"{rule.id:40} {rule.severity:8} {rule.score:4.1f} {rule.confidence:9} {rule.title}\n")
            sys.stdout.write(f"{len(rules)} rule(s), policy {policy.id}\n")
        return EXIT_OK
    raise UsageError("rules: expected a subcommand: list, validate or facts")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "scan":
            return run_scan_command(args, argv)
        if args.command == "rules":
            return run_rules_command(args)
        if args.command == "demo":
            from smtpaudit.demo import run_demo

            return run_demo(args.output)
        parser.print_help()
        return EXIT_USAGE
    except (UsageError, TargetError, model.ReportError) as exc:
        fatal(str(exc))
    except RuleSetError as exc:
        for err in exc.errors:
            sys.stderr.write(f"smtpaudit: rule error: {err}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("smtpaudit: interrupted\n")
        return 130
