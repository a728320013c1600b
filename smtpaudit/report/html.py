"""Render a report (or a diff) as one self-contained HTML page for auditors.

Jinja2 with autoescaping on for everything: every string that came from a server (banners,
replies, certificate names) is escaped, and the page carries a Content-Security-Policy that
allows no script, no network fetch and no external resource even if escaping were bypassed.
CSS and the SVG charts are inline; there are no fonts, images or scripts to load, so the file
opens offline and prints to PDF. This module only prepares view data; layout lives in
``templates/``.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from smtpaudit.engine.severity import GRADES, SEVERITIES
from smtpaudit.report import rank
from smtpaudit.report.jinjacache import CachingEnvironment

TEMPLATES = Path(__file__).with_name("templates")
MAX_TRANSCRIPT_LINES = 200  # per probe in the appendix; the JSON report has them all
MAX_EXCERPT_LINES = 14  # transcript lines shown inside a finding
MAX_FACT_CHARS = 600
MAX_CHAIN = 8  # certificates shown per chain
TOP_ITEMS = 8  # "what first" on the first screen
CERT_FACTS = ("subject", "issuer", "san", "not_before", "not_after", "days_left", "key_type", "key_bits", "key_curve",
              "signature_algorithm", "self_signed", "trusted", "verify_error", "matches_host", "sha256")
MTA_LABELS = (("postfix", "Postfix"), ("exim", "Exim"), ("opensmtpd", "OpenSMTPD"))
GRADE_CLASS = {"A+": "ap", "A": "a", "B": "b", "C": "c", "D": "d", "E": "e", "F": "f"}


def visible(text: Any) -> str:
    """Control characters from servers shown as escapes, not interpreted (before HTML escaping)."""
    out = []
    for ch in str(text):
        if ch == "\t" or ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def fact_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = visible(text)
    return text if len(text) <= MAX_FACT_CHARS else text[:MAX_FACT_CHARS] + f"… ({len(text)} characters)"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = CachingEnvironment(  # the templates' generated code comes from the per-user cache
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its name: nothing is rendered unescaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = visible
    env.filters["fact"] = fact_value
    env.globals["SEVERITIES"] = SEVERITIES
    env.globals["grade_class"] = lambda g: GRADE_CLASS.get(g or "", "none")
    return env


def _svg_bars(rows: list[tuple[str, int, str]], *, label_width: int = 90, width: int = 360) -> dict[str, Any]:
    """Horizontal bars (label, count, css colour var) scaled to the largest count, in SVG coordinates."""
    top = max([n for _, n, _ in rows] + [1])
    span = width - label_width - 40
    bars = []
    for i, (label, n, colour) in enumerate(rows):
        w = round(span * n / top, 1)
        bars.append({"label": label, "count": n, "colour": colour, "y": 6 + i * 24, "width": w if n else 1,
                     "text_x": label_width + 6 + (w if n else 1)})
    return {"bars": bars, "height": 10 + len(rows) * 24, "width": width, "x0": label_width}


def _needles(evidence: dict[str, Any]) -> list[str]:
    """Strings from the evidence facts worth finding in a transcript (banner text, mechanisms...)."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and len(v) >= 3 and "\n" not in v:
            out.append(v.lower())
        elif isinstance(v, (list, tuple)):
            for item in v[:20]:
                walk(item)
        elif isinstance(v, dict):
            for item in list(v.values())[:20]:
                walk(item)

    for value in evidence.values():
        walk(value)
    return out


