"""Cross-endpoint judging: domain facts that only the MX endpoints together can tell.

Pure: the facts of a domain's MX entries in, derived facts for the domain entry out (declared in
``smtpaudit/facts/domain.mx.toml``, a "probe" that sends nothing). Rules then judge them like any
other fact, e.g. MTA-STS ``enforce`` while an MX certificate would fail the senders' check.

Fail closed: a verdict list is only produced when it is known. Any MX whose certificate was seen
and does not validate makes ``domain.mx.cert_invalid`` non-empty; an empty list means every MX
certificate was seen and validates; when some MX was not examined and none failed, the fact is
absent and its rules are not evaluated.
"""

from __future__ import annotations

from typing import Any, Mapping

from smtpaudit.engine.judge import judge_entry
from smtpaudit.engine.rules import Rule


def _cert_problem(facts: Mapping[str, Any]) -> str | None | bool:
    """Why an MX certificate fails PKIX validation for the MX name (RFC 8461 section 4.2), None
    when it validates, False when it was not observed."""
    trusted, matches = facts.get("tls.cert.trusted"), facts.get("tls.cert.matches_host")
    if not isinstance(trusted, bool) or not isinstance(matches, bool):
        return False
    problems = []
    if not trusted:
        problems.append(f"chain not trusted ({facts.get('tls.cert.verify_error') or 'unknown error'})")
    if not matches:
        problems.append(f"names {facts.get('tls.cert.san') or []} do not cover the MX name")
    return "; ".join(problems) or None


def derive_domain_facts(mx_entries: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Facts for a domain entry from the facts of its MX endpoint entries."""
    checked: list[str] = []
    invalid: list[str] = []
    unknown: list[str] = []
    for facts in mx_entries:
        host = str(facts.get("endpoint.host"))
        problem = _cert_problem(facts)
        if problem is False:
            unknown.append(host)
            continue
        checked.append(host)
        if problem:
            invalid.append(f"{host}: {problem}")
    out: dict[str, Any] = {"domain.mx.cert_checked": checked, "domain.mx.cert_unknown": unknown}
    if invalid or (checked and not unknown):
        out["domain.mx.cert_invalid"] = invalid
    return out


def judge_domains(entries: list[dict[str, Any]], rules: Mapping[str, Rule], fact_probe: Mapping[str, str]) -> None:
    """Add each domain entry's cross-endpoint facts (from its MX entries) and judge it again."""
    for entry in entries:
        domain = entry["endpoint"].get("domain")
        if entry["endpoint"].get("role") != "domain" or not domain:
            continue
        mx = [e["facts"] for e in entries if e is not entry and e["endpoint"].get("domain") == domain]
        entry["facts"].update(derive_domain_facts(mx))
        judge_entry(entry, rules, fact_probe)
