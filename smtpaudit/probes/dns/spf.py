"""SPF (RFC 7208): pick the record, parse its terms, and count the DNS lookups evaluation costs.

The parse is pure. The count walks ``include:`` and ``redirect=`` targets through the DNS the way
a receiver would, without a sender IP: every ``include``, ``a``, ``mx``, ``ptr``, ``exists`` and
``redirect`` counts one lookup (section 4.6.4, limit 10), and a lookup that returns NXDOMAIN or
no records is a void lookup (limit 2). Terms with macros are counted but not resolved.

The parse follows the ABNF of section 12 term by term (domain-spec with its top label, dual-cidr
lengths without leading zeros, macro syntax); a name that could not go into a DNS question is a
syntax error of the record and is never looked up. What makes receivers' evaluation a permerror
beyond the record's own syntax (targets without SPF, loops, more than 10 MX names) goes through
``Evaluation.permerror``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from smtpaudit.probes.dns.names import name_problem
from smtpaudit.probes.dns.resolver import DnsClient

LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
MAX_DEPTH = 10  # include/redirect nesting we follow before declaring a loop
MAX_RECORD = 4096  # longer records are truncated before parsing (hostile input)
MAX_MX_NAMES = 10  # RFC 7208 4.6.4: an mx term with more MX names is a permerror

# RFC 7208 section 12 (ABNF), piece by piece.
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$")
_MACRO = re.compile(r"%(?:\{([A-Za-z])([0-9]*)([rR]?)([-.+,/_=]*)\}|[%_-])")
_MACRO_LETTERS = set("slodipvh")  # c, r, t: only in explanation text (section 7.1)
_TOPLABEL = re.compile(r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$")
_CIDR_TAIL = re.compile(r"^(?P<spec>.*?)(?P<cidr>(?:/[0-9]+)?(?://[0-9]+)?)$", re.DOTALL)
_IP4_CIDR = re.compile(r"^(?:0|[1-9][0-9]?)$")
_IP6_CIDR = re.compile(r"^(?:0|[1-9][0-9]{0,2})$")


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
    target: str | None = None  # the domain-spec without cidr (a/mx), None when absent
    valid: bool = True  # the term passed syntax checks (only valid targets are looked up)


@dataclass
class ParsedSpf:
    terms: list[Term] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def all_qualifier(self) -> str | None:
        for t in self.terms:
            if t.name == "all" and t.qualifier:
                return t.qualifier
        return None

    @property
    def redirect(self) -> str | None:
        for t in self.terms:
            if t.name == "redirect" and t.qualifier == "":
                return t.value
        return None


def macro_string_problem(text: str, *, letters: set[str] = _MACRO_LETTERS) -> str | None:
    """RFC 7208 7.1 ``macro-string``: visible ASCII, ``%`` only as ``%{..}``, ``%%``, ``%_``, ``%-``."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            m = _MACRO.match(text, i)
            if not m:
                return f"'%' at position {i} does not start a macro (%{{x}}, %%, %_ or %-)"
            letter = m.group(1)
            if letter is not None:
                if letter.lower() not in letters:
                    return f"macro letter {letter!r} is not allowed here"
                if m.group(2) and int(m.group(2)) == 0:
                    return f"macro {m.group(0)!r}: a digit transformer must be at least 1"
            i = m.end()
            continue
        if not "\x21" <= c <= "\x7e":
            return f"character {c!r} is not allowed (visible ASCII only)"
        i += 1
    return None


def domain_spec_problem(spec: str) -> str | None:
    """RFC 7208 ``domain-spec = macro-string domain-end``; a literal spec must also be a DNS name."""
    if not spec:
        return "empty domain"
    err = macro_string_problem(spec)
    if err:
        return err
    last = None
    for m in _MACRO.finditer(spec):
        last = m
    if last is not None and last.end() == len(spec):
        return None  # domain-end = macro-expand
    body = spec[:-1] if spec.endswith(".") else spec
    head, dot, top = body.rpartition(".")
    if not dot:
        return f"{spec!r} is not a domain (no '.' before its top label)"
    if not _TOPLABEL.match(top):
        return f"{spec!r}: top label {top!r} is not a valid top label"
    if "%" not in spec:
        problem = name_problem(spec, host=False)
        if problem:
            return f"{spec!r} is not a valid DNS name: {problem}"
    return None


