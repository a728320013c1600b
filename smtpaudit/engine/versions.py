"""Comparing software versions as banners print them, and matching version ranges.

A version is split into numeric and alphabetic runs ("6.6.2p1" -> 6, 6, 2, "p", 1), a leading "V"
is ignored and trailing zero segments dropped ("10.1.0" == "10.1"); a word sorts below a number at
the same position ("4.97rc1" < "4.97.1"); only the part before the first "/" counts ("8.15.2/8.15.2" is Sendmail's binary/config pair). Numbers compare
numerically, runs compare left to right, and a longer version with an equal prefix is newer
("4.92.1" > "4.92", "6.6.2p1" > "6.6.2"). A range is a comma-separated list of ``op version``
terms that must all hold (``">=4.87,<4.92"``), ops ``< <= > >= == =``.
"""

from __future__ import annotations

import re
from functools import total_ordering

_TOKEN = re.compile(r"[0-9]+|[A-Za-z]+")  # ASCII only: int() of "٣" is 3
MAX_VERSION_TEXT = 200  # versions come from server banners: bounded work per string
MAX_NUMBER = 18  # digits per numeric segment; int() of thousands of digits is slow or raises
_TERM = re.compile(r"^\s*(<=|>=|==|=|<|>)\s*([0-9][0-9A-Za-z.\-_+~]*)\s*$")


class VersionError(ValueError):
    """A version or range string that cannot be parsed."""


@total_ordering
class Version:
    """A comparable version; construct from the string a server printed."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_VERSION_TEXT:
            raise VersionError(f"not a version: {text[:40]!r}... ({len(text)} characters)")
        core = text.strip().split("/", 1)[0]
        if core[:1] in ("V", "v"):
            core = core[1:]
        tokens = _TOKEN.findall(core)
        if not tokens or not tokens[0].isdigit() or any(len(t) > MAX_NUMBER for t in tokens):
            raise VersionError(f"not a version: {text!r}")
        self.text = text
        key = [(1, int(t)) if t.isdigit() else (0, t.lower()) for t in tokens]
        # Trailing zero segments carry no meaning: "10.1.0" is "10.1".
        while len(key) > 1 and key[-1] == (1, 0):
            key.pop()
        self.key: tuple[tuple[int, int | str], ...] = tuple(key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __lt__(self, other: "Version") -> bool:
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Version({self.text!r})"


def parse_range(spec: str) -> list[tuple[str, Version]]:
    terms = []
    for part in spec.split(","):
        m = _TERM.match(part)
        if not m:
            raise VersionError(f"bad version range term {part.strip()!r} in {spec!r} (expected e.g. '>=4.87,<4.92')")
        terms.append((m.group(1), Version(m.group(2))))
    return terms


def in_range(version: str, spec: str) -> bool:
    v = Version(version)
    for op, bound in parse_range(spec):
        ok = {
            "<": v < bound,
            "<=": v <= bound,
            ">": v > bound,
            ">=": v >= bound,
            "==": v == bound,
            "=": v == bound,
        }[op]
        if not ok:
            return False
    return True
