"""Expanding the known-vulnerable-versions table (``rules/software/*.toml``) into tentative rules.

A banner version inside an affected range is evidence, not proof: distributions backport fixes
without changing the version string. So every generated rule has confidence ``tentative`` and a
severity capped at high (8.9); flaws that are not reachable through the SMTP listener (web UI,
outbound client, local) are capped at low.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from smtpaudit.engine.rules import Rule, RuleError
from smtpaudit.engine.versions import VersionError, parse_range

REMOTE_SURFACES = ("smtp", "smtp-tls", "smtp-auth")
_REQUIRED = ("id", "product", "title", "summary", "affected", "fixed", "attack_surface", "sources")
# When no scorer published a CVSS score (e.g. the 2023 smuggling CVEs), the table's own contract says medium.
UNSCORED = 5.0


def _score(cvss: float, surface: str) -> tuple[float, str]:
    if surface in REMOTE_SURFACES:
        score = min(float(cvss), 8.9)
    else:
        score = min(float(cvss), 3.9)
    score = max(score, 0.1)
    if score > 9.0:
        return score, "critical"
    if score >= 7.0:
        return score, "high"
    if score >= 4.0:
        return round(min(score, 6.9), 1), "medium"
    return round(min(score, 3.9), 1), "low"


def expand_table(data: Mapping[str, Any], path: Path, known_facts: Mapping[str, str]) -> list[Rule]:
    rules: list[Rule] = []
    for i, entry in enumerate(data.get("vulnerability", [])):
        where = f"vulnerability[{i}]"
        if not isinstance(entry, dict):
            raise RuleError(path, where, "expected a table")
        for key in _REQUIRED:
            if key not in entry:
                raise RuleError(path, f"{where}.{key}", "missing required key")
        if not isinstance(entry["affected"], list) or not entry["affected"]:
            raise RuleError(path, f"{where}.affected", "expected a non-empty array of version ranges")
        for r in entry["affected"]:
            try:
                parse_range(r)
            except VersionError as exc:
                raise RuleError(path, f"{where}.affected", str(exc)) from None
        cvss = entry.get("cvss", UNSCORED)
        if not isinstance(cvss, (int, float)) or isinstance(cvss, bool) or not 0 <= cvss <= 10:
            raise RuleError(path, f"{where}.cvss", "expected a number 0-10 (omit it when no score was published)")
        vid = str(entry["id"])
        aliases = [str(a) for a in entry.get("aliases", [])]
        score, severity = _score(cvss, str(entry["attack_surface"]))
        fixed = ", ".join(entry["fixed"]) if entry["fixed"] else "no fixed release"
        product = str(entry["product"])
        refs = [{"title": url.split("//", 1)[-1][:80], "url": url} for url in entry["sources"] if isinstance(url, str)]
        if not refs:
            raise RuleError(path, f"{where}.sources", "needs at least one URL")
        ids = ", ".join([vid, *aliases])
        description = (
            f"{entry['summary'].strip()}\n\nThe version this server discloses falls in the range affected by {ids} "
            f"(affected: {', '.join(entry['affected'])}; fixed in {fixed}). This is a version-based, unverified "
            "match: distributions backport security fixes without changing the version string, so confirm "
            "with the package changelog before acting."
        )
        if entry.get("preconditions"):
            description += f" Exploitation requires: {entry['preconditions']}."
        if entry["attack_surface"] not in REMOTE_SURFACES:
            description += f" Not reachable through the SMTP listener itself ({entry['attack_surface']}); severity is capped."
        rules.append(
            Rule(
                id=vid.lower().replace("_", "-"),
                title=f"Version indicates {vid}: {entry['title']}",
                severity=severity,
                score=score,
                confidence="tentative",
                description=description,
                when={
                    "all": [
                        {"fact": "software.product", "equals": product},
                        {"fact": "software.version", "version_in": list(entry["affected"])},
                    ]
                },
                path=str(path),
                family="software",
                tags=["software", "cve", "version-based", product],
                message=f"{{software.product}} {{software.version}} is in the range affected by {vid} (version-based, unverified)",
                remediation={
                    "summary": f"Upgrade {product} to {fixed} or later, or confirm that your distribution's package carries the fix for {vid}.",
                    "generic": "Hiding the version from the banner removes the signal, not the flaw.",
                },
                references=refs,
                examples=[],
                facts=frozenset({"software.product", "software.version"}),
                origin="generated",
            )
        )
    return rules
