"""Command-line interface: argument parsing and exit codes only; the work happens elsewhere.

Exit codes (shared by every command):
  0  no open finding at or above --fail-on
  1  at least one open finding at or above --fail-on (diff: a new one)
  2  usage error, bad rule file, bad policy, bad baseline or bad report file
  3  some endpoint was not fully scanned: unreachable, or a planned probe did not finish (the
     report is still written and says why; overrides 1; --allow-incomplete turns it into 0/1)

`report` exits 0 after rendering unless --fail-on is given; `evaluate` judges like `scan`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

# Only what building the parser needs is imported here: every command imports its own work
# (the engine, the network side, the renderers, the history store) when it runs, so `--version`,
# `rules validate` and `report` do not pay for asyncio, dnspython or SQLite.
from smtpaudit import __version__
from smtpaudit.engine.severity import SEVERITIES
from smtpaudit.errors import UsageError
from smtpaudit.history import commands as history_commands
from smtpaudit.outputs import COLOR_CHOICES
from smtpaudit.paths import builtin_rules_dir
from smtpaudit.report.build import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from smtpaudit.targets import Endpoint, Role, dedupe, parse_target, read_targets_file

if TYPE_CHECKING:
    from smtpaudit import api
    from smtpaudit.engine.rules import Rule

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away

EXIT_CODES_HELP = """exit codes:
  0  no open finding at or above --fail-on
  1  open findings at or above --fail-on
  2  usage error, invalid rule file, policy or report
  3  some endpoint was not fully scanned (report still written; takes precedence over 1)"""


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


def _add_output_args(p: argparse.ArgumentParser, *, fail_on: bool = True, fail_on_default: str | None = "high") -> None:
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="FILE", help="write the report here ('-' for stdout); default: summary on stdout")
    g.add_argument("--format", choices=("json", "text", "sarif", "html"), default=None,
                   help="report format (default: json for files, text for the terminal)")
    g.add_argument("-q", "--quiet", action="store_true", help="no summary or progress on the terminal")
    g.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                   help="colour in the terminal summary: auto = only on a terminal and without NO_COLOR (default: auto)")
    g.add_argument("--baseline", metavar="FILE", help="accepted findings (TOML): reported as suppressed, not counted in the exit code")
    g.add_argument("--sarif-artifact", metavar="FILE[:LINE]",
                   help="SARIF: locate every result at this repository file (e.g. the MTA config) instead of the targets file line")
    if fail_on:
        g.add_argument("--fail-on", choices=SEVERITIES, default=fail_on_default,
                       help=f"lowest severity that makes the exit code 1 (default: {fail_on_default or 'never'})")
        g.add_argument("--allow-incomplete", action="store_true",
                       help="exit 0/1 by findings even when some endpoint was not fully scanned (default: such a scan exits 3; it is never graded)")


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="on invalid input files, list every problem (default: the first)")


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
    b = scan.add_argument_group("behaviour tests")
    b.add_argument("--relay-domain", metavar="DOMAIN", help="external domain for relay tests (default: relaytest.invalid, which cannot exist)")
    b.add_argument("--auth-user", metavar="USER", help="account for AUTH tests on submission endpoints (tried over TLS only)")
    b.add_argument("--auth-password", metavar="PASSWORD", help="its password (better: environment variable SMTPAUDIT_AUTH_PASSWORD); always redacted")
    b.add_argument("--smuggling-rcpt", metavar="ADDRESS", help="the one recipient of SMTP smuggling tests (default: postmaster at a domain the server serves, "
                   "shown by its MX, a verifying certificate or the target name; without one the test is not run)")
    g = scan.add_argument_group("DNS and mail domains (a bare name or domain:NAME is a mail domain)")
    g.add_argument("--resolver", metavar="IP[:PORT]", help="DNS resolver for MX, SPF, DMARC, MTA-STS, DANE and DNSSEC lookups (default: /etc/resolv.conf)")
    g.add_argument("--mx-port", type=int, default=25, metavar="N", help="port of the MX endpoints found for a domain (default: %(default)s)")
    g.add_argument("--trust-anchors", metavar="FILE", help="DNSSEC trust anchors (DS/DNSKEY records in zone-file syntax) instead of the root KSKs")
    g.add_argument("--mta-sts-ca", metavar="FILE", help="CA bundle for the MTA-STS policy fetch (default: system CAs)")
    g.add_argument("--ca-file", metavar="FILE", help="extra CA bundle trusted when verifying the servers' certificates (a private CA); the system store is always used")
    g.add_argument("--mta-sts-port", type=int, default=443, metavar="N", help="HTTPS port of mta-sts.<domain> (default: %(default)s)")
    g = scan.add_argument_group("timing and politeness")
    # probes/base.Timeouts.endpoint (why 120 s: the comment there)
    g.add_argument("--timeout", type=float, default=120.0, metavar="S", help="overall deadline per endpoint (default: %(default)s)")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    g.add_argument("--greeting-timeout", type=float, default=30.0, metavar="S", help="how long to wait for a delayed greeting")
    g.add_argument("--command-timeout", type=float, default=20.0, metavar="S")
    g.add_argument("--concurrency", type=int, default=64, metavar="N",
                   help="endpoints scanned at once (default: %(default)s; chosen with benchmarks/fleet.py: memory stays flat, "
                        "a fleet is CPU-bound near this value)")
    g.add_argument("--per-host", type=int, default=2, metavar="N", help="concurrent connections per host")
    g = scan.add_argument_group("fleets")
    g.add_argument("--output-dir", metavar="DIR", help="write DIR/report.<fmt> plus DIR/endpoints/<endpoint>.<fmt> per endpoint (json, and --format if another); "
                        "while scanning, DIR/report.jsonl holds each finished endpoint (one JSON line each; left in place if the scan is interrupted)")
    g.add_argument("--shard", metavar="I/N", help="scan only shard I of N (deterministic by endpoint: N machines with the same list cover it once); "
                        "index/N takes I from JOB_COMPLETION_INDEX + 1 (Kubernetes Indexed Job)")
    _add_rule_args(scan)
    _add_output_args(scan)
    _add_verbose(scan)
    scan.add_argument("--history", metavar="DB", help="also record the scan in this history database (SQLite; created if missing)")

    rep = sub.add_parser("report", help="re-render saved report(s) in another format (shards are merged); no network",
                         epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("reports", nargs="+", metavar="REPORT.json")
    _add_output_args(rep, fail_on_default=None)
    _add_verbose(rep)
    rep.add_argument("--history", metavar="DB", help="record the (merged) report in this history database; HTML gains a history section")

    ev = sub.add_parser("evaluate", help="judge the facts of a saved report with other rules or another policy; no network",
                        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("report", metavar="REPORT.json")
    _add_rule_args(ev)
    _add_output_args(ev)
    _add_verbose(ev)

    df = sub.add_parser("diff", help="new, fixed and unchanged findings and grade changes between two reports",
                        epilog="exit 1 when a new open finding reaches --fail-on (the nightly alert); 2 on bad input")
    df.add_argument("old", metavar="OLD.json")
    df.add_argument("new", metavar="NEW.json", nargs="?")
    df.add_argument("--history", metavar="DB", help="compare the one report given with the last night before it in this history database")
    df.add_argument("-o", "--output", metavar="FILE", help="write the diff here (default: stdout)")
    df.add_argument("--format", choices=("text", "json", "html"), default=None, help="default: from the -o file name, else text")
    df.add_argument("--fail-on", choices=SEVERITIES, default="high", help="lowest severity of a new finding that makes the exit code 1 (default: high)")
    df.add_argument("-q", "--quiet", action="store_true", help="no text on stdout when writing a file")
    _add_verbose(df)

    bl = sub.add_parser("baseline", help="create a baseline of accepted findings")
    bsub = bl.add_subparsers(dest="baseline_command", metavar="SUBCOMMAND")
    bc = bsub.add_parser("create", help="write a baseline accepting every open finding of a report")
    bc.add_argument("report", metavar="REPORT.json")
    bc.add_argument("-o", "--output", metavar="FILE", default="-", help="baseline file (default: stdout)")
    bc.add_argument("--justification", metavar="TEXT", help="justification for every entry (default: a TODO to fill in)")
    bc.add_argument("--expires", metavar="YYYY-MM-DD", help="expiry date for every entry")
    _add_verbose(bc)

    demo = sub.add_parser("demo", help="start a built-in, deliberately weak SMTP server on loopback and scan it")
    demo.add_argument("-o", "--output", metavar="FILE", default="reports/demo.json", help="report file (default: %(default)s)")
    demo.add_argument("--color", choices=COLOR_CHOICES, default="auto", help="colour: auto = only on a terminal and without NO_COLOR")

    history_commands.add_parser(sub)

    rules = sub.add_parser("rules", help="list or validate rules")
    rsub = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rl = rsub.add_parser("list", help="list the loaded rules")
    _add_rule_args(rl)
    rl.add_argument("--json", action="store_true", help="machine-readable output")
    _add_verbose(rl)
    rv = rsub.add_parser("validate", help="validate a rule directory (exit 2 with precise errors)")
    rv.add_argument("directory", nargs="+", metavar="DIR")
    rf = rsub.add_parser("facts", help="list the facts rules can use")
    rf.add_argument("--json", action="store_true")
    return parser


def load_ruleset(args: argparse.Namespace) -> api.RuleSet:
    from smtpaudit import api
    from smtpaudit.engine.rules import Selection

    return api.load_ruleset(
        args.rules, builtin=not args.no_builtin_rules, policy=args.policy,
        selection=Selection(tuple(args.rule), tuple(args.skip_rule), tuple(args.tag), tuple(args.skip_tag)),
    )


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


def _apply_baseline(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Apply --baseline (or clear earlier marks when re-rendering without one); warn on expiry."""
    from smtpaudit import baseline as bl

    if not getattr(args, "baseline", None):
        return
    accepted = bl.load(args.baseline)  # InputError on a bad file: exit 2 naming the entry
    for warning in bl.apply(report, accepted):
        sys.stderr.write(f"smtpaudit: warning: {warning}\n")


