"""Every shipped rule: valid, its examples behave, its facts are observed by a registered probe."""

from pathlib import Path

import pytest

from smtpaudit.catalog import load_catalog
from smtpaudit.engine.evaluate import check_examples
from smtpaudit.engine.rules import load_rules
from smtpaudit.probes.registry import PROBES

CATALOG = load_catalog()
RULES = load_rules([Path("rules")], {n: s.type for n, s in CATALOG.facts.items()})
AUTHORED = [r for r in RULES.values() if r.origin != "generated"]


@pytest.mark.parametrize("rule", AUTHORED, ids=lambda r: r.id)
def test_examples_behave(rule):
    assert check_examples(rule) == []
    expects = {ex["expect"] for ex in rule.examples}
    assert {"finding", "pass"} <= expects


@pytest.mark.parametrize("rule", AUTHORED, ids=lambda r: r.id)
def test_rule_is_documented(rule):
    assert len(rule.description) > 80, "description must say why it matters"
    assert rule.references and rule.remediation.get("summary")
    assert {"postfix", "exim", "opensmtpd"} <= set(rule.remediation) or "generic" in rule.remediation


def test_every_fact_used_by_a_rule_has_a_registered_probe():
    for rule in RULES.values():
        for fact in rule.facts:
            probe = CATALOG.facts[fact].probe
            sources = CATALOG.probes[probe].derived_from or (probe,)  # derived facts: computed from these probes
            assert all(p == "endpoint" or p in PROBES for p in sources), f"{rule.id} needs {fact} from unregistered probe {probe}"


def test_every_catalogued_probe_is_registered_and_vice_versa():
    derived = {name for name, spec in CATALOG.probes.items() if spec.derived_from}
    assert set(CATALOG.probes) - {"endpoint"} - derived == set(PROBES)
    for name, cls in PROBES.items():
        assert name in CATALOG.probes, f"probe {name} has no smtpaudit/facts/{name}.toml"
        assert cls.intrusive == CATALOG.probes[name].intrusive, name
