"""Parsing EHLO replies into capability keywords, AUTH mechanisms and the announced host name.

Linear in the reply and capped: a hostile server may answer EHLO with hundreds of lines of
thousands of AUTH mechanisms, so membership uses sets (never ``x not in list``) and each list
keeps at most a fixed number of entries; what is cut is counted in ``truncated``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smtpaudit.probes.smtp.client import Reply

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# Real servers advertise ~15 keywords and ~10 AUTH mechanisms; anything past these is noise.
MAX_KEYWORDS = 64
MAX_PARAMS = 64
MAX_AUTH = 64
MAX_TOKEN = 64  # an RFC 4422 mechanism name is at most 20 characters


@dataclass
class Capabilities:
    """What an EHLO reply advertises. Keywords are upper-case; unparseable lines are kept aside."""

    hostname: str | None = None
    keywords: list[str] = field(default_factory=list)
    params: dict[str, list[str]] = field(default_factory=dict)
    auth: list[str] = field(default_factory=list)
    size: int | None = None
    odd_lines: list[str] = field(default_factory=list)
    truncated: int = 0  # entries dropped by the caps above

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords


def parse_ehlo(reply: Reply) -> Capabilities:
    """First line is ``domain [greeting]``; each further line ``KEYWORD [params]`` (RFC 5321 4.1.1.1)."""
    caps = Capabilities()
    if not reply.lines:
        return caps
    first = reply.lines[0].split(None, 1)
    caps.hostname = first[0][:255] if first else None
    # Insertion-ordered dicts used as sets: O(1) membership, first-seen order kept.
    keywords: dict[str, None] = {}
    params: dict[str, dict[str, None]] = {}
    auth: dict[str, None] = {}
    for line in reply.lines[1:]:
        parts = line.split()
        if not parts:
            continue
        word = parts[0]
        # Old servers (and some Exchange versions) write "AUTH=LOGIN PLAIN"; treat it like AUTH.
        if word.upper().startswith("AUTH="):
            parts = ["AUTH", word[5:], *parts[1:]]
            word = "AUTH"
        if len(word) > MAX_TOKEN or not _KEYWORD.match(word):
            if len(caps.odd_lines) < MAX_KEYWORDS:
                caps.odd_lines.append(line[:200])
            else:
                caps.truncated += 1
            continue
        key = word.upper()
        if key not in keywords:
            if len(keywords) >= MAX_KEYWORDS:
                caps.truncated += 1
                continue
            keywords[key] = None
        seen = params.setdefault(key, {})
        for arg in parts[1:]:
            if arg in seen:
                continue
            if len(seen) >= MAX_PARAMS or len(arg) > MAX_TOKEN:
                caps.truncated += 1
                continue
            seen[arg] = None
        if key == "AUTH":
            for mech in parts[1:]:
                mech = mech.upper()
                if not mech or mech in auth:
                    continue
                if len(auth) >= MAX_AUTH or len(mech) > MAX_TOKEN:
                    caps.truncated += 1
                    continue
                auth[mech] = None
        elif key == "SIZE" and len(parts) > 1 and parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 20:
            caps.size = int(parts[1])
    caps.keywords = list(keywords)
    caps.params = {k: list(v) for k, v in params.items()}
    caps.auth = list(auth)
    return caps
