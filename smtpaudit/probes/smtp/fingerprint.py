"""Identifying the server software (and version, when disclosed) from banner, EHLO and HELP text.

Pure functions over strings the session probe collected; patterns live in fingerprints.toml.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("fingerprints.toml")
SOURCES = ("banner", "ehlo", "help")


@dataclass(frozen=True)
class Pattern:
    product: str
    source: str
    regex: re.Pattern[str]


@dataclass(frozen=True)
class Fingerprint:
    product: str | None
    version: str | None
    source: str | None
    evidence: str | None


@lru_cache(maxsize=1)
def load_patterns(path: Path = DATA) -> tuple[Pattern, ...]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    patterns = []
    for entry in data["fingerprint"]:
        if entry["source"] not in SOURCES:
            raise ValueError(f"{path}: fingerprint source must be one of {SOURCES}")
        patterns.append(Pattern(entry["product"], entry["source"], re.compile(entry["pattern"])))
    return tuple(patterns)


def identify(banner: str | None, ehlo: str | None, help_text: str | None) -> Fingerprint:
    """Best identification: a match with a version beats one without; banner beats EHLO beats HELP."""
    texts = {"banner": banner or "", "ehlo": ehlo or "", "help": help_text or ""}
    best: Fingerprint | None = None
    for source in SOURCES:
        text = texts[source][:8192]
        if not text:
            continue
        for pattern in load_patterns():
            if pattern.source != source:
                continue
            m = pattern.regex.search(text)
            if not m:
                continue
            version = m.groupdict().get("version")
            line = next((ln for ln in text.splitlines() if m.group(0).splitlines()[0] in ln), m.group(0))
            found = Fingerprint(pattern.product, version, source, line[:300])
            if best is None or (version and not best.version and best.product in (None, pattern.product)):
                best = found
            if version:
                return best
            break
    return best or Fingerprint(None, None, None, None)
