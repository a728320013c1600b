"""The work behind the report-side commands: render a report in a format, re-judge saved facts,
apply a baseline, write fleet output. No network here: everything starts from a report.

``cli.py`` parses arguments and picks exit codes; it calls these functions.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Mapping

from smtpaudit import __version__, atomic
from smtpaudit.catalog import Catalog
from smtpaudit.engine.rules import Rule
from smtpaudit.report import html, model, sarif, text
from smtpaudit.scan import build_report, judge_endpoint, now_iso

FORMATS = ("json", "text", "sarif", "html")
EXTENSIONS = {"json": "json", "text": "txt", "sarif": "sarif", "html": "html"}


def renderer(fmt: str, *, sarif_artifact: str | None = None) -> Callable[[dict[str, Any]], str]:
    """Report -> text for one output format."""
    if fmt == "json":
        return model.dumps
    if fmt == "sarif":
        artifact = sarif.Artifact.parse(sarif_artifact) if sarif_artifact else None
        return lambda r: sarif.dumps(r, artifact=artifact)
    if fmt == "html":
        return html.render

    def as_text(r: dict[str, Any]) -> str:
        buf = io.StringIO()
        text.render(r, buf)
        return buf.getvalue()

    return as_text


def rejudge(report: dict[str, Any], rules: Mapping[str, Rule], catalog: Catalog, *, rule_dirs: list[str],
            policy: dict[str, Any], argv: list[str], skipped_rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A new report judging the saved facts with other rules or another policy (no network).

    Facts, transcripts and probe outcomes are kept as observed; findings, passes, scores and
    the rule-set section are recomputed. Rules needing facts of probes that did not run in the
    original scan come out *not evaluated*, with the reason."""
    entries = []
    for old in report["endpoints"]:
        entry = {k: v for k, v in old.items()}
        entry["findings"], entry["not_evaluated"], entry["passed"], entry["not_applicable"] = [], [], [], []
        judge_endpoint(entry, rules, catalog)
        entries.append(entry)
    options = dict(report.get("invocation", {}).get("options", {}))
    options["evaluated_from"] = {"started": report["started"], "tool": report["tool"]["version"],
                                 "ruleset": report.get("ruleset", {}).get("digest")}
    probes_run = list(report.get("probes", {}))
    new = build_report(
        entries, rules=rules, rule_dirs=rule_dirs, policy=policy, started=report["started"],
        finished=report["finished"], duration=report.get("duration", 0.0), argv=argv, options=options,
        probes_run=probes_run, catalog=catalog, skipped_rules=skipped_rules,
    )
    # The probes section describes what ran then, not what the current catalog would plan.
    new["probes"] = report.get("probes", new["probes"])
    new["invocation"]["evaluated"] = now_iso()
    new["tool"] = {"name": "smtpaudit", "version": __version__}
    return new


def write_text(path: str | Path, content: str) -> Path:
    """Atomic: see smtpaudit.atomic."""
    return atomic.write_text(path, content)