def _cidr_problem(cidr: str, *, ip4: bool, ip6: bool) -> str | None:
    """``dual-cidr-length`` (or a single ip4/ip6 one): no leading zeros, within range."""
    if not cidr:
        return None
    m = re.fullmatch(r"(?:/([0-9]+))?(?://([0-9]+))?", cidr)
    if not m or (m.group(1) is not None and not ip4) or (m.group(2) is not None and not ip6):
        return f"invalid prefix length {cidr!r}"
    v4, v6 = m.group(1), m.group(2)
    if v4 is not None and (not _IP4_CIDR.match(v4) or int(v4) > 32):
        return f"invalid IPv4 prefix length /{v4}"
    if v6 is not None and (not _IP6_CIDR.match(v6) or int(v6) > 128):
        return f"invalid IPv6 prefix length //{v6}"
    return None


def _check_ip(kind: str, val: str | None) -> str | None:
    if not val:
        return f"{kind} needs an address"
    addr, slash, plen = val.partition("/")
    if "%" in addr or not addr:
        return f"{addr!r} is not an IP address"
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"{addr!r} is not an IP address"
    if (kind == "ip4") != (ip.version == 4):
        return f"{addr!r} is not an IPv{kind[-1]} address"
    if slash:
        pattern, limit = (_IP4_CIDR, 32) if ip.version == 4 else (_IP6_CIDR, 128)
        if not pattern.match(plen) or int(plen) > limit:
            return f"invalid prefix length /{plen}"
    return None


def _mechanism(qual: str, body: str, raw: str) -> tuple[Term, str | None]:
    """One directive (qualifier already removed): the term and its syntax problem, if any."""
    name, sep, value = body.partition(":")
    cidr = ""
    if not sep:
        m = re.match(r"^([A-Za-z0-9]+)(/.*)?$", body)
        if m:
            name, cidr = m.group(1), m.group(2) or ""
    name = name.lower()
    term = Term(qual, name, value if sep else None, raw)
    if name not in MECHANISMS:
        return term, f"unknown mechanism {raw!r}"
    if name == "all":
        return term, f"{raw}: 'all' takes no argument" if (sep or cidr) else None
    if name in ("ip4", "ip6"):
        return term, (f"{raw}: {err}" if (err := _check_ip(name, value if sep else None)) else None)
    if name in ("a", "mx"):
        spec = None
        if sep:
            m = _CIDR_TAIL.match(value)
            assert m is not None  # the pattern matches every string
            spec, cidr = m.group("spec"), m.group("cidr")
        err = _cidr_problem(cidr, ip4=True, ip6=True)
        if err is None and spec is not None:
            err = domain_spec_problem(spec)
        term.target = spec
        return term, f"{raw}: {err}" if err else None
    # include, exists, ptr: a domain-spec and nothing else (no cidr)
    if cidr:
        return term, f"{raw}: {name} takes no prefix length"
    if name in ("include", "exists") and not sep:
        return term, f"{raw}: {name} needs a domain"
    if sep:
        term.target = value
        err = domain_spec_problem(value)
        return term, f"{raw}: {err}" if err else None
    return term, None


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
        if m:
            name, value = m.group(1).lower(), m.group(2)
            term = Term("", name, value, raw)
            if name in ("redirect", "exp"):
                if name in seen_mods:
                    out.errors.append(f"modifier {name}= appears more than once")
                err = domain_spec_problem(value)
                term.target = value
            else:
                err = macro_string_problem(value, letters=_MACRO_LETTERS | set("crt"))
            seen_mods.add(name)
            if err:
                term.valid = False
                out.errors.append(f"{raw}: {err}")
            out.terms.append(term)
            continue
        qual = "+"
        body = raw
        if body[0] in "+-~?":
            qual, body = body[0], body[1:]
        term, err = _mechanism(qual, body, raw)
        if err:
            term.valid = False
            out.errors.append(err)
        if term.name in MECHANISMS:
            out.terms.append(term)
    return out


@dataclass
class Evaluation:
    """What walking the record costs. ``lookup_terms`` is the evidence: one row per counted term."""

    lookups: int = 0
    void_lookups: int = 0
    lookup_terms: list[dict[str, Any]] = field(default_factory=list)
    # Every reason a receiver's evaluation ends in permerror that lies beyond the record's own
    # syntax: {code, domain, term, message}. Filled only through ``permerror``.
    permerrors: list[dict[str, str]] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # temporary DNS failures (not permerrors)
    all_qualifier: str | None = None  # effective 'all' after following redirect=

    def permerror(self, code: str, domain: str, term: str, message: str) -> None:
        """The one place an SPF evaluation problem becomes data (fact ``dns.spf.permerrors``,
        rule ``spf-permerror``)."""
        self.permerrors.append({"code": code, "domain": domain, "term": term, "message": message})

    @property
    def errors(self) -> list[str]:
        return [f"{p['domain']}: {p['message']}" for p in self.permerrors]


