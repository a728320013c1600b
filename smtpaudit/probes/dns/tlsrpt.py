"""SMTP TLS Reporting (RFC 8460): the ``_smtp._tls`` TXT record and its ``rua`` destinations."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_RECORD = 4096


def is_tlsrpt(txt: str) -> bool:
    return re.match(r"^v\s*=\s*TLSRPTv1\s*(;|$)", txt) is not None


@dataclass
class TlsRpt:
    rua: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse(record: str) -> TlsRpt:
    """Parse ``v=TLSRPTv1; rua=mailto:...,https://...`` (RFC 8460 section 3)."""
    out = TlsRpt()
    fields = [f.strip() for f in record[:MAX_RECORD].split(";") if f.strip()]
    tags: dict[str, str] = {}
    for f in fields:
        name, sep, value = f.partition("=")
        if not sep:
            out.errors.append(f"{f!r} is not name=value")
            continue
        tags[name.strip()] = value.strip()
    if tags.get("v") != "TLSRPTv1":
        out.errors.append("v must be TLSRPTv1 (case-sensitive) and come first")
    if "rua" not in tags:
        out.errors.append("required field rua is missing")
        return out
    for item in tags["rua"].split(","):
        uri = item.strip()
        if not uri:
            continue
        if not (re.match(r"^mailto:[^@\s]+@[^@\s]+$", uri) or re.match(r"^https://[^\s/]+(/\S*)?$", uri)):
            out.errors.append(f"rua {uri!r} is neither mailto: nor https:")
        out.rua.append(uri)
    if not out.rua:
        out.errors.append("rua lists no destination")
    return out
