"""Planning: which probes the selected rules need, in an order that respects their dependencies."""

from __future__ import annotations

from typing import Iterable, Mapping

from smtpaudit.engine.rules import Rule


class PlanError(ValueError):
    """The selected rules need a probe that cannot run (e.g. intrusive without --intrusive)."""


def probes_needed(
    rules: Iterable[Rule],
    fact_probe: Mapping[str, str],
    after: Mapping[str, tuple[str, ...]],
    *,
    always: Iterable[str] = (),
    derived: Mapping[str, tuple[str, ...]] | None = None,
) -> list[str]:
    """Probe names to run, dependencies first; ``endpoint`` (no network) is never a probe to run.

    A ``derived`` fact source (facts the engine computes from other endpoints' facts) is not run
    itself: the probes it is derived from are.
    """
    derived = derived or {}
    wanted: set[str] = set(always)
    for rule in rules:
        for fact in rule.facts:
            probe = fact_probe[fact]
            wanted.update(derived.get(probe, (probe,)))
    wanted.discard("endpoint")
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise PlanError(f"probe dependency cycle through {name}")
        visiting.add(name)
        for dep in after.get(name, ()):
            if dep != "endpoint":
                visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in sorted(wanted):
        visit(name)
    return order


def drop_intrusive(rules: Mapping[str, Rule], fact_probe: Mapping[str, str],
                   intrusive_probes: Iterable[str]) -> tuple[dict[str, Rule], list[dict[str, str]]]:
    """Without --intrusive, rules that need an intrusive probe are left out (and listed), not 'not evaluated'.

    A default scan must not look incomplete merely because the user did not opt in to bursts.
    """
    intrusive = set(intrusive_probes)
    kept: dict[str, Rule] = {}
    skipped: list[dict[str, str]] = []
    for rid, rule in rules.items():
        needs = sorted({fact_probe[f] for f in rule.facts if fact_probe.get(f) in intrusive})
        if needs:
            skipped.append({"rule_id": rid, "reason": f"needs intrusive probe(s) {', '.join(needs)}; run with --intrusive"})
        else:
            kept[rid] = rule
    return kept, skipped
