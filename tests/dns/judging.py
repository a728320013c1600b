"""Judge probe facts with the project's own rules, as a scan would: the bridge the conformance
vectors use from "what the probe observed" to "which findings a user sees"."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from smtpaudit.catalog import load_catalog
from smtpaudit.engine.evaluate import judge_all
from smtpaudit.engine.rules import Rule, load_rules

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


@lru_cache(maxsize=1)
def dns_rules() -> dict[str, Rule]:
    catalog = load_catalog()
    known = {name: spec.type for name, spec in catalog.facts.items()}
    return {rid: r for rid, r in load_rules([RULES_DIR], known).items() if r.family == "dns"}


def findings(facts: Mapping[str, Any], role: str = "domain", host: str = "example.org") -> set[str]:
    """Ids of the dns/ rules that fire on ``facts`` for an endpoint of ``role``."""
    catalog = load_catalog()
    fact_probe = {name: spec.probe for name, spec in catalog.facts.items()}
    full = {"endpoint.role": role, "endpoint.mode": "starttls", "endpoint.host": host, "endpoint.port": 25, **facts}
    return {o.rule_id for o in judge_all(dns_rules(), full, fact_probe=fact_probe, probe_errors={})
            if o.status == "finding"}