def _write(report: dict[str, Any], args: argparse.Namespace, history: dict[str, Any] | None = None) -> None:
    from smtpaudit.report import text
    from smtpaudit.workflows import renderer

    fmt = _resolve_format(args)
    # Rendered only where it is written: a terminal summary or an --output-dir run without -o
    # never needed the whole report as one string (it was built and thrown away).
    render = renderer(fmt, sarif_artifact=getattr(args, "sarif_artifact", None), history=history)
    if getattr(args, "output_dir", None):
        _write_output_dir(report, args, fmt)
        if not args.output:
            if not args.quiet:
                text.render(report, sys.stdout, text.style_for(sys.stdout, args.color))
            return
    if args.output and args.output != "-":
        _write_file(args.output, render(report))
        if not args.quiet:
            # The report is in the file the user named: stdout gets only the verdict per endpoint.
            text.render_verdicts(report, sys.stdout, text.style_for(sys.stdout, args.color))
    elif fmt == "text" and args.output != "-":
        if not args.quiet:
            text.render(report, sys.stdout, text.style_for(sys.stdout, args.color))
    elif not args.quiet or args.output == "-":
        sys.stdout.write(render(report))


def _resolve_format(args: argparse.Namespace, allowed: tuple[str, ...] = ("json", "text", "sarif", "html"), terminal: str = "text") -> str:
    """--format, else the output file's extension; decided before any work so a typo costs nothing."""
    from smtpaudit.outputs import FormatError, choose_format

    try:
        args.format = choose_format(args.output, args.format, allowed=allowed, default_file="json", default_terminal=terminal)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    return args.format