def _transcript_excerpt(entry: dict[str, Any], probes: list[str], evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """Only the transcript lines that show the evidence (each server reply with the client line
    before it); probes whose transcript does not show any evidence value get no excerpt, only
    the link to their full transcript in the appendix."""
    needles = _needles(evidence)
    blocks = []
    for probe in probes:
        lines = entry.get("transcripts", {}).get(probe) or []
        picked: list[int] = []
        if needles:
            for i, ln in enumerate(lines):
                text = str(ln.get("text", "")).lower()
                if ln.get("dir") == "S" and any(n in text for n in needles):
                    j = i
                    while j > 0 and lines[j - 1].get("dir") == "S":
                        j -= 1  # back to the start of a multi-line reply
                    if j > 0 and lines[j - 1].get("dir") == "C":
                        j -= 1
                    picked.extend(range(j, i + 1))
        keep = sorted(set(picked))[:MAX_EXCERPT_LINES]
        blocks.append({"probe": probe, "lines": [lines[i] for i in keep], "total": len(lines)})
    return [b for b in blocks if b["total"]]


def _appendix(entry: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for probe, lines in sorted((entry.get("transcripts") or {}).items()):
        out.append({"probe": probe, "lines": lines[:MAX_TRANSCRIPT_LINES], "omitted": max(0, len(lines) - MAX_TRANSCRIPT_LINES),
                    "anchor": _anchor(entry, probe)})
    return out


def _anchor(entry: dict[str, Any], probe: str) -> str:
    digest = hashlib.sha256(f"{entry['endpoint']['id']}|{probe}".encode()).hexdigest()[:12]
    return f"t-{digest}"


def _ep_anchor(entry: dict[str, Any]) -> str:
    return "e-" + hashlib.sha256(str(entry["endpoint"]["id"]).encode()).hexdigest()[:12]


def _cert(entry: dict[str, Any]) -> list[tuple[str, Any]]:
    facts = entry.get("facts", {})
    return [(k, facts[f"tls.cert.{k}"]) for k in CERT_FACTS if facts.get(f"tls.cert.{k}") is not None]


def _chain(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Each served certificate, leaf first: subject, issuer, validity, key, signature (parsed here,
    for display only; a certificate that does not parse is listed as such)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    out = []
    pems = (entry.get("facts") or {}).get("tls.cert.chain_pem") or []
    for i, pem in enumerate(pems[:MAX_CHAIN] if isinstance(pems, list) else []):
        row: dict[str, Any] = {"position": "leaf" if i == 0 else f"#{i}"}
        try:
            cert = x509.load_pem_x509_certificate(str(pem).encode("ascii", "replace"))
            key = cert.public_key()
            if isinstance(key, rsa.RSAPublicKey):
                key_text = f"RSA {key.key_size}"
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key_text = f"EC {key.curve.name}"
            else:
                key_text = type(key).__name__.replace("PublicKey", "").lstrip("_")
            try:
                sig = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else "-"
            except Exception:  # noqa: BLE001 - unknown algorithms are shown, not fatal
                sig = "?"
            row.update(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                       not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d"), key=key_text, signature=sig,
                       sha256=cert.fingerprint(hashes.SHA256()).hex())
        except Exception as exc:  # noqa: BLE001 - a hostile certificate must not break the page
            row["error"] = f"does not parse: {type(exc).__name__}"
        out.append(row)
    return out


WEAK_FLAGS = ("null", "anon", "export", "rc4", "des", "3des", "md5", "cbc", "sha1", "no_fs")
TLS_VERSIONS = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
BAD_FLAGS = {"null", "anon", "export", "rc4", "des", "3des", "md5"}


def _tls_matrix(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Protocol x cipher-suite matrix from the TLS facts: rows are suites, columns the versions."""
    facts = entry.get("facts") or {}
    accepted = facts.get("tls.suites.accepted")
    protocols = facts.get("tls.protocols.accepted")
    if not isinstance(accepted, list) and not isinstance(protocols, list):
        return None
    versions = [v for v in TLS_VERSIONS if v in (protocols or [])] or sorted({str(s.get("protocol")) for s in accepted or [] if isinstance(s, dict)})
    rows: dict[str, dict[str, Any]] = {}
    for s in accepted or []:
        if not isinstance(s, dict):
            continue
        name = str(s.get("name") or s.get("code"))
        row = rows.setdefault(name, {"name": name, "code": s.get("code"), "kx": s.get("kx"), "enc": s.get("enc"), "bits": s.get("bits"),
                                     "flags": sorted(set(s.get("flags") or [])), "versions": set(), "groups": set()})
        row["versions"].add(str(s.get("protocol")))
        if s.get("curve"):
            row["groups"].add(str(s["curve"]))
        if s.get("dh_bits"):
            row["groups"].add(f"DH {s['dh_bits']}")
    ordered = sorted(rows.values(), key=lambda r: (-max((versions.index(v) for v in r["versions"] if v in versions), default=-1), bool(set(r["flags"]) & BAD_FLAGS), r["name"]))
    for r in ordered:
        r["weak"] = sorted(set(r["flags"]) & BAD_FLAGS)
        r["groups"] = sorted(r["groups"])
    preference = facts.get("tls.suites.preference") if isinstance(facts.get("tls.suites.preference"), dict) else {}
    per_version = {v: sum(1 for r in ordered if v in r["versions"]) for v in versions}
    return {"versions": versions, "rows": ordered, "preference": preference, "per_version": per_version,
            "rejected": facts.get("tls.protocols.rejected") or [], "groups": facts.get("tls.groups.accepted") or [],
            "weak_count": sum(1 for r in ordered if r["weak"])}


def _tentative_note(f: dict[str, Any]) -> str:
    if f.get("confidence") != "tentative":
        return ""
    if rank.is_version_based(f):
        return "version-based: distributions backport fixes"
    return "tentative: inferred from the server's answers, not proven"


def _finding_view(entry: dict[str, Any], f: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    rem = rule.get("remediation") or {}
    evidence_facts = f["evidence"]["facts"]
    return {
        "f": f,
        "endpoint": entry["endpoint"],
        "ep_anchor": _ep_anchor(entry),
        "anchor": f"f-{f['fingerprint']}",
        "description": rule.get("description", ""),
        "remediation_summary": rem.get("summary"),
        "remediation": [(label, rem[key]) for key, label in MTA_LABELS if rem.get(key)],
        "references": rule.get("references", []),
        "facts": sorted(evidence_facts.items()),
        "transcripts": [dict(b, anchor=_anchor(entry, b["probe"])) for b in _transcript_excerpt(entry, f["evidence"]["probes"], evidence_facts)],
        "cert_link": any(k.startswith("tls.cert.") for k in evidence_facts),
        "tentative_note": _tentative_note(f),
    }


def _item_view(entry: dict[str, Any], item: rank.Item, rules: dict[str, Any]) -> dict[str, Any]:
    views = [_finding_view(entry, f, rules.get(f["rule_id"], {})) for f in item.findings]
    lead = views[0]
    anchor = lead["anchor"] if not item.group else "g-" + hashlib.sha256(f"{entry['endpoint']['id']}|{item.rule_id}".encode()).hexdigest()[:12]
    return {"item": item, "group": item.group, "views": views, "lead": lead, "anchor": anchor, "severity": item.severity,
            "confidence": item.confidence, "message": item.message, "rule_id": item.rule_id,
            "title": lead["f"]["title"] if not item.group else f"Known vulnerabilities by version: {item.group['product']} {item.group['version']}",
            "remediation_summary": lead["remediation_summary"], "endpoint": entry["endpoint"], "ep_anchor": _ep_anchor(entry)}


def _families(entries: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    fam: dict[str, int] = {}
    for e in entries:
        for f in rank.open_findings(e):
            fam[str(f.get("family") or "other")] = fam.get(str(f.get("family") or "other"), 0) + 1
    return [(k, v, "var(--high)") for k, v in sorted(fam.items(), key=lambda kv: (-kv[1], kv[0]))]


def _grade_distribution(entries: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    dist = {g: 0 for g in GRADES}
    none = 0
    for e in entries:
        g = (e.get("score") or {}).get("grade")
        if g in dist and rank.status(e) == "complete":
            dist[g] += 1
        else:
            none += 1
    rows = [(g, n, f"var(--g{GRADE_CLASS[g]})") for g, n in dist.items()]
    if none:
        rows.append(("no grade", none, "var(--gnone)"))
    return rows


def _endpoint_view(entry: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    facts = entry.get("facts", {})
    opened = rank.open_findings(entry)
    items = [_item_view(entry, it, rules) for it in rank.group_items(opened)]
    suppressed = [_finding_view(entry, f, rules.get(f["rule_id"], {})) for f in rank.rank_findings(f for f in entry.get("findings", []) if f.get("suppressed"))]
    st = rank.status(entry)
    passed = [{"rule_id": rid, "title": (rules.get(rid) or {}).get("title", ""), "severity": (rules.get(rid) or {}).get("severity", "")}
              for rid in entry.get("passed") or []]
    reasons = entry.get("status_reasons") or []
    return {
        "entry": entry,
        "anchor": _ep_anchor(entry),
        "status": st,
        "grade": (entry.get("score") or {}).get("grade") if st == "complete" else None,
        "score": (entry.get("score") or {}).get("score") if st == "complete" else None,
        "counts": rank.counts(opened),
        "software": " ".join(str(x) for x in (facts.get("software.product"), facts.get("software.version")) if x),
        "banner": facts.get("smtp.greeting.text") or facts.get("smtp.banner") or facts.get("software.evidence"),
        "caps": rank.caps_line(entry),
        "ranked": items,
        "worst": rank.worst_confirmed(entry),
        "suppressed": suppressed,
        "passed": passed,
        "causes": rank.not_evaluated_causes(entry),
        "not_applicable": entry.get("not_applicable") or [],
        "why_incomplete": [str(r.get("message") or r.get("reason")) for r in reasons] or
                          [c.label for c in rank.not_evaluated_causes(entry)] or ([str(entry["error"])] if entry.get("error") else []),
        "tls": _tls_matrix(entry),
        "cert": _cert(entry),
        "chain": _chain(entry),
        "appendix": _appendix(entry),
        "domain": entry["endpoint"].get("domain"),
    }


def report_view(report: dict[str, Any]) -> dict[str, Any]:
    """Everything the report template shows, precomputed (the template only lays it out)."""
    rules = report.get("ruleset", {}).get("rules", {})
    endpoints = [_endpoint_view(e, rules) for e in report["endpoints"]]
    # "What first": the best-ranked items across the scan (one per rule: the fleet-wide view).
    pool = [(it["item"].key, i, it) for i, ev in enumerate(endpoints) for it in ev["ranked"]]
    pool.sort(key=lambda t: (t[0], t[1]))
    top: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for _, _, it in pool:
        if it["rule_id"] in seen:
            seen[it["rule_id"]]["also"] += 1
            continue
        entry = dict(it, also=0)
        seen[it["rule_id"]] = entry
        top.append(entry)
    counts = rank.counts(f for e in report["endpoints"] for f in rank.open_findings(e))
    states = {k: [ev for ev in endpoints if ev["status"] == k] for k in ("complete", "incomplete", "unreachable")}
    groups: dict[str, list[dict[str, Any]]] = {}
    for ev in endpoints:
        groups.setdefault(ev["domain"] or "", []).append(ev)
    domain_groups = sorted(groups.items(), key=lambda kv: (kv[0] == "", kv[0]))
    probes = [{"name": n, **meta} for n, meta in sorted(report.get("probes", {}).items())]
    targets_files = report.get("invocation", {}).get("options", {}).get("targets_files") or []
    fleet = len(endpoints) > 1
    return {
        "r": report,
        "summary": report["summary"],
        "endpoints": endpoints,
        "fleet": fleet,
        "domain_groups": domain_groups,
        "has_domains": any(d for d, _ in domain_groups),
        "counts": counts,
        "total_open": sum(counts.values()),
        "top": top[:TOP_ITEMS],
        "top_more": max(0, len(top) - TOP_ITEMS),
        "states": states,
        "grade_chart": _svg_bars(_grade_distribution(report["endpoints"]), label_width=70),
        "family_chart": _svg_bars(_families(report["endpoints"]), label_width=110),
        "severity_chart": _svg_bars([(s, counts[s], f"var(--{s})") for s in SEVERITIES], label_width=70),
        "probes": probes,
        "intrusive_run": [p["name"] for p in probes if p.get("intrusive")],
        "targets_files": targets_files,
        "policy": report.get("ruleset", {}).get("policy", {}),
        "baseline": report.get("baseline"),
        "skipped_rules": report.get("ruleset", {}).get("skipped_rules", []),
        "gate": report.get("gate"),
        "any_suppressed": any(ev["suppressed"] for ev in endpoints),
        "any_transcripts": any(ev["appendix"] for ev in endpoints),
    }


def render(report: dict[str, Any], history: dict[str, Any] | None = None) -> str:
    """The HTML page of a scan report; ``history`` is the view data of the history section
    (built by smtpaudit.history.render from the history database), drawn by _history.html.j2."""
    return environment().get_template("report.html.j2").render(**report_view(report), history=history)


def write_fleet_index(skeleton: dict[str, Any], out: Any, *, files: dict[str, str] | None = None, link_ext: str | None = None) -> None:
    """The overview page of a fleet too large for ``render`` (report/stream.py): one row per endpoint
    from the skeleton report (status, grade, counts), written as Jinja streams it. ``files`` maps
    endpoint ids to their per-endpoint file names (without extension) under ``endpoints/``."""
    files = files or {}

    def rows() -> Any:
        for e in skeleton["endpoints"]:
            counts = {s: 0 for s in SEVERITIES}
            for f in e["findings"]:
                if not f.get("suppressed"):
                    counts[f["severity"]] += 1
            reasons = e.get("status_reasons") or []
            why = e.get("error") or "; ".join(f"{r.get('probe')}: {r.get('message')}" for r in reasons[:2])
            yield {"url": e["endpoint"].get("url") or e["endpoint"]["id"], "status": e.get("status"),
                   "grade": (e.get("score") or {}).get("grade"), "counts": counts, "why": (why or "")[:300],
                   "file": files.get(e["endpoint"]["id"], "")}

    template = environment().get_template("fleet.html.j2")
    for chunk in template.generate(r=skeleton, summary=skeleton["summary"], rows=rows(), link_ext=link_ext if files else None):
        out.write(chunk)


def render_diff(diff: dict[str, Any]) -> str:
    """The HTML page of a diff between two scans."""
    changed = [e for e in diff["endpoints"] if e["new"] or e["fixed"] or e["unverified"]
               or e["grade"]["old"] != e["grade"]["new"] or e["change"] != "compared"]
    return environment().get_template("diff.html.j2").render(d=diff, changed=changed, unchanged_count=len(diff["endpoints"]) - len(changed))
