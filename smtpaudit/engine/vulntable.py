"""Expanding the known-vulnerable-versions table (``rules/software/*.toml``) into tentative rules.

A banner version inside an affected range is evidence, not proof: distributions backport fixes
without changing the version string. So every generated rule has confidence ``tentative`` and a
severity capped at high (8.9); flaws that are not reachable through the SMTP listener (web UI,
outbound client, local) are capped at low. The table's header tables declare, as data:
``[detection_quality]`` (which products distributions backport, hence which banners are unreliable),
``[precondition.<name>]`` (what EHLO must show for a flaw to be reachable; an entry lists names in
``requires``) and ``[active_test.<name>]`` (an active probe whose result, when it ran, replaces the
version guess; an entry names it in ``active_test``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from smtpaudit.engine.conditions import ConditionError, validate
from smtpaudit.engine.quality import METHODS
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


def _condition(node: Any, path: Path, where: str, known_facts: Mapping[str, str]) -> set[str]:
    try:
        return validate(node, where, known_facts, {})
    except ConditionError as exc:
        raise RuleError(path, exc.path, exc.message) from None


def _header(data: Mapping[str, Any], path: Path, known_facts: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Validate the table's [detection_quality], [precondition.*] and [active_test.*] tables."""
    dq = data.get("detection_quality", {})
    if not isinstance(dq, dict):
        raise RuleError(path, "detection_quality", "expected a table")
    backported = dq.get("backported_products", [])
    if not isinstance(backported, list) or not all(isinstance(p, str) for p in backported):
        raise RuleError(path, "detection_quality.backported_products", "expected an array of product keys")
    for key in ("backported_method", "banner_method", "distribution_method"):
        if dq.get(key, "remote_banner") not in METHODS:
            raise RuleError(path, f"detection_quality.{key}", f"expected one of {', '.join(METHODS)}")
    preconditions = data.get("precondition", {})
    for name, pre in preconditions.items():
        if not isinstance(pre, dict) or not isinstance(pre.get("description"), str) or "when" not in pre:
            raise RuleError(path, f"precondition.{name}", "expected a table with description and when")
        _condition(pre["when"], path, f"precondition.{name}.when", known_facts)
    active_tests = data.get("active_test", {})
    for name, act in active_tests.items():
        where = f"active_test.{name}"
        if not isinstance(act, dict) or not all(k in act for k in ("probe", "ran", "confirms", "method", "message")):
            raise RuleError(path, where, "expected a table with probe, ran, confirms, method and message")
        if act["method"] not in METHODS:
            raise RuleError(path, f"{where}.method", f"expected one of {', '.join(METHODS)}")
        for key in ("ran", "confirms"):
            for fact in _condition(act[key], path, f"{where}.{key}", known_facts):
                if not fact.startswith(act["probe"] + "."):
                    raise RuleError(path, f"{where}.{key}", f"fact {fact!r} is not one of probe {act['probe']}'s")
    return dq, preconditions, active_tests


def expand_table(data: Mapping[str, Any], path: Path, known_facts: Mapping[str, str]) -> list[Rule]:
    rules: list[Rule] = []
    dq, preconditions, active_tests = _header(data, path, known_facts)
    backported = set(dq.get("backported_products", []))
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
        requires = []
        if not isinstance(entry.get("requires", []), list):
            raise RuleError(path, f"{where}.requires", "expected an array of precondition names")
        for name in entry.get("requires", []):
            if name not in preconditions:
                raise RuleError(path, f"{where}.requires", f"unknown precondition {name!r} (declare it in [precondition.{name}])")
            requires.append({"name": name, **preconditions[name]})
        if requires:
            description += " The rule applies only when the server shows: " + "; ".join(r["description"] for r in requires) + "."
        active = None
        if entry.get("active_test"):
            test = entry["active_test"]
            if test not in active_tests:
                raise RuleError(path, f"{where}.active_test", f"unknown active test {test!r} (declare it in [active_test.{test}])")
            act = active_tests[test]
            active = {
                "test": test,
                "probe": act["probe"],
                "ran": act["ran"],
                "when": {"all": [{"fact": "software.product", "equals": product}, act["confirms"]]},
                "quality": METHODS[act["method"]],
                "method": act["method"],
                "message": act["message"].replace("{id}", vid),
            }
            description += (f" When the active test {test} ({act['probe']}) ran, its result replaces the version "
                            "match: confirmed, or passed.")
        # How far the banner can be trusted: software that distributions patch in place is a guess.
        note = None
        if product in backported:
            method = dq.get("backported_method", "remote_banner_unreliable")
            note = f"distributions patch {product} without changing the version it reports"
        else:
            method = dq.get("banner_method", "remote_banner")
        overrides = []
        if method != dq.get("distribution_method", "remote_banner_unreliable"):
            dmethod = dq.get("distribution_method", "remote_banner_unreliable")
            overrides.append({
                "when": {"fact": "software.distribution", "exists": True},
                "quality": METHODS[dmethod], "method": dmethod,
                "reason": "the banner names a distribution ({software.distribution}), whose packages backport fixes",
            })
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
                facts=frozenset({"software.product", "software.version"}
                                | {f for r in requires for f in _condition(r["when"], path, where, known_facts)}),
                origin="generated",
                detection_quality=METHODS[method],
                detection_method=method,
                detection_note=note,
                quality_overrides=overrides,
                requires=requires,
                active=active,
            )
        )
    return rules
