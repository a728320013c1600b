"""The fact catalog: every fact name a probe may emit, its type, and which probe provides it.

The catalog is data (``smtpaudit/facts/<probe>.toml``), read by the rule loader (to reject rules
over unknown facts), by the planner (fact -> probe), and by tests (a probe may only emit facts
declared for it, with the declared type). One file per probe::

    probe = "smtp.session"
    intrusive = false
    description = "..."
    [facts."smtp.greeting.code"]
    type = "int"            # bool | int | float | str | list[str] | list[int] | object | list[object] | any
    description = "..."

Every fact may also be ``null``: the probe ran but the value does not apply or could not be
determined (e.g. ``smtp.starttls.works`` when STARTTLS is not offered). A fact that is *absent*
means the probe did not run or failed before observing it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from smtpaudit import tomlcache

CATALOG_DIR = Path(__file__).parent / "facts"

FACT_TYPES = ("bool", "int", "float", "str", "list[str]", "list[int]", "object", "list[object]", "any")


class CatalogError(ValueError):
    """A catalog file is malformed (a packaging bug, not a user error)."""


@dataclass(frozen=True)
class FactSpec:
    name: str
    type: str
    probe: str
    description: str


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    intrusive: bool
    description: str
    facts: tuple[str, ...]
    # A derived "probe" sends nothing: its facts are computed by the engine from the facts of
    # these probes on other endpoints (engine/crossendpoint.py). Planning runs these instead.
    derived_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    facts: dict[str, FactSpec]
    probes: dict[str, ProbeSpec]

    def probe_for(self, fact: str) -> str:
        return self.facts[fact].probe


def _load_file(path: Path) -> tuple[ProbeSpec, list[FactSpec]]:
    try:
        data = tomlcache.load(path)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    probe = data.get("probe")
    if not isinstance(probe, str):
        raise CatalogError(f"{path}: 'probe' must be a string")
    facts: list[FactSpec] = []
    for name, spec in (data.get("facts") or {}).items():
        ftype = spec.get("type")
        if ftype not in FACT_TYPES:
            raise CatalogError(f"{path}: facts.{name}.type must be one of {FACT_TYPES}")
        facts.append(FactSpec(name=name, type=ftype, probe=probe, description=str(spec.get("description", ""))))
    pspec = ProbeSpec(
        name=probe,
        intrusive=bool(data.get("intrusive", False)),
        description=str(data.get("description", "")),
        facts=tuple(f.name for f in facts),
        derived_from=tuple(str(d) for d in data.get("derived_from", ())),
    )
    return pspec, facts


@lru_cache(maxsize=None)
def load_catalog(directory: Path = CATALOG_DIR) -> Catalog:
    """Load every ``*.toml`` in the catalog directory; a fact declared twice is an error."""
    facts: dict[str, FactSpec] = {}
    probes: dict[str, ProbeSpec] = {}
    for path in sorted(directory.glob("*.toml")):
        pspec, fspecs = _load_file(path)
        if pspec.name in probes:
            raise CatalogError(f"{path}: probe {pspec.name!r} declared twice")
        probes[pspec.name] = pspec
        for f in fspecs:
            if f.name in facts:
                raise CatalogError(f"{path}: fact {f.name!r} already declared by probe {facts[f.name].probe!r}")
            facts[f.name] = f
    return Catalog(facts=facts, probes=probes)


def value_matches_type(value: Any, ftype: str) -> bool:
    """True when ``value`` (or null) has the catalog type ``ftype``."""
    if value is None or ftype == "any":
        return True
    if ftype == "bool":
        return isinstance(value, bool)
    if ftype == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ftype == "str":
        return isinstance(value, str)
    if ftype == "object":
        return isinstance(value, dict)
    if ftype.startswith("list["):
        inner = ftype[5:-1]
        return isinstance(value, list) and all(value_matches_type(v, inner) and v is not None for v in value)
    return False
