"""DMARC (RFC 7489, with the tags DMARCbis adds): find the record that applies to a domain and
parse its tags into plain values.

Pure parsing plus the organizational-domain rule; the probe does the lookups. Policy discovery
(RFC 7489 6.6.3): the record at ``_dmarc.<domain>``; when there is none there, the one at
``_dmarc.<organizational domain>``, found with the Public Suffix List (the ``publicsuffixlist``
package, which ships a snapshot and needs no network; refreshed by upgrading the package, whose
releases follow the list). Problems are collected, never raised: unknown tags are ignored as
section 6.3 says, every known tag's value is checked against section 6.4 (and DMARCbis for
``np``, ``psd`` and ``t``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from smtpaudit.probes.dns.names import name_problem

POLICIES = ("none", "quarantine", "reject")
KNOWN_TAGS = ("v", "p", "sp", "np", "psd", "t", "pct", "rua", "ruf", "adkim", "aspf", "fo", "rf", "ri")
MAX_RECORD = 4096
MAX_RI = 2**32 - 1  # "ri" is a 32-bit unsigned integer (RFC 7489 6.3)
REPORT_FORMATS = ("afrf",)  # the IANA "Feedback Report Formats" registry DMARC uses (RFC 7489 6.3)

# RFC 7489 6.4: dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31 -- "DMARC1" in
# upper case exactly; the record must start with it (6.6.3 step 3 discards the rest).
_VERSION = re.compile(r"^[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)")
_KEYWORD = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")  # RFC 5321 Ldh-str
_MAILTO = re.compile(r"^mailto:(?P<local>[^@\s]+)@(?P<domain>[^@\s!]+)(?:!(?P<size>[0-9]+[kmgt]?))?$", re.IGNORECASE)


def is_dmarc(txt: str) -> bool:
    """A DMARC record starts with ``v=DMARC1`` (tag name in any case, value exactly ``DMARC1``)."""
    return _VERSION.match(txt) is not None


@lru_cache(maxsize=1)
def _psl():  # type: ignore[no-untyped-def]
    from publicsuffixlist import PublicSuffixList  # loaded on first use: it parses ~10k rules

    return PublicSuffixList()


def organizational_domain(domain: str) -> str | None:
    """RFC 7489 3.2: the public suffix plus one label; None when ``domain`` is itself a suffix.
    The list's implicit ``*`` rule makes a top-level label it does not list (``.test``) a suffix."""
    name = domain.rstrip(".").lower()
    if not name or name_problem(name, host=False):
        return None
    return _psl().privatesuffix(name)


@dataclass
class Dmarc:
    p: str | None = None
    sp: str | None = None
    np: str | None = None
    pct: int | None = None
    rua: list[str] = field(default_factory=list)
    ruf: list[str] = field(default_factory=list)
    adkim: str | None = None
    aspf: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    ignored_tags: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def policy_for(self, *, subdomain: bool) -> str | None:
        """The policy receivers apply (RFC 7489 6.6.3 step 6 / 6.3 "sp"): p, or sp for a
        subdomain that inherits the record; p=none when p is unusable but rua holds a valid URI."""
        if subdomain and self.sp is not None:
            return self.sp
        if self.p is not None:
            return self.p
        return "none" if self.rua and not any(e.startswith("rua") for e in self.errors) else None


def _uris(value: str, tag: str, errors: list[str]) -> list[str]:
    out = []
    for item in value.split(","):
        uri = item.strip()
        if not uri:
            errors.append(f"{tag}: empty URI in the list")
            continue
        # A size limit may follow: mailto:a@b!10m (RFC 7489 6.2).
        m = _MAILTO.match(uri)
        if not m:
            errors.append(f"{tag}: {uri!r} is not a mailto: URI")
        elif (problem := name_problem(m.group("domain"))):
            errors.append(f"{tag}: {uri!r}: report domain is not a valid host name ({problem})")
        out.append(uri)
    return out


def _choice(d: Dmarc, tag: str, allowed: tuple[str, ...]) -> str | None:
    value = d.tags.get(tag)
    if value is None:
        return None
    if value.lower() in allowed:
        return value.lower()
    d.errors.append(f"{tag}={value!r} is not one of {', '.join(allowed)}")
    return None


def parse(record: str) -> Dmarc:
    """Parse one ``v=DMARC1`` record."""
    d = Dmarc()
    parts = [p.strip(" \t") for p in record[:MAX_RECORD].split(";")]
    parts = [p for p in parts if p]
    for i, part in enumerate(parts):
        name, sep, value = part.partition("=")
        name, value = name.strip(" \t").lower(), value.strip(" \t")
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
            d.ignored_tags.append(name)  # RFC 7489 6.3: unknown tags MUST be ignored
    if d.tags.get("v") != "DMARC1":
        d.errors.append("v must be DMARC1")
    if "p" not in d.tags:
        d.errors.append("required tag p is missing")
    d.p = _choice(d, "p", POLICIES)
    d.sp = _choice(d, "sp", POLICIES)
    d.np = _choice(d, "np", POLICIES)  # DMARCbis: policy for non-existent subdomains
    _choice(d, "psd", ("y", "n", "u"))  # DMARCbis: public suffix domain flag
    _choice(d, "t", ("y", "n"))  # DMARCbis: testing mode (replaces pct)
    pct = d.tags.get("pct")
    if pct is None:
        d.pct = 100
    elif re.fullmatch(r"[0-9]{1,3}", pct) and int(pct) <= 100:
        d.pct = int(pct)
    else:
        d.errors.append(f"pct={pct!r} is not an integer 0-100")
    for tag in ("adkim", "aspf"):
        setattr(d, tag, _choice(d, tag, ("r", "s")) or "r")
    fo = d.tags.get("fo")
    if fo is not None and not re.fullmatch(r"[01ds](?:[ \t]*:[ \t]*[01ds])*", fo, re.IGNORECASE):
        d.errors.append(f"fo={fo!r} is not a ':'-separated list of 0, 1, d and s")
    rf = d.tags.get("rf")
    if rf is not None:
        formats = [f.strip(" \t") for f in rf.split(":")]
        bad = [f for f in formats if not _KEYWORD.match(f) or f.lower() not in REPORT_FORMATS]
        if bad:
            d.errors.append(f"rf={rf!r}: {', '.join(repr(b) for b in bad)} is not a report format (afrf)")
    ri = d.tags.get("ri")
    if ri is not None and not (re.fullmatch(r"[0-9]{1,10}", ri) and int(ri) <= MAX_RI):
        d.errors.append(f"ri={ri!r} is not a number of seconds (0-{MAX_RI})")
    if "rua" in d.tags:
        d.rua = _uris(d.tags["rua"], "rua", d.errors)
    if "ruf" in d.tags:
        d.ruf = _uris(d.tags["ruf"], "ruf", d.errors)
    return d

