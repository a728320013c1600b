"""What the CLI calls for history: the ``history`` command's parser and runner, and the hooks of
``scan --history``, ``report --history`` and ``diff --history`` (cli.py only wires arguments)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smtpaudit.history.store import HistoryStore, Recorded

# The store, queries and renderers (SQLite, codecs, statistics) are imported by the functions
# that use them: the CLI builds this parser on every run, most of which never open a database.

HELP = "trends, finding lifecycles and time to fix from the nightly history database"


def add_parser(sub: Any) -> None:
    """The ``history DB SUBCOMMAND`` parser."""
    hp = sub.add_parser("history", help=HELP, description=HELP + ". Record scans with scan/report --history DB.",
                        epilog="exit 2 on a missing, corrupt, foreign, locked or too new database")
    hp.add_argument("db", metavar="DB", help="history database: an SQLite file, or a postgresql:// URL")
    hs = hp.add_subparsers(dest="history_command", metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=("text", "json"), default="text")
        p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    t = hs.add_parser("trend", help="per night: endpoints, statuses, grades, open findings by severity (fleet and per endpoint)")
    t.add_argument("--nights", type=int, metavar="N", help="only the last N nights")
    common(t)
    f = hs.add_parser("findings", help="open findings with first seen, last seen, nights open and fixed/reopened events")
    f.add_argument("--all", action="store_true", help="include fixed findings")
    common(f)
    e = hs.add_parser("endpoint", help="timeline of one endpoint: grade, software and certificate changes, findings")
    e.add_argument("endpoint_id", metavar="ID", help="endpoint id as in reports, e.g. mx.example.org:25")
    common(e)
    m = hs.add_parser("mttr", help="time to fix per severity over a window")
    m.add_argument("--days", type=int, default=90, metavar="N", help="fixes within N days before the newest scan (default: %(default)s)")
    common(m)
    p = hs.add_parser("prune", help="delete scans older than N days before the newest one, and their unreferenced data")
    p.add_argument("--keep-days", type=int, required=True, metavar="N")
    common(p)


def _emit(args: argparse.Namespace, data: dict[str, Any], text_writer: Any) -> None:
    if args.format == "json":
        content = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        buf = io.StringIO()
        text_writer(data, buf)
        content = buf.getvalue()
    if args.output and args.output != "-":
        from smtpaudit.atomic import WriteError, write_text
        from smtpaudit.history.store import HistoryError

        try:
            write_text(args.output, content)  # atomic: the previous file survives a full disk or a signal
        except WriteError as exc:
            raise HistoryError(str(exc)) from None
    else:
        sys.stdout.write(content)


def run(args: argparse.Namespace) -> int:
    """``smtpaudit history DB SUBCOMMAND``; raises HistoryError (exit 2) on bad input."""
    from smtpaudit.history import queries, render
    from smtpaudit.history.store import HistoryError, open_store

    cmd = args.history_command
    if cmd is None:
        raise HistoryError("history: expected a subcommand: trend, findings, endpoint, mttr or prune")
    for name in ("nights", "days", "keep_days"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "keep_days" else 1):
            raise HistoryError(f"--{name.replace('_', '-')} {value}: must be {'0 or more' if name == 'keep_days' else 'at least 1'}")
    if cmd == "prune":
        with open_store(args.db, write=True) as store:
            result = store.prune(args.keep_days)
        _emit(args, result, lambda d, out: out.write(
            f"deleted {d['scans_deleted']} scan(s) before {d['cutoff'] or '-'} and {d['parts_deleted']} unreferenced part(s)\n"))
        return 0
    with open_store(args.db, write=False) as store:
        if cmd == "trend":
            _emit(args, queries.trend(queries.load(store), nights=args.nights), render.trend_text)
        elif cmd == "findings":
            _emit(args, queries.findings(queries.load(store), include_fixed=args.all), render.findings_text)
        elif cmd == "endpoint":
            data = queries.endpoint_timeline(queries.load(store, endpoint=args.endpoint_id), args.endpoint_id)
            _emit(args, data, render.endpoint_text)
        elif cmd == "mttr":
            _emit(args, queries.mttr(queries.load(store), days=args.days), render.mttr_text)
    return 0


# ---------------------------------------------------------------------- hooks for scan / report / diff

def prepare(path: str) -> HistoryStore:
    """Open (create, migrate) the database and make sure it can be written, before any scan runs:
    a bad or locked database fails first, with nothing written."""
    from smtpaudit.history.store import open_store

    store = open_store(path, write=True)
    try:
        store.check_writable()
    except BaseException:
        store.close()
        raise
    return store


def record(store: HistoryStore, report: dict[str, Any], *, source: str | None = None, quiet: bool = False,
           view: bool = False) -> tuple[dict[str, Any] | None, bool]:
    """Record the report and (for HTML output) build the history section's view. Returns
    (view, ok): a failure is printed, and the caller still writes the report (a scan is never
    lost to the history)."""
    from smtpaudit.history.store import HistoryError

    try:
        result: Recorded = store.record(report, source=source)
        section = html_section(store, report) if view else None
    except HistoryError as exc:
        sys.stderr.write(f"smtpaudit: error: {exc}; the report itself is still written\n")
        store.close()
        return None, False
    store.close()
    if not quiet:
        what = "recorded" if result.created else "already recorded"
        sys.stderr.write(f"history: {what} scan {result.scan_id} (night {result.night}, {result.endpoints} endpoint(s)) in {store.path}\n")
    return section, True


def previous_report(store: HistoryStore, report: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The night before this report's night, merged over its shards (or None)."""
    night = store.previous_night(str(report.get("started")))
    return night, (store.night_report(night) if night else None)


def html_section(store: HistoryStore, report: dict[str, Any]) -> dict[str, Any]:
    from smtpaudit import diff as differ
    from smtpaudit.history import queries, render

    with store.errors("building the history section"):
        trend_data = queries.trend(queries.load(store))
        night, previous = previous_report(store, report)
        comparison = differ.compare(previous, report) if previous is not None else None
    return render.html_view(trend_data, comparison, night)


def diff_base(path: str, report: dict[str, Any]) -> dict[str, Any]:
    """``diff --history DB today.json``: the last night before today's, from the database."""
    from smtpaudit.history.shape import night as night_of
    from smtpaudit.history.store import HistoryError, open_store

    try:
        night_of(str(report.get("started")))
    except ValueError:
        raise HistoryError(f"report has no valid 'started' time ({report.get('started')!r}): cannot find the night before it") from None
    with open_store(path, write=False) as store:
        night, previous = previous_report(store, report)
    if previous is None:
        raise HistoryError(f"{path}: no scan recorded on a night before {report.get('started')}: nothing to compare with")
    return previous