def _write_file(path: str, content: str) -> Path:
    """Atomic write (temp file, fsync, rename); a full disk is exit 2 with the old file intact."""
    from smtpaudit.atomic import WriteError, write_text

    try:
        return write_text(path, content)
    except WriteError as exc:
        raise UsageError(str(exc)) from None


def exit_code_for(report: dict[str, Any], fail_on: str | None, *, allow_incomplete: bool = False) -> int:
    """The gate of the report for this threshold (recomputed: a baseline may have been applied)."""
    from smtpaudit import api

    return int(api.regate(report, fail_on, allow_incomplete=allow_incomplete)["exit_code"])


def _behaviour_options(args: argparse.Namespace) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Probe options for the relay/submission/smuggling probes; the AUTH password is also a secret to redact."""
    password = args.auth_password or os.environ.get("SMTPAUDIT_AUTH_PASSWORD") or None
    if password and not args.auth_user:
        raise UsageError("--auth-password / SMTPAUDIT_AUTH_PASSWORD needs --auth-user")
    if args.auth_user and not password:
        raise UsageError("--auth-user needs a password: --auth-password or SMTPAUDIT_AUTH_PASSWORD")
    opts: dict[str, Any] = {}
    if args.relay_domain:
        opts["relay_domain"] = args.relay_domain.strip().lower()
    if args.smuggling_rcpt:
        if "@" not in args.smuggling_rcpt or any(c in args.smuggling_rcpt for c in "<>\r\n "):
            raise UsageError(f"--smuggling-rcpt {args.smuggling_rcpt!r}: expected a plain address such as postmaster@example.org")
        opts["smuggling_rcpt"] = args.smuggling_rcpt
    if args.auth_user:
        opts["auth_user"] = args.auth_user
        opts["auth_password"] = password
    return opts, ((password,) if password else ())


def redact_argv(argv: list[str]) -> list[str]:
    """The report records argv: never with the AUTH password in it."""
    out, hide = [], False
    for arg in argv:
        if hide:
            out.append("[redacted]")
            hide = False
        elif arg == "--auth-password":
            out.append(arg)
            hide = True
        elif arg.startswith("--auth-password="):
            out.append("--auth-password=[redacted]")
        else:
            out.append(arg)
    return out


def _dns_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"mx_port": args.mx_port, "mta_sts_port": args.mta_sts_port}
    if args.resolver:
        from smtpaudit.probes.dns.spec import ResolverSpecError, parse_resolver

        try:
            parse_resolver(args.resolver)
        except ResolverSpecError as exc:
            raise UsageError(f"--resolver: {exc}") from None
        opts["resolver"] = args.resolver
    for flag, key in (("trust_anchors", "dnssec_trust_anchors"), ("mta_sts_ca", "mta_sts_ca_file"), ("ca_file", "tls_ca_file")):
        value = getattr(args, flag)
        if value:
            if not Path(value).is_file():
                raise UsageError(f"--{flag.replace('_', '-')}: {value} is not a file")
            opts[key] = value
    return opts


def _scan_options(args: argparse.Namespace, argv: list[str]) -> api.ScanOptions:
    from smtpaudit import api
    from smtpaudit.probes.base import Timeouts

    _check_positive(args, ("timeout", "connect_timeout", "greeting_timeout", "command_timeout", "concurrency", "per_host"))
    behaviour_options, secrets = _behaviour_options(args)
    dns_options = _dns_options(args)
    return api.ScanOptions(
        ehlo_name=args.ehlo_name,
        timeouts=Timeouts(connect=args.connect_timeout, greeting=args.greeting_timeout, command=args.command_timeout,
                          endpoint=args.timeout),
        intrusive=args.intrusive,
        concurrency=args.concurrency,
        per_host=args.per_host,
        probe_options={**dns_options, **behaviour_options},
        secrets=secrets,
        fail_on=args.fail_on,
        allow_incomplete=args.allow_incomplete,
        argv=tuple(redact_argv(argv)),
        recorded_options={
            "targets_files": args.targets_file, "relay_domain": args.relay_domain, "smuggling_rcpt": args.smuggling_rcpt,
            "auth_user": args.auth_user, "auth_password": "[redacted]" if secrets else None,
            "dns": dns_options, "shard": args.shard,
        },
    )


def run_scan_command(args: argparse.Namespace, argv: list[str]) -> int:
    from smtpaudit import api
    from smtpaudit.report import model

    _resolve_format(args)
    endpoints = _collect_targets(args)
    if args.shard:
        from smtpaudit.fleet import FleetError, parse_shard, select_shard

        try:
            shard = parse_shard(args.shard)
        except FleetError as exc:
            raise UsageError(str(exc)) from None
        endpoints = select_shard(endpoints, *shard)
        args.shard = f"{shard[0]}/{shard[1]}"  # index/N resolved: file names and the report say which shard
        if not endpoints:
            sys.stderr.write(f"smtpaudit: shard {args.shard} holds no target\n")
    ruleset = load_ruleset(args)
    if args.baseline:
        from smtpaudit import baseline as bl

        bl.load(args.baseline)  # a bad baseline is exit 2 now, not after an hour-long fleet scan
    options = _scan_options(args, argv)
    history = history_commands.prepare(args.history) if args.history else None  # fail before scanning
    from smtpaudit.fleet import Progress

    progress = Progress(len(endpoints), enabled=not args.quiet and sys.stderr.isatty())
    if history is not None or any(ep.role is Role.DOMAIN for ep in endpoints):
        # The history records whole reports, and a mail domain is judged from all its MX entries'
        # facts together: the in-memory path.
        try:
            report = api.scan(endpoints, ruleset, options, on_entry=lambda e: progress(e["endpoint"]["id"], e),
                              on_probe=progress.probe_event)
        finally:
            progress.finish()
        _apply_baseline(report, args)
        # A scan cut short by a signal is not a night of the fleet: it stays out of the history.
        view, recorded = (history_commands.record(history, report, quiet=args.quiet, view=args.format == "html")
                          if history is not None and not report.get("interrupted") else (None, True))
        code = exit_code_for(report, args.fail_on, allow_incomplete=args.allow_incomplete)
        _write(report, args, view)
        _explain_incomplete(report, args)
        stop = report.get("interrupted")
        if stop:
            return _interrupted(report, args, lambda path: _write_file(path, model.dumps(report)))
        return code if recorded else EXIT_USAGE
    # Otherwise finished endpoints go to disk as they come (report/stream.py), never all into
    # memory: a 10,000-endpoint fleet needs no more RAM than a small one.
    from smtpaudit import baseline as bl
    from smtpaudit.report.stream import EntrySpool

    applier = bl.Applier(_load_baseline(args)) if getattr(args, "baseline", None) else None
    spool_path = Path(args.output_dir) / f"{_stem(args)}.jsonl" if args.output_dir else None
    try:
        spool = EntrySpool(spool_path)
    except OSError as exc:
        raise UsageError(f"cannot write to --output-dir {args.output_dir}: {exc.strerror or exc}") from None

    def finished(entry: dict[str, Any]) -> None:
        if applier is not None:
            applier.mark(entry)
        progress(entry["endpoint"]["id"], entry)

    try:
        try:
            report = api.scan(endpoints, ruleset, options, on_entry=finished, spool=spool, on_probe=progress.probe_event)
        finally:
            progress.finish()
        if applier is not None:
            for warning in applier.finish(report):
                sys.stderr.write(f"smtpaudit: warning: {warning}\n")
        code = exit_code_for(report, args.fail_on, allow_incomplete=args.allow_incomplete)
        _write_streamed(report, spool, args)
        _explain_incomplete(report, args)
        if report.get("interrupted"):
            code = _interrupted(report, args, lambda path: _write_streamed_file(report, spool, "json", path))
    except BaseException:
        # Failed: the JSON Lines file in --output-dir keeps every finished endpoint.
        spool.close()
        raise
    # Written out in full by now: the combined and per-endpoint reports hold the same data, so the
    # spool goes (transcripts are kept complete, not duplicated once more).
    spool.cleanup(remove=True)
    return code


def _interrupted(report: dict[str, Any], args: argparse.Namespace, write_json: Any) -> int:
    """What finished is written (JSON and the asked format); the exit code says it was cut short."""
    from smtpaudit.interrupt import Interrupted

    stop = report["interrupted"]
    if args.output and args.output != "-" and args.format != "json":
        # The canonical JSON too (facts kept, re-renderable), next to the asked format.
        write_json(f"{args.output}.json")
    sys.stderr.write(f"smtpaudit: interrupted by {stop['signal']}: report of the {stop['endpoints_finished']} endpoint(s) finished so far written\n")
    return Interrupted(getattr(signal, stop["signal"])).exit_code


def _load_baseline(args: argparse.Namespace) -> Any:
    from smtpaudit import baseline as bl

    try:
        return bl.load(args.baseline)
    except bl.BaselineError as exc:
        raise UsageError(str(exc)) from None


def _stem(args: argparse.Namespace) -> str:
    if getattr(args, "shard", None):
        i, n = (int(x) for x in args.shard.split("/"))
        return f"report-shard-{i}-of-{n}"  # shards of one fleet can share a directory
    return "report"


def _write_streamed_file(report: dict[str, Any], spool: Any, fmt: str, path: str, *, sarif_artifact: str | None = None) -> Path:
    """One streamed output file, atomically (temp file, fsync, rename): a full disk is exit 2."""
    from smtpaudit.atomic import WriteError, open_text
    from smtpaudit.fleet import write_streamed

    try:
        with open_text(path) as fh:
            write_streamed(report, spool, fmt, fh, sarif_artifact=sarif_artifact)
    except WriteError as exc:
        raise UsageError(str(exc)) from None
    return Path(path)


def _write_streamed(report: dict[str, Any], spool: Any, args: argparse.Namespace) -> None:
    """``_write`` for a scan whose entries are in ``spool`` (report endpoints are skeletons)."""
    from smtpaudit.fleet import write_output_dir_streamed, write_streamed
    from smtpaudit.report import text

    fmt = _resolve_format(args)
    if args.output_dir:
        formats = ["json"] + ([fmt] if fmt not in ("json", "text") and args.format else [])
        try:
            index = write_output_dir_streamed(report, spool, args.output_dir, formats=formats, stem=_stem(args),
                                              sarif_artifact=args.sarif_artifact)
        except OSError as exc:
            raise UsageError(f"cannot write to --output-dir {args.output_dir}: {exc.strerror or exc}") from None
        if not args.quiet:
            sys.stderr.write(f"wrote {', '.join(index['combined'])} and {len(index['endpoints'])} per-endpoint "
                             f"report(s) under {args.output_dir}/endpoints/\n")
        if not args.output:
            if not args.quiet:
                write_streamed(report, spool, "text", sys.stdout, style=text.style_for(sys.stdout, args.color))
            return
    if args.output and args.output != "-":
        _write_streamed_file(report, spool, fmt, args.output, sarif_artifact=args.sarif_artifact)
        if not args.quiet:
            # The report is in the file the user named: stdout gets only the verdict per endpoint.
            write_streamed(report, spool, "text", sys.stdout, style=text.style_for(sys.stdout, args.color), verdicts_only=True)
    elif fmt == "text" and args.output != "-":
        if not args.quiet:
            write_streamed(report, spool, "text", sys.stdout, style=text.style_for(sys.stdout, args.color))
    elif not args.quiet or args.output == "-":
        write_streamed(report, spool, fmt, sys.stdout, sarif_artifact=args.sarif_artifact)


def _explain_incomplete(report: dict[str, Any], args: argparse.Namespace) -> None:
    """One line per endpoint that was not fully scanned, on stderr: the exit code 3 needs a why."""
    if getattr(args, "quiet", False):
        return
    for e in report["endpoints"]:
        if e.get("status") == "complete":
            continue
        reasons = e.get("status_reasons") or []
        why = e.get("error") or ("; ".join(f"{r['probe']}: {r['message']}" for r in reasons[:2]) if reasons else "unknown")
        clean = "".join(ch if ch.isprintable() else "?" for ch in str(why))[:300]
        sys.stderr.write(f"smtpaudit: {e['endpoint']['id']}: {e.get('status')}, not graded: {clean}\n")


def _write_output_dir(report: dict[str, Any], args: argparse.Namespace, fmt: str) -> None:
    from smtpaudit.atomic import WriteError
    from smtpaudit.fleet import write_output_dir
    from smtpaudit.workflows import EXTENSIONS, renderer

    formats = ["json"] + ([fmt] if fmt not in ("json", "text") and args.format else [])
    stem = "report"
    if getattr(args, "shard", None):
        i, n = (int(x) for x in args.shard.split("/"))
        stem = f"report-shard-{i}-of-{n}"  # shards of one fleet can share a directory
    try:
        index = write_output_dir(report, args.output_dir, stem=stem,
                                 renderers={EXTENSIONS[f]: renderer(f, sarif_artifact=args.sarif_artifact) for f in formats})
    except WriteError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write to --output-dir {args.output_dir}: {exc.strerror or exc}") from None
    if not args.quiet:
        sys.stderr.write(f"wrote {', '.join(index['combined'])} and {len(index['endpoints'])} per-endpoint report(s) under {args.output_dir}/endpoints/\n")


def _load_reports(paths: Sequence[str]) -> dict[str, Any]:
    from smtpaudit.fleet import FleetError, merge_reports
    from smtpaudit.report import model

    try:
        return merge_reports([model.load(p) for p in paths])
    except FleetError as exc:
        raise UsageError(str(exc)) from None


# Saved reports larger than this in total (a fleet's shards: ~110 KB per endpoint) are merged and
# rendered streamed (report/stream.py), one endpoint in memory at a time; each entry is still
# checked against the report schema.
STREAM_REPORTS_ABOVE = 256 * 1024 * 1024


def _total_size(paths: Sequence[str]) -> int:
    total = 0
    for p in paths:
        try:
            total += os.path.getsize(p)
        except OSError:
            return 0  # the in-memory path reports the unreadable file properly
    return total


def run_report_command(args: argparse.Namespace) -> int:
    _resolve_format(args)
    if args.history or _total_size(args.reports) <= STREAM_REPORTS_ABOVE:
        # Small enough to hold (and the history records whole reports): the in-memory path, with
        # every problem of a bad file listed against the JSON Schema.
        report = _load_reports(args.reports)
        _apply_baseline(report, args)
        args.output_dir = None
        code = EXIT_OK
        if args.fail_on or args.baseline or args.allow_incomplete or len(args.reports) > 1:
            # Only then does the gate change; a plain re-render is lossless.
            code = exit_code_for(report, args.fail_on, allow_incomplete=args.allow_incomplete)
        view, recorded = (None, True)
        if args.history:
            view, recorded = history_commands.record(history_commands.prepare(args.history), report,
                                                     source=", ".join(args.reports), quiet=args.quiet, view=args.format == "html")
        _write(report, args, view)
        if not recorded:
            return EXIT_USAGE
        return code if args.fail_on else EXIT_OK
    # Streamed (report/stream.py): shard reports of a large fleet are merged and rendered one
    # endpoint at a time, never all in memory.
    from smtpaudit import baseline as bl
    from smtpaudit.fleet import FleetError, merge_streamed

    applier = bl.Applier(_load_baseline(args)) if getattr(args, "baseline", None) else None
    try:
        report, spool = merge_streamed(args.reports, mark=applier.mark if applier is not None else None)
    except FleetError as exc:
        raise UsageError(str(exc)) from None
    try:
        if applier is not None:
            for warning in applier.finish(report):
                sys.stderr.write(f"smtpaudit: warning: {warning}\n")
        args.output_dir = None
        code = EXIT_OK
        if args.fail_on or args.baseline or args.allow_incomplete or len(args.reports) > 1:
            # Only then does the gate change; a plain re-render is lossless.
            code = exit_code_for(report, args.fail_on, allow_incomplete=args.allow_incomplete)
        _write_streamed(report, spool, args)
    finally:
        spool.cleanup()
    return code if args.fail_on else EXIT_OK


def run_evaluate_command(args: argparse.Namespace, argv: list[str]) -> int:
    from smtpaudit import api
    from smtpaudit.report import model

    _resolve_format(args)
    saved = model.load(args.report)
    ruleset = load_ruleset(args)
    report = api.rejudge(saved, ruleset, argv=argv, fail_on=args.fail_on, allow_incomplete=args.allow_incomplete)
    _apply_baseline(report, args)
    args.output_dir = None
    code = exit_code_for(report, args.fail_on, allow_incomplete=args.allow_incomplete)
    _write(report, args)
    return code


def run_diff_command(args: argparse.Namespace) -> int:
    import io
    import json

    from smtpaudit import diff as differ
    from smtpaudit.report import model

    _resolve_format(args, allowed=("text", "json", "html"))
    if args.history:
        if args.new:
            raise UsageError("diff --history DB takes one report: today's (it is compared with the last night in DB)")
        new = model.load(args.old)
        result = differ.compare(history_commands.diff_base(args.history, new), new)
    elif not args.new:
        raise UsageError("diff: give OLD.json NEW.json, or --history DB NEW.json")
    else:
        result = differ.compare(model.load(args.old), model.load(args.new))
    if args.format == "json":
        content = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    elif args.format == "html":
        from smtpaudit.report import html

        content = html.render_diff(result)
    else:
        buf = io.StringIO()
        differ.render_text(result, buf)
        content = buf.getvalue()
    if args.output and args.output != "-":
        _write_file(args.output, content)
        if not args.quiet:
            differ.render_text(result, sys.stdout)
    else:
        sys.stdout.write(content)
    return EXIT_FINDINGS if differ.has_new_at_or_above(result, args.fail_on) else EXIT_OK


def run_baseline_command(args: argparse.Namespace) -> int:
    import datetime as dt

    from smtpaudit import baseline as bl
    from smtpaudit.report import model

    if args.baseline_command != "create":
        raise UsageError("baseline: expected a subcommand: create")
    expires = None
    if args.expires:
        try:
            expires = dt.date.fromisoformat(args.expires)
        except ValueError:
            raise UsageError(f"--expires {args.expires!r}: expected YYYY-MM-DD") from None
    report = model.load(args.report)
    content = bl.create(report, justification=args.justification, expires=expires, source=args.report)
    if args.output == "-":
        sys.stdout.write(content)
    else:
        _write_file(args.output, content)
    return EXIT_OK


def _policy_problems(directory: Path, loaded: list[Rule], known: dict[str, str]) -> list[str]:
    """Every problem of the policies under DIR/policies/, checked against the built-in rules plus DIR's."""
    from smtpaudit.engine.policy import apply_policy, load_policy
    from smtpaudit.engine.rules import RuleSetError, load_rules

    files = sorted((directory / "policies").glob("*.toml")) if (directory / "policies").is_dir() else []
    if not files:
        return []
    try:
        rules = load_rules([builtin_rules_dir()], known) if directory.resolve() != builtin_rules_dir().resolve() else {}
    except RuleSetError:
        rules = {}
    rules.update({r.id: r for r in loaded})
    problems: list[str] = []
    for path in files:
        try:
            apply_policy(load_policy(path), rules, known)
        except RuleSetError as exc:
            problems.extend(str(e) for e in exc.errors)
    return problems


