"""The one domain-name validator the mail-DNS checks share (SPF targets, DMARC report domains,
MTA-STS mx patterns, MX exchanges).

``name_problem`` says what is wrong with a name, or None. Two levels:

- DNS (RFC 1035 2.3.4, RFC 2181 11): non-empty labels of at most 63 octets, at most 253
  characters in text form (255 octets on the wire); any octet allowed.
- host name (RFC 1123 2.1, RFC 5321 4.1.2 ``Domain``): additionally letters, digits and inner
  hyphens only, and a top label that is not all digits (so an IPv4 literal is not a host name).

A name from a record is checked here *before* it is put in a DNS question, so a bad name is a
problem of the record, never a DNS-library exception.
"""

from __future__ import annotations

import re

MAX_NAME = 253
MAX_LABEL = 63
_LDH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")


def labels_of(name: str) -> list[str]:
    """Labels of ``name`` without the root (one trailing dot is allowed)."""
    return (name[:-1] if name.endswith(".") else name).split(".")


def name_problem(name: str, *, host: bool = True, wildcard: bool = False) -> str | None:
    """Why ``name`` is not a valid domain name (``host``: a valid host name), or None.

    ``wildcard`` allows one leading ``*`` label (MTA-STS mx patterns, RFC 8461 3.2)."""
    if not name or name == ".":
        return "empty name"
    if len(name.rstrip(".")) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    labels = labels_of(name)
    if wildcard and labels[0] == "*":
        labels = labels[1:]
        if not labels:
            return "a wildcard needs a domain after '*.'"
    for label in labels:
        if not label:
            return "empty label (two dots in a row, or a leading dot)"
        if len(label.encode("utf-8", "surrogateescape")) > MAX_LABEL:
            return f"label {label[:20]!r}... longer than {MAX_LABEL} octets"
        if host and not _LDH.match(label):
            if "*" in label:
                return f"label {label!r}: '*' is only allowed as the whole leftmost label"
            return f"label {label!r} is not letters, digits and inner hyphens"
    if host and labels[-1].isdigit():
        return f"top label {labels[-1]!r} is all digits"
    return None


def is_host_name(name: str) -> bool:
    return name_problem(name) is None
