"""The ``resolver`` option: which nameservers to ask, checked without loading dnspython.

Kept apart from ``resolver.py`` so the CLI can reject a bad ``--resolver`` and the DNS probes can
settle targets that need no question (address literals) without importing the DNS library.
"""

from __future__ import annotations

import ipaddress
from typing import Any


class ResolverSpecError(ValueError):
    """The ``resolver`` option is not ``IP`` or ``IP:PORT`` / ``[IPv6]:PORT``."""


def parse_resolver(spec: str) -> tuple[str, int]:
    """Parse ``IP[:PORT]`` (IPv6 as ``[addr]:port`` or bare ``addr``) into (ip, port)."""
    text = spec.strip()
    host, port = text, 53
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ResolverSpecError(f"resolver {spec!r}: unterminated '['")
        host, tail = text[1:close], text[close + 1 :]
        if tail:
            if not tail.startswith(":") or not (tail[1:].isascii() and tail[1:].isdigit()) or len(tail) > 6:
                raise ResolverSpecError(f"resolver {spec!r}: expected [IPv6]:PORT")
            port = int(tail[1:])
    elif text.count(":") == 1:
        host, _, ptext = text.partition(":")
        if not (ptext.isascii() and ptext.isdigit()) or len(ptext) > 5:
            raise ResolverSpecError(f"resolver {spec!r}: port {ptext!r} is not a number")
        port = int(ptext)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ResolverSpecError(f"resolver {spec!r}: {host!r} is not an IP address") from None
    if not 1 <= port <= 65535:
        raise ResolverSpecError(f"resolver {spec!r}: port {port} out of range")
    return host, port


def configured_nameservers(options: dict[str, Any]) -> list[tuple[str, int]] | None:
    """The (ip, port) list of the ``resolver`` option ("IP[:PORT]" or a list of them); None when
    it is not set (the system's resolvers are used). Raises ResolverSpecError on a bad entry."""
    spec = options.get("resolver")
    if not spec:
        return None
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    return [parse_resolver(str(s)) for s in specs]
