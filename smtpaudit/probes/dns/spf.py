"""SPF (RFC 7208): pick the record, parse its terms, and count the DNS lookups evaluation costs.

The parse is pure. The count walks ``include:`` and ``redirect=`` targets through the DNS the way
a receiver would, without a sender IP: every ``include``, ``a``, ``mx``, ``ptr``, ``exists`` and
``redirect`` counts one lookup (section 4.6.4, limit 10), and a lookup that returns NXDOMAIN or
no records is a void lookup (limit 2). Terms with macros are counted but not resolved.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from smtpaudit.probes.dns.resolver import DnsClient

LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
MAX_DEPTH = 10  # include/redirect nesting we follow before declaring a loop
MAX_RECORD = 4096  # longer records are truncated before parsing (hostile input)

_DOMAIN_SPEC = re.compile(r"^[\x21-\x7e]+$")
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$")


def is_spf(txt: str) -> bool:
    """RFC 7208 4.5: the record starts with ``v=spf1`` followed by a space or the end."""
    low = txt.lower()
    return low == "v=spf1" or low.startswith("v=spf1 ")


@dataclass
class Term:
    qualifier: str  # + - ~ ? (mechanisms), "" for modifiers
    name: str  # mechanism or modifier name, lower case
    value: str | None  # domain-spec / ip / modifier value
    text: str


@dataclass
class ParsedSpf:
    terms: list[Term] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def all_qualifier(self) -> str | None:
        for t in self.terms:
            if t.name == "all":
                return t.qualifier
        return None

    @property
    def redirect(self) -> str | None:
        for t in self.terms:
            if t.name == "redirect" and t.qualifier == "":
                return t.value
        return None


def parse(record: str) -> ParsedSpf:
    """Parse one SPF record into terms, collecting syntax errors instead of raising."""
    out = ParsedSpf()
    record = record[:MAX_RECORD]
    parts = record.split(" ")
    if not parts or parts[0].lower() != "v=spf1":
        out.errors.append("record does not start with v=spf1")
        return out
    seen_mods: set[str] = set()
    for raw in parts[1:]:
        if raw == "":
            continue  # RFC 7208 allows runs of spaces between terms
        m = _MODIFIER.match(raw)
        if m and ":" not in m.group(1):
            name = m.group(1).lower()
            if name in seen_mods and name in ("redirect", "exp"):
                out.errors.append(f"modifier {name}= appears more than once")
            seen_mods.add(name)
            if name in ("redirect", "exp") and not _DOMAIN_SPEC.match(m.group(2) or ""):
                out.errors.append(f"{raw}: missing or invalid domain")
            out.terms.append(Term("", name, m.group(2), raw))
            continue
        qual = "+"
        body = raw
        if body[0] in "+-~?":
            qual, body = body[0], body[1:]
        name, sep, value = body.partition(":")
        cidr = None
        if not sep and "/" in name:
            name, _, cidr = name.partition("/")
        name = name.lower()
        if name not in MECHANISMS:
            out.errors.append(f"unknown mechanism {raw!r}")
            continue
        val: str | None = value if sep else None
        if name == "all" and (sep or cidr):
            out.errors.append(f"{raw}: 'all' takes no argument")
        elif name in ("include", "exists") and not val:
            out.errors.append(f"{raw}: {name} needs a domain")
        elif name in ("ip4", "ip6"):
            err = _check_ip(name, val)
            if err:
                out.errors.append(f"{raw}: {err}")
        elif val is not None:
            spec, _, c2 = val.partition("/")
            if not spec or not _DOMAIN_SPEC.match(spec):
                out.errors.append(f"{raw}: invalid domain")
            if c2 and not re.match(r"^\d{1,3}(//\d{1,3})?$|^/\d{1,3}$", c2):
                out.errors.append(f"{raw}: invalid prefix length")
        out.terms.append(Term(qual, name, val, raw))
    if out.redirect is not None and out.all_qualifier is not None:
        # Not an error (RFC 7208 6.1: redirect is ignored when 'all' is present), but worth knowing.
        pass
    return out


def _check_ip(kind: str, val: str | None) -> str | None:
    if not val:
        return f"{kind} needs an address"
    addr, _, plen = val.partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"{addr!r} is not an IP address"
    if (kind == "ip4") != (ip.version == 4):
        return f"{addr!r} is not an IPv{kind[-1]} address"
    if plen and (not (plen.isascii() and plen.isdigit()) or len(plen) > 3 or int(plen) > (32 if ip.version == 4 else 128)):
        return f"invalid prefix length {plen!r}"
    return None


@dataclass
class Evaluation:
    """What walking the record costs. ``lookup_terms`` is the evidence: one row per counted term."""

    lookups: int = 0
    void_lookups: int = 0
    lookup_terms: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # problems in included records (by domain)
    all_qualifier: str | None = None  # effective 'all' after following redirect=


def _target(value: str | None, domain: str) -> str | None:
    if value is None:
        return domain
    spec = value.split("/", 1)[0]
    return None if "%" in spec else spec


async def evaluate(client: DnsClient, domain: str, parsed: ParsedSpf, *, _depth: int = 0,
                   _ev: Evaluation | None = None, _seen: set[str] | None = None) -> Evaluation:
    """Count lookups and void lookups of ``parsed`` (the record of ``domain``), recursively."""
    ev = _ev or Evaluation()
    seen = _seen if _seen is not None else {domain.lower()}
    for t in parsed.terms:
        if t.qualifier == "" and t.name != "redirect":
            continue
        if t.name not in LOOKUP_MECHANISMS and t.name != "redirect":
            continue
        ev.lookups += 1
        target = _target(t.value, domain)
        row: dict[str, Any] = {"domain": domain, "term": t.text, "void": False}
        ev.lookup_terms.append(row)
        if target is None or t.name == "ptr":
            continue  # macros need a sender; ptr needs the client IP
        if t.name in ("include", "redirect"):
            if t.name == "redirect" and parsed.all_qualifier is not None:
                continue  # ignored when 'all' is present
            if target.lower() in seen or _depth >= MAX_DEPTH:
                ev.errors.append(f"{domain}: {t.text} loops back to {target}")
                continue
            lk = await client.query(target, "TXT")
            records = [r for r in lk.txt_strings() if is_spf(r)]
            if lk.status in ("nxdomain", "nodata") or (lk.ok and not records):
                row["void"] = True
                ev.void_lookups += 1
                ev.errors.append(f"{domain}: {t.text} -> {target} has no SPF record")
                continue
            if lk.failed:
                ev.errors.append(f"{domain}: {t.text} -> {target}: {lk.status}")
                continue
            if len(records) > 1:
                ev.errors.append(f"{target}: {len(records)} SPF records (permerror)")
            sub = parse(records[0])
            ev.errors.extend(f"{target}: {e}" for e in sub.errors)
            await evaluate(client, target, sub, _depth=_depth + 1, _ev=ev, _seen=seen | {target.lower()})
            if t.name == "redirect" and _depth == 0:
                ev.all_qualifier = sub.all_qualifier
            continue
        if t.name == "a":
            a, aaaa = await client.query(target, "A"), await client.query(target, "AAAA")
            if not a.ok and not aaaa.ok and not (a.failed or aaaa.failed):
                row["void"] = True
                ev.void_lookups += 1
        elif t.name == "mx":
            mx = await client.query(target, "MX")
            if mx.status in ("nxdomain", "nodata"):
                row["void"] = True
                ev.void_lookups += 1
            elif mx.ok and mx.rrset is not None and len(mx.rrset) > 10:
                ev.errors.append(f"{domain}: {t.text} has {len(mx.rrset)} MX names (limit 10)")
        elif t.name == "exists":
            a = await client.query(target, "A")
            if a.status in ("nxdomain", "nodata"):
                row["void"] = True
                ev.void_lookups += 1
    if _depth == 0 and ev.all_qualifier is None:
        ev.all_qualifier = parsed.all_qualifier
    return ev