def run_rules_command(args: argparse.Namespace) -> int:
    from smtpaudit.catalog import load_catalog
    from smtpaudit.engine.evaluate import check_examples
    from smtpaudit.engine.rules import load_directory

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
            # Every problem in every file: broken files do not stop the others' examples being run.
            loaded, errors = load_directory(p, known, origin=str(p))
            problems.extend(str(e) for e in errors)
            count += len(loaded)
            for rule in loaded:
                problems.extend(check_examples(rule))
            problems.extend(_policy_problems(p, loaded, known))
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
        ruleset = load_ruleset(args)
        rules, policy = ruleset.rules, ruleset.policy
        if args.json:
            import json

            sys.stdout.write(json.dumps([r.summary() for r in rules.values()], indent=2) + "\n")
        else:
            for rule in sorted(rules.values(), key=lambda r: (r.family, r.id)):
                sys.stdout.write(f"{rule.id:40} {rule.severity:8} {rule.score:4.1f} {rule.confidence:9} {rule.title}\n")
            from smtpaudit.api import without_intrusive

            _, intrusive = without_intrusive(ruleset)
            note = f"; {len(intrusive)} need --intrusive, so a scan without it runs {len(rules) - len(intrusive)}" if intrusive else ""
            sys.stdout.write(f"{len(rules)} rule(s), policy {policy.id}{note}\n")
        return EXIT_OK
    raise UsageError("rules: expected a subcommand: list, validate or facts")


