"""Render a report as SARIF 2.1.0 shaped for GitHub code scanning (one run, one result per finding).

Code scanning shows only results located in a repository file, and an endpoint is not a file. So
each result's physical location is the line of the targets file that named the endpoint (or a
file the caller passes, e.g. the MTA's configuration), while the endpoint itself is a logical
location (kind ``resource``), part of the message and of the result's properties. Endpoints
given on the command line live in a virtual ``smtpaudit-targets.txt`` artifact whose text is
embedded in ``run.artifacts``, one target per line, so every result still has a line to point at.

Severity -> level is ``smtpaudit.engine.severity.SARIF_LEVEL`` (the same table the exit code
uses), one step lower for a tentative finding (``TENTATIVE_LEVEL``: a version-based guess is not
an error-level alert next to an observed flaw of the same severity); confidence -> precision is
``SARIF_PRECISION``; the 0-10 score is ``security-severity``. Results are in the ranking order of
``smtpaudit.report.rank``; version-based CVE matches keep one result each (stable fingerprints),
carry their product/version group in ``properties.group``, and the rule's ``help`` says how the
group is formed.
``partialFingerprints`` derive from the report's finding fingerprint (rule id + endpoint id), so
they are identical across scans of the same server and distinct per rule and endpoint.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, TextIO
from urllib.parse import quote

from smtpaudit.engine.severity import SARIF_LEVEL, SARIF_PRECISION, SEVERITIES
from smtpaudit.outcomes import EndpointStatus
from smtpaudit.report import rank

SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
VIRTUAL_TARGETS = "smtpaudit-targets.txt"
SRCROOT = "%SRCROOT%"
MAX_TAGS = 20  # GitHub rejects rules with more
MAX_DESCRIPTION = 1024  # GitHub's limit for short/full descriptions
FINGERPRINT_KEY = "smtpaudit/v1"  # spec 3.27.17: versioned hierarchical key

# A tentative finding sits one level below a confirmed one of the same severity.
TENTATIVE_LEVEL = {"error": "warning", "warning": "note", "note": "note"}

GROUP_HELP = ("This is a version-based match: the rule fires when the product and version in the banner fall in the "
              "affected range. Distributions backport fixes without changing the version, so it is tentative and its "
              "SARIF level is one step lower than a confirmed finding of the same severity. All version-based matches "
              "for one product/version form one group (result property `group`), shown as one line in the terminal "
              "and as one expandable list in the HTML report; confirm with the package changelog, then fix or accept "
              "the whole group.")


def result_level(severity: str, confidence: str) -> str:
    level = SARIF_LEVEL[severity]
    return TENTATIVE_LEVEL[level] if confidence == "tentative" else level


# Tool notifications (invocation.toolExecutionNotifications / toolConfigurationNotifications).
NOTIFICATIONS = {
    "endpoint-not-scanned": "An endpoint could not be scanned (unreachable, refused, no usable greeting); none of its SMTP/TLS rules were judged.",
    "endpoint-incomplete": "An endpoint was reached but a planned probe did not finish (timeout, refusal, deadline); it is not graded and the rules needing that probe's facts were not evaluated.",
    "probe-error": "A probe failed on an endpoint that was otherwise scanned; rules needing its facts were not evaluated.",
    "baseline-expired": "A baseline entry has expired and no longer suppresses the findings it names.",
    "baseline-unused": "A baseline entry matched no finding in this report.",
}


@dataclass(frozen=True)
class Artifact:
    """Where results go when the user names one file for all of them (e.g. the MTA's config)."""

    path: str
    line: int = 1

    @classmethod
    def parse(cls, text: str) -> "Artifact":
        """``FILE`` or ``FILE:LINE``."""
        m = re.fullmatch(r"(.+?):(\d+)", text)
        if m and int(m.group(2)) >= 1:
            return cls(m.group(1), int(m.group(2)))
        return cls(text, 1)


def _uri(path: str, srcroot: Path) -> tuple[str, str | None]:
    """A uri-reference for a file path: relative to the source root when possible (GitHub needs
    repository-relative paths), otherwise an absolute file: URI."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(srcroot.resolve())
        except ValueError:
            return p.resolve().as_uri(), None
    rel = PurePosixPath(*p.parts) if p.parts else PurePosixPath(".")
    text = os.path.normpath(str(rel)).replace(os.sep, "/")
    if text.startswith("../"):
        return (srcroot / p).resolve().as_uri(), None
    return quote(text, safe="/"), SRCROOT


def _root_spec(endpoint: dict[str, Any]) -> str:
    # MX endpoints expanded from a domain target point back at the domain's line.
    spec = endpoint.get("spec") or endpoint["id"]
    return spec.split(" (MX ", 1)[0]


def _pascal(rule_id: str) -> str:
    return "".join(part.capitalize() for part in rule_id.split("-"))


def _clip(text: str, limit: int = MAX_DESCRIPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _help_markdown(rule: dict[str, Any]) -> str:
    parts = [rule.get("description", "").strip(), ""]
    if rank.is_version_based(rule):
        parts += ["**Grouping:** " + GROUP_HELP, ""]
    rem = rule.get("remediation") or {}
    if rem.get("summary"):
        parts += ["**Remediation:** " + rem["summary"], ""]
    for mta, label in (("postfix", "Postfix"), ("exim", "Exim"), ("opensmtpd", "OpenSMTPD")):
        if rem.get(mta):
            parts += [f"{label}:", "", "```", rem[mta].rstrip(), "```", ""]
    refs = rule.get("references") or []
    if refs:
        parts.append("**References:**")
        parts += [f"- [{r['title']}]({r['url']})" if r.get("url") else f"- {r['title']}" for r in refs]
    return "\n".join(parts).strip() + "\n"


def _help_text(rule: dict[str, Any]) -> str:
    rem = rule.get("remediation") or {}
    text = rule.get("description", "").strip()
    if rank.is_version_based(rule):
        text += "\n\n" + GROUP_HELP
    if rem.get("summary"):
        text += "\n\nRemediation: " + rem["summary"]
    return text


def _rule_descriptor(rid: str, rule: dict[str, Any], finding: dict[str, Any]) -> dict[str, Any]:
    severity = rule.get("severity", finding["severity"])
    score = float(rule.get("score", finding["score"]))
    tags = ["security", rule.get("family") or finding.get("family") or "smtp"]
    for t in rule.get("tags", finding.get("tags", [])):
        if t not in tags:
            tags.append(t)
    desc: dict[str, Any] = {
        "id": rid,
        "name": _pascal(rid),
        "shortDescription": {"text": _clip(_sentence(rule.get("title", finding["title"])))},
        "fullDescription": {"text": _clip(rule.get("description") or rule.get("title", finding["title"]))},
        "help": {"text": _help_text(rule) or finding["title"], "markdown": _help_markdown(rule)},
        "defaultConfiguration": {"level": result_level(severity, rule.get("confidence", finding["confidence"]))},
        "properties": {
            "tags": tags[:MAX_TAGS],
            "precision": SARIF_PRECISION[rule.get("confidence", finding["confidence"])],
            # GitHub reads it as a string; 0 means "no security severity" (info).
            "security-severity": f"{score:.1f}",
            "severity": severity,
            "confidence": rule.get("confidence", finding["confidence"]),
        },
    }
    url = next((r["url"] for r in rule.get("references", []) if r.get("url")), None)
    if url:
        desc["helpUri"] = url
    return desc


def _logical(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {"name": endpoint["id"], "fullyQualifiedName": endpoint["url"], "kind": "resource"}


def _region(line: int) -> dict[str, int]:
    # GitHub wants all four fields; the whole first character of the line is enough.
    return {"startLine": line, "startColumn": 1, "endLine": line, "endColumn": 2}


def inventory_name(report: dict[str, Any]) -> str:
    """The name of the target set, used in automationDetails.id: the targets file(s) or 'cli'."""
    files = sorted({e["endpoint"]["origin_file"] for e in report["endpoints"] if e["endpoint"].get("origin_file")})
    if not files:
        files = list(report.get("invocation", {}).get("options", {}).get("targets_files") or [])
    if not files:
        return "cli"
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "-", Path(f).stem).strip("-") or "targets" for f in files]
    return "+".join(stems)


class _Locator:
    """Maps endpoints to physical locations and collects the artifacts they refer to."""

    def __init__(self, report: dict[str, Any], artifact: Artifact | None, srcroot: Path) -> None:
        self.artifact = artifact
        self.srcroot = srcroot
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.virtual_lines: dict[str, int] = {}
        for e in report["endpoints"]:
            ep = e["endpoint"]
            if not ep.get("origin_file"):
                self.virtual_lines.setdefault(_root_spec(ep), len(self.virtual_lines) + 1)

    def _index(self, uri: str, base: str | None, contents: str | None = None) -> int:
        if uri not in self.artifacts:
            art: dict[str, Any] = {"location": {"uri": uri, **({"uriBaseId": base} if base else {})}}
            if contents is not None:
                art["contents"] = {"text": contents}
                art["description"] = {"text": "Targets given on the smtpaudit command line, one per line (not a repository file)."}
            art["index"] = len(self.artifacts)
            self.artifacts[uri] = art
        return self.artifacts[uri]["index"]

    def physical(self, ep: dict[str, Any]) -> dict[str, Any]:
        if self.artifact is not None:
            uri, base = _uri(self.artifact.path, self.srcroot)
            line = self.artifact.line
        elif ep.get("origin_file"):
            uri, base = _uri(ep["origin_file"], self.srcroot)
            line = int(ep.get("origin_line") or 1)
        else:
            uri, base = VIRTUAL_TARGETS, SRCROOT
            line = self.virtual_lines[_root_spec(ep)]
        contents = "".join(f"{spec}\n" for spec in self.virtual_lines) if uri == VIRTUAL_TARGETS else None
        index = self._index(uri, base, contents)
        loc: dict[str, Any] = {"uri": uri, "index": index}
        if base:
            loc["uriBaseId"] = base
        return {"artifactLocation": loc, "region": _region(line)}

    def artifact_list(self) -> list[dict[str, Any]]:
        arts = sorted(self.artifacts.values(), key=lambda a: a["index"])
        return [{k: v for k, v in a.items() if k != "index"} for a in arts]


def _finding_result(entry: dict[str, Any], f: dict[str, Any], rule_index: int, locator: _Locator, rule: dict[str, Any],
                    group: str | None = None) -> dict[str, Any]:
    ep = entry["endpoint"]
    result: dict[str, Any] = {
        "ruleId": f["rule_id"],
        "ruleIndex": rule_index,
        "level": result_level(f["severity"], f["confidence"]),
        "message": {"text": _sentence(f"{ep['id']}: {f['message']}")},
        "locations": [{"physicalLocation": locator.physical(ep), "logicalLocations": [_logical(ep)]}],
        "partialFingerprints": {
            # GitHub uses only this key; many hosts share one line of one file, so it must not be
            # left to upload-sarif (which would hash the line and merge alerts across hosts).
            "primaryLocationLineHash": f"{f['fingerprint']}:1",
            FINGERPRINT_KEY: f["fingerprint"],
        },
        "properties": {
            "endpoint": ep["id"],
            "url": ep["url"],
            "host": ep["host"],
            "port": ep["port"],
            "mode": ep["mode"],
            "role": ep["role"],
            "severity": f["severity"],
            "score": f["score"],
            "confidence": f["confidence"],
            "evidence": f["evidence"]["facts"],
            "grade": (entry.get("score") or {}).get("grade"),
        },
    }
    if group:
        result["properties"]["group"] = group
    if f.get("suppressed"):
        s = f["suppressed"]
        sup: dict[str, Any] = {"kind": "external", "status": "accepted", "justification": s.get("justification") or "accepted in the baseline"}
        if s.get("source") or s.get("expires"):
            sup["properties"] = {k: s[k] for k in ("source", "entry", "pattern", "expires") if s.get(k) is not None}
        result["suppressions"] = [sup]
    return result


def _notification(kind: str, level: str, text: str, ep: dict[str, Any] | None, ts: str | None) -> dict[str, Any]:
    n: dict[str, Any] = {"descriptor": {"id": kind}, "level": level, "message": {"text": _sentence(text)}}
    if ep is not None:
        n["locations"] = [{"logicalLocations": [_logical(ep)]}]
    if ts:
        n["timeUtc"] = ts
    return n


def render(
    report: dict[str, Any],
    *,
    artifact: Artifact | None = None,
    srcroot: str | Path | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """The SARIF log (a dict) for a report. ``artifact`` puts every result on one file/line;
    ``srcroot`` is what relative URIs are relative to (default: the current directory);
    ``category`` overrides the target-set name in ``automationDetails.id``."""
    return _render(report, artifact=artifact, srcroot=srcroot, category=category)[0]


def write_stream(
    skeleton: dict[str, Any],
    entries: Iterable[dict[str, Any]],
    out: TextIO,
    *,
    artifact: Artifact | None = None,
    srcroot: str | Path | None = None,
    category: str | None = None,
) -> None:
    """``dumps`` of the full report, written from a skeleton report (report/stream.py: endpoints
    without facts, transcripts or finding details) while the full ``entries`` are read one at a
    time: the results are never all in memory."""
    from smtpaudit.report.stream import MARKER, splice

    doc, results_of = _render(skeleton, artifact=artifact, srcroot=srcroot, category=category, stream=True)
    document = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    splice(document, (r for e in entries for r in results_of(e)), out)


def _render(
    report: dict[str, Any],
    *,
    artifact: Artifact | None = None,
    srcroot: str | Path | None = None,
    category: str | None = None,
    stream: bool = False,
) -> tuple[dict[str, Any], Callable[[dict[str, Any]], Iterator[dict[str, Any]]]]:
    """The SARIF log and a function giving one entry's results. With ``stream`` the results list
    holds the stream marker, and the artifacts the results will refer to are registered first
    (from the skeleton's findings, in the order the results will come)."""
    root = Path(srcroot) if srcroot else Path.cwd()
    locator = _Locator(report, artifact, root)
    rules_meta = report.get("ruleset", {}).get("rules", {})
    sev_rank = {s: i for i, s in enumerate(SEVERITIES)}

    # One descriptor per rule used, in a stable order (severity, then id).
    used: dict[str, dict[str, Any]] = {}
    for entry in report["endpoints"]:
        for f in entry["findings"]:
            used.setdefault(f["rule_id"], f)
    order = sorted(used, key=lambda rid: (sev_rank[used[rid]["severity"]], rid))
    descriptors = [_rule_descriptor(rid, rules_meta.get(rid, {}), used[rid]) for rid in order]
    index_of = {rid: i for i, rid in enumerate(order)}

    def results_of(entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # The shared ranking and grouping (report/rank.py): version-based CVEs of one banner together.
        for item in rank.group_items(entry["findings"]):
            label = f"{item.group['product']} {item.group['version']} version-based CVEs" if item.group else None
            for f in item.findings:
                yield _finding_result(entry, f, index_of[f["rule_id"]], locator, rules_meta.get(f["rule_id"], {}), label)

    results: list[Any] = []
    exec_notes: list[dict[str, Any]] = []
    for entry in report["endpoints"]:
        ep = entry["endpoint"]
        if stream:
            for _ in entry["findings"]:
                locator.physical(ep)  # the same artifact order the streamed results will produce
        else:
            results.extend(results_of(entry))
        status = EndpointStatus.coerce(entry.get("status"))
        if status is EndpointStatus.UNREACHABLE:
            exec_notes.append(_notification("endpoint-not-scanned", "error", f"{ep['id']} could not be scanned: {entry.get('error') or 'unknown error'}", ep, entry.get("started")))
        elif status is EndpointStatus.INCOMPLETE:
            why = "; ".join(f"{r['probe']}: {r['reason']}" for r in (entry.get("status_reasons") or [])[:5]) or "a planned probe did not finish"
            exec_notes.append(_notification("endpoint-incomplete", "error", f"{ep['id']} was not fully scanned and is not graded ({why})", ep, entry.get("started")))
        for p in entry["probes"] if status is not EndpointStatus.UNREACHABLE else ():
            if p["status"] == "error":
                exec_notes.append(_notification("probe-error", "warning", f"{ep['id']}: probe {p['probe']} failed ({p['error_reason']}): {p['error_message']}", ep, None))

    config_notes: list[dict[str, Any]] = []
    baseline = report.get("baseline") or {}
    for item in baseline.get("expired", []):
        config_notes.append(_notification("baseline-expired", "warning", f"baseline {baseline.get('path')}: entry {item['entry']} ({item['rule']} on {item['endpoint']}) expired on {item['expires']}", None, None))
    for item in baseline.get("unused", []):
        config_notes.append(_notification("baseline-unused", "note", f"baseline {baseline.get('path')}: entry {item['entry']} ({item['rule']} on {item['endpoint']}) matched no finding", None, None))

    interrupted = report.get("interrupted")
    if interrupted:
        exec_notes.append(_notification("scan-interrupted", "error", f"scan interrupted by {interrupted['signal']}: {interrupted['endpoints_finished']} endpoint(s) finished, {len(interrupted['not_finished'])} target(s) not scanned", None, interrupted.get("at")))
    not_complete = sum(1 for e in report["endpoints"] if EndpointStatus.coerce(e.get("status")) is not EndpointStatus.COMPLETE)
    failed = report["summary"].get("unreachable", report["summary"].get("failed", 0))
    invocation: dict[str, Any] = {
        # Endpoints not fully scanned make the run unsuccessful, exactly as they make the exit code 3.
        "executionSuccessful": not_complete == 0 and not interrupted,
        "startTimeUtc": report["started"],
        "endTimeUtc": report["finished"],
        "commandLine": " ".join(["smtpaudit", *report.get("invocation", {}).get("argv", [])]),
        "arguments": list(report.get("invocation", {}).get("argv", [])),
        "toolExecutionNotifications": exec_notes,
        "toolConfigurationNotifications": config_notes,
        "properties": {"endpoints": report["summary"]["endpoints"], "notScanned": failed, "incomplete": not_complete - failed},
    }
    if not config_notes:
        del invocation["toolConfigurationNotifications"]

    name = category or inventory_name(report)
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "smtpaudit",
                "semanticVersion": report["tool"]["version"],
                "fullName": f"smtpaudit {report['tool']['version']} (SMTP hardening audit)",
                "informationUri": "https://smtpaudit.example.org/",
                "rules": descriptors,
                "notifications": [
                    {"id": k, "name": _pascal(k), "shortDescription": {"text": v}, "fullDescription": {"text": v}, "help": {"text": v}}
                    for k, v in NOTIFICATIONS.items()
                ],
                "properties": {
                    "ruleset": {k: report["ruleset"].get(k) for k in ("count", "digest")},
                    "policy": {k: report["ruleset"].get("policy", {}).get(k) for k in ("id", "version")},
                },
            }
        },
        "automationDetails": {"id": f"smtpaudit/{name}/{report['started']}"},
        "invocations": [invocation],
        "artifacts": [],
        "results": results,
        "columnKind": "utf16CodeUnits",
        "properties": {
            "summary": report["summary"],
            "grades": {e["endpoint"]["id"]: (e.get("score") or {}).get("grade") for e in report["endpoints"]},
        },
    }
    run["artifacts"] = locator.artifact_list()
    if not run["artifacts"]:
        del run["artifacts"]
    if any(a["location"].get("uriBaseId") == SRCROOT for a in run.get("artifacts", [])):
        run["originalUriBaseIds"] = {SRCROOT: {"description": {"text": "The repository root (the directory smtpaudit ran in)."}}}
    if stream:
        from smtpaudit.report.stream import MARKER

        run["results"] = [MARKER]
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}, results_of


def dumps(report: dict[str, Any], **kwargs: Any) -> str:
    """SARIF as text (UTF-8 JSON, indented)."""
    return json.dumps(render(report, **kwargs), indent=2, ensure_ascii=False) + "\n"
