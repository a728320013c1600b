"""DMARC (RFC 7489): find the ``_dmarc`` record and parse its tags into plain values.

Pure parsing; the probe does the lookup. Syntax problems are collected, never raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

POLICIES = ("none", "quarantine", "reject")
KNOWN_TAGS = ("v", "p", "sp", "pct", "rua", "ruf", "adkim", "aspf", "fo", "rf", "ri", "np", "psd", "t")
MAX_RECORD = 4096


def is_dmarc(txt: str) -> bool:
    return re.match(r"^v\s*=\s*DMARC1\s*(;|$)", txt, re.IGNORECASE) is not None


@dataclass
class Dmarc:
    p: str | None = None
    sp: str | None = None
    pct: int | None = None
    rua: list[str] = field(default_factory=list)
    ruf: list[str] = field(default_factory=list)
    adkim: str | None = None
    aspf: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _uris(value: str, tag: str, errors: list[str]) -> list[str]:
    out = []
    for item in value.split(","):
        uri = item.strip()
        if not uri:
            continue
        # A size limit may follow: mailto:a@b!10m (RFC 7489 6.2).
        if not re.match(r"^mailto:[^@\s]+@[^@\s!]+(![0-9]+[kmgt]?)?$", uri, re.IGNORECASE):
            errors.append(f"{tag}: {uri!r} is not a mailto: URI")
        out.append(uri)
    return out


def parse(record: str) -> Dmarc:
    """Parse one ``v=DMARC1`` record."""
    d = Dmarc()
    parts = [p.strip() for p in record[:MAX_RECORD].split(";")]
    parts = [p for p in parts if p]
    for i, part in enumerate(parts):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep:
            d.errors.append(f"{part!r} is not tag=value")
            continue
        if i == 0 and name != "v":
            d.errors.append("v=DMARC1 must be the first tag")
        if name in d.tags:
            d.errors.append(f"tag {name} appears more than once")
            continue
        d.tags[name] = value
        if name not in KNOWN_TAGS:
            d.errors.append(f"unknown tag {name!r}")
    if d.tags.get("v", "").upper() != "DMARC1":
        d.errors.append("v must be DMARC1")
    p = d.tags.get("p")
    if p is None:
        d.errors.append("required tag p is missing")
    elif p.lower() not in POLICIES:
        d.errors.append(f"p={p!r} is not none, quarantine or reject")
    else:
        d.p = p.lower()
    sp = d.tags.get("sp")
    if sp is not None:
        if sp.lower() in POLICIES:
            d.sp = sp.lower()
        else:
            d.errors.append(f"sp={sp!r} is not none, quarantine or reject")
    else:
        d.sp = d.p  # RFC 7489 6.3: sp defaults to p
    pct = d.tags.get("pct")
    if pct is None:
        d.pct = 100
    elif pct.isascii() and pct.isdigit() and len(pct) <= 3 and 0 <= int(pct) <= 100:
        d.pct = int(pct)
    else:
        d.errors.append(f"pct={pct!r} is not an integer 0-100")
    for tag in ("adkim", "aspf"):
        v = d.tags.get(tag)
        if v is not None and v.lower() not in ("r", "s"):
            d.errors.append(f"{tag}={v!r} is not r or s")
        setattr(d, tag, (v or "r").lower())
    if "rua" in d.tags:
        d.rua = _uris(d.tags["rua"], "rua", d.errors)
    if "ruf" in d.tags:
        d.ruf = _uris(d.tags["ruf"], "ruf", d.errors)
    return d