def main(argv: Sequence[str] | None = None) -> int:
    from smtpaudit.interrupt import exit_code as interrupt_exit_code, handle_signals

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with handle_signals():
            code = _dispatch(parser, args, argv)
            sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
            return code
    except BrokenPipeError:
        # `smtpaudit rules list | head`: the reader has gone; end quietly, as `cat` would.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # noqa: BLE001 - user errors end here; anything else propagates unchanged
        code = _user_error(exc, args)
        if code is None:
            raise
        return code
    except KeyboardInterrupt as exc:
        sys.stderr.write("smtpaudit: interrupted\n")
        return interrupt_exit_code(exc)


def _loaded_class(module: str, name: str) -> type | None:
    """A class of a module only if that module is loaded: an exception cannot be an instance of
    a class that was never defined, so the error handler need not import anything to ask."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def _user_error(exc: Exception, args: argparse.Namespace) -> int | None:
    """One line per user error (a bad input file, option, target, database or rule) and exit 2;
    None for any other exception."""
    verbose = getattr(args, "verbose", False)
    input_error = _loaded_class("smtpaudit.inputs", "InputError")
    if input_error is not None and isinstance(exc, input_error):
        for line in (exc.lines() if verbose else [str(exc)]):
            sys.stderr.write(f"smtpaudit: error: {line}\n")
        raise SystemExit(EXIT_USAGE) from None
    plain = [UsageError, _loaded_class("smtpaudit.targets", "TargetError"), _loaded_class("smtpaudit.history.store", "HistoryError")]
    if isinstance(exc, tuple(c for c in plain if c is not None)):
        fatal(str(exc))
    rule_set_error = _loaded_class("smtpaudit.engine.rules", "RuleSetError")
    if rule_set_error is not None and isinstance(exc, rule_set_error):
        errors = exc.errors if verbose else exc.errors[:1]
        for err in errors:
            sys.stderr.write(f"smtpaudit: rule error: {err}\n")
        if len(exc.errors) > len(errors):
            sys.stderr.write(f"smtpaudit: {len(exc.errors) - len(errors)} more problem(s); --verbose lists them\n")
        return EXIT_USAGE
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "scan":
        return run_scan_command(args, argv)
    if args.command == "rules":
        return run_rules_command(args)
    if args.command == "report":
        return run_report_command(args)
    if args.command == "evaluate":
        return run_evaluate_command(args, argv)
    if args.command == "diff":
        return run_diff_command(args)
    if args.command == "baseline":
        return run_baseline_command(args)
    if args.command == "history":
        return history_commands.run(args)
    if args.command == "demo":
        from smtpaudit.demo import run_demo

        return run_demo(args.output, args.color)
    parser.print_help()
    return EXIT_USAGE
