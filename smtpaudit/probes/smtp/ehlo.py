"""Parsing EHLO replies into capability keywords, AUTH mechanisms and the announced host name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smtpaudit.probes.smtp.client import Reply

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


@dataclass
class Capabilities:
    """What an EHLO reply advertises. Keywords are upper-case; unparseable lines are kept aside."""

    hostname: str | None = None
    keywords: list[str] = field(default_factory=list)
    params: dict[str, list[str]] = field(default_factory=dict)
    auth: list[str] = field(default_factory=list)
    size: int | None = None
    odd_lines: list[str] = field(default_factory=list)

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords


def parse_ehlo(reply: Reply) -> Capabilities:
    """First line is ``domain [greeting]``; each further line ``KEYWORD [params]`` (RFC 5321 4.1.1.1)."""
    caps = Capabilities()
    if not reply.lines:
        return caps
    first = reply.lines[0].split()
    caps.hostname = first[0] if first else None
    for line in reply.lines[1:]:
        parts = line.split()
        if not parts:
            continue
        word = parts[0]
        # Old servers (and some Exchange versions) write "AUTH=LOGIN PLAIN"; treat it like AUTH.
        if word.upper().startswith("AUTH="):
            parts = ["AUTH", word[5:], *parts[1:]]
            word = "AUTH"
        if not _KEYWORD.match(word):
            caps.odd_lines.append(line[:200])
            continue
        key = word.upper()
        args = parts[1:]
        if key not in caps.keywords:
            caps.keywords.append(key)
        caps.params.setdefault(key, [])
        caps.params[key].extend(a for a in args if a not in caps.params[key])
        if key == "AUTH":
            for mech in args:
                mech = mech.upper()
                if mech and mech not in caps.auth:
                    caps.auth.append(mech)
        elif key == "SIZE" and args and args[0].isdigit():
            caps.size = int(args[0])
    return caps
