"""Identifying the server software (version and distribution marker, when disclosed) from banner, EHLO and HELP replies.

Pure functions over reply texts the session probe collected. The patterns are data:
``rules/software/fingerprints.toml`` (its header states the matching contract: texts are the
replies with their codes, lines joined by newlines; file order; first match per source wins).
A distribution marker ("(Debian/GNU)", "Ubuntu", "/Debian-2") is looked for on the identifying line
only, after its reply code and host name, so a host called debian.example.org is not a marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from smtpaudit import tomlcache
from smtpaudit.paths import builtin_rules_dir

SOURCES = ("banner", "ehlo", "help")
_FLAGS = {"I": re.IGNORECASE, "M": re.MULTILINE}


@dataclass(frozen=True)
class Pattern:
    id: str
    product: str
    source: str
    regex: re.Pattern[str]
    confidence: str


@dataclass(frozen=True)
class Fingerprint:
    product: str | None
    version: str | None
    source: str | None
    evidence: str | None
    pattern_id: str | None = None
    distribution: str | None = None


@dataclass(frozen=True)
class Distribution:
    id: str
    name: str
    regex: re.Pattern[str]


def _flags(names: list[str]) -> int:
    flags = 0
    for f in names:
        flags |= _FLAGS[f]
    return flags


def data_path() -> Path:
    return builtin_rules_dir() / "software" / "fingerprints.toml"


@lru_cache(maxsize=4)
def load_patterns(path: Path | None = None) -> tuple[Pattern, ...]:
    path = path or data_path()
    data = tomlcache.load(path)
    patterns = []
    for entry in data["fingerprint"]:
        if entry["source"] not in SOURCES:
            raise ValueError(f"{path}: fingerprint {entry.get('id')}: source must be one of {SOURCES}")
        flags = _flags(entry.get("flags", []))
        patterns.append(Pattern(entry["id"], entry["product"], entry["source"], re.compile(entry["pattern"], flags), entry.get("confidence", "firm")))
    return tuple(patterns)


@lru_cache(maxsize=4)
def load_distributions(path: Path | None = None) -> tuple[Distribution, ...]:
    path = path or data_path()
    data = tomlcache.load(path)
    return tuple(Distribution(d["id"], d["name"], re.compile(d["pattern"], _flags(d.get("flags", []))))
                 for d in data.get("distribution", []))


def distribution_marker(line: str) -> str | None:
    """The distribution a reply line names after its code and host name, or None."""
    rest = line[4:] if line[:3].isdigit() else line
    parts = rest.split(None, 1)
    rest = parts[1] if len(parts) == 2 else ""
    for dist in load_distributions():
        if dist.regex.search(rest):
            return dist.name
    return None


def reply_text(code: int | None, lines: list[str]) -> str:
    """Rebuild the on-the-wire form (``220-first``/``220 last``) the patterns are written against."""
    if code is None:
        return ""
    return "\n".join(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines))


def identify(banner: str, ehlo: str, help_text: str) -> Fingerprint:
    """Best identification: a firm match with a version beats one without; banner, then EHLO, then HELP."""
    texts = {"banner": banner or "", "ehlo": ehlo or "", "help": help_text or ""}
    found: list[Fingerprint] = []
    for source in SOURCES:
        text = texts[source][:8192]
        if not text:
            continue
        for pattern in load_patterns():
            if pattern.source != source:
                continue
            m = pattern.regex.search(text)
            if m:
                version = m.groupdict().get("version") or None
                line_start = text.rfind("\n", 0, m.start()) + 1
                line_end = text.find("\n", m.start())
                evidence = text[line_start: line_end if line_end >= 0 else None][:300]
                found.append(Fingerprint(pattern.product, version, source, evidence, pattern.id, distribution_marker(evidence)))
                break
    with_version = [f for f in found if f.version]
    best = with_version[0] if with_version else (found[0] if found else Fingerprint(None, None, None, None))
    if best.product and not best.distribution:
        # The marker may sit in another reply of the same product (e.g. the banner, while HELP gave the version).
        marker = next((f.distribution for f in found if f.product == best.product and f.distribution), None)
        if marker:
            best = Fingerprint(best.product, best.version, best.source, best.evidence, best.pattern_id, marker)
    return best