def _target(term: Term, domain: str) -> str | None:
    """The name a term queries; None when it holds macros (they need a sender) or is invalid."""
    if not term.valid:
        return None
    spec = term.target if term.target is not None else domain
    return None if "%" in spec else spec


async def evaluate(client: DnsClient, domain: str, parsed: ParsedSpf, *, _depth: int = 0,
                   _ev: Evaluation | None = None, _seen: frozenset[str] | None = None) -> Evaluation:
    """Count lookups and void lookups of ``parsed`` (the record of ``domain``), recursively, and
    collect what makes a receiver's evaluation a permerror beyond the record's own syntax."""
    ev = _ev or Evaluation()
    seen = _seen if _seen is not None else frozenset({domain.lower().rstrip(".")})
    for t in parsed.terms:
        if t.qualifier == "" and t.name != "redirect":
            continue
        if t.name not in LOOKUP_MECHANISMS and t.name != "redirect":
            continue
        if t.name == "redirect" and parsed.all_qualifier is not None:
            continue  # RFC 7208 6.1: ignored when the record has an 'all' mechanism
        ev.lookups += 1
        target = _target(t, domain)
        row: dict[str, Any] = {"domain": domain, "term": t.text, "void": False}
        ev.lookup_terms.append(row)
        if target is None or t.name == "ptr":
            continue  # macros need a sender; ptr needs the client IP; bad names are syntax errors
        key = target.lower().rstrip(".")
        if t.name in ("include", "redirect"):
            if key in seen or _depth >= MAX_DEPTH:
                ev.permerror("loop", domain, t.text, f"{t.text} loops back to {target}")
                continue
            lk = await client.query(target, "TXT")
            if lk.failed:
                ev.unresolved.append(f"{domain}: {t.text} -> {target}: {lk.status}")
                continue
            records = [r for r in lk.txt_strings() if is_spf(r)]
            if not lk.ok:
                row["void"] = True
                ev.void_lookups += 1
            if not records:
                # RFC 7208 5.2 / 6.1: a target without an SPF record makes include/redirect permerror.
                ev.permerror("no-record", domain, t.text, f"{t.text}: {target} has no SPF record")
                continue
            if len(records) > 1:
                ev.permerror("multiple-records", target, t.text, f"{target} has {len(records)} SPF records")
                continue
            sub = parse(records[0])
            for e in sub.errors:
                ev.permerror("syntax", target, t.text, f"syntax error in the record of {target}: {e}")
            await evaluate(client, target, sub, _depth=_depth + 1, _ev=ev, _seen=seen | {key})
            if t.name == "redirect" and _depth == 0:
                ev.all_qualifier = sub.all_qualifier
            continue
        if t.name == "a":
            a, aaaa = await client.query(target, "A"), await client.query(target, "AAAA")
            if a.failed or aaaa.failed:
                ev.unresolved.append(f"{domain}: {t.text}: {a.status}/{aaaa.status}")
            elif not a.ok and not aaaa.ok:
                row["void"] = True
                ev.void_lookups += 1
        elif t.name == "mx":
            mx = await client.query(target, "MX")
            if mx.failed:
                ev.unresolved.append(f"{domain}: {t.text}: {mx.status}")
            elif not mx.ok:
                row["void"] = True
                ev.void_lookups += 1
            elif mx.rrset is not None and len(mx.rrset) > MAX_MX_NAMES:
                ev.permerror("mx-limit", domain, t.text,
                             f"{t.text}: {target} has {len(mx.rrset)} MX names (limit {MAX_MX_NAMES})")
        elif t.name == "exists":
            a = await client.query(target, "A")
            if a.failed:
                ev.unresolved.append(f"{domain}: {t.text}: {a.status}")
            elif not a.ok:
                row["void"] = True
                ev.void_lookups += 1
    if _depth == 0 and ev.all_qualifier is None:
        ev.all_qualifier = parsed.all_qualifier
    return ev
