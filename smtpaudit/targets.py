"""Parsing scan targets into endpoints, before any connection is made.

Accepted forms: ``domain:example.org`` and a bare name without port (a mail domain: its MX
hosts are resolved and scanned, see ``smtpaudit.probes.dns.expand``), ``host:port``, ``[v6]:port``, ``smtp://host[:25]`` (STARTTLS),
``submission://host[:587]`` (STARTTLS), ``smtps://host[:465]`` (implicit TLS). A port without a
scheme gets the mode its number implies (465 -> implicit TLS, anything else -> STARTTLS when
offered). The role (MX or submission) follows the port unless the user overrides it.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from smtpaudit.inputs import InputError, Problem, read_text


def _show(text: str, limit: int = 80) -> str:
    """A user's target quoted in a message, cut short: a 5000-digit port is not echoed back whole."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


class TargetError(ValueError):
    """A target string the user gave cannot be parsed; the message says what is expected."""


class Mode(str, enum.Enum):
    """How TLS is reached on an endpoint."""

    STARTTLS = "starttls"
    IMPLICIT = "implicit"

    def __str__(self) -> str:
        return self.value


class Role(str, enum.Enum):
    """What the endpoint is for: receiving mail from the Internet, or accepting it from users."""

    MX = "mx"
    SUBMISSION = "submission"
    DOMAIN = "domain"  # a mail domain: DNS-only checks; its MX hosts become MX endpoints

    def __str__(self) -> str:
        return self.value


SCHEMES: dict[str, tuple[int, Mode, Role]] = {
    "smtp": (25, Mode.STARTTLS, Role.MX),
    "submission": (587, Mode.STARTTLS, Role.SUBMISSION),
    "smtps": (465, Mode.IMPLICIT, Role.SUBMISSION),
    "submissions": (465, Mode.IMPLICIT, Role.SUBMISSION),
}

# RFC 1123 host names; labels may carry underscores in the wild (lab names), so allow them.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")

EXPECTED = (
    "expected host, host:port, [IPv6]:port, smtp://host[:port], submission://host[:port] "
    "or smtps://host[:port]"
)


@dataclass(frozen=True)
class Endpoint:
    """One host/port/mode to scan. ``spec`` is what the user wrote; ``origin`` where they wrote it."""

    host: str
    port: int
    mode: Mode
    role: Role
    spec: str
    origin_file: str | None = None
    origin_line: int | None = None
    domain: str | None = None  # the mail domain this endpoint was found under (MX expansion)
    # The IP address to connect to when it was resolved by smtpaudit itself (MX expansion through
    # --resolver); the host name still drives SNI, certificate names and DNS checks.
    address: str | None = None

    @property
    def connect_host(self) -> str:
        return self.address or self.host

    @property
    def is_ipv6(self) -> bool:
        try:
            return isinstance(ipaddress.ip_address(self.host), ipaddress.IPv6Address)
        except ValueError:
            return False

    @property
    def id(self) -> str:
        """Stable display id, ``host:port`` (IPv6 literals bracketed), ``domain:name`` for domains."""
        if self.role is Role.DOMAIN:
            return f"domain:{self.host}"
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        if self.address and self.address != self.host:
            # One MX name may have several addresses: each is its own endpoint.
            return f"{host}[{self.address}]:{self.port}"
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        if self.role is Role.DOMAIN:
            return self.id
        scheme = "smtps" if self.mode is Mode.IMPLICIT else ("submission" if self.role is Role.SUBMISSION else "smtp")
        return f"{scheme}://{self.id}"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "host": self.host,
            "port": self.port,
            "mode": self.mode.value,
            "role": self.role.value,
            "url": self.url,
            "spec": self.spec,
            "origin_file": self.origin_file,
            "origin_line": self.origin_line,
            "domain": self.domain,
            "address": self.address,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "Endpoint":
        return cls(
            host=str(data["host"]),
            port=int(data["port"]),  # type: ignore[arg-type]
            mode=Mode(data["mode"]),
            role=Role(data["role"]),
            spec=str(data.get("spec", "")),
            origin_file=data.get("origin_file"),  # type: ignore[arg-type]
            origin_line=data.get("origin_line"),  # type: ignore[arg-type]
            domain=data.get("domain"),  # type: ignore[arg-type]
            address=data.get("address"),  # type: ignore[arg-type]
        )


def _mode_for_port(port: int) -> Mode:
    return Mode.IMPLICIT if port == 465 else Mode.STARTTLS


def _role_for_port(port: int) -> Role:
    return Role.SUBMISSION if port in (465, 587) else Role.MX


def _check_host(host: str, spec: str) -> str:
    if not host:
        raise TargetError(f"{_show(spec)}: missing host; {EXPECTED}")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise TargetError(f"{_show(spec)}: {_show(host)} is not a valid host name or IP address; {EXPECTED}")
    return host.rstrip(".").lower()


def _check_port(text: str, spec: str) -> int:
    # ASCII digits only ("²" and "٣" pass str.isdigit()), and short: int() of 5000 digits raises.
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise TargetError(f"{_show(spec)}: port {text[:20]!r}{'...' if len(text) > 20 else ''} is not a number between 1 and 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise TargetError(f"{_show(spec)}: port {port} is out of range 1-65535")
    return port


def _split_host_port(rest: str, spec: str) -> tuple[str, str | None]:
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise TargetError(f"{_show(spec)}: unterminated '[' in IPv6 literal; {EXPECTED}")
        host = rest[1:close]
        tail = rest[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError(f"{_show(spec)}: {_show(host)} inside brackets is not an IPv6 address") from None
        if not tail:
            return host, None
        if not tail.startswith(":"):
            raise TargetError(f"{_show(spec)}: expected ':port' after ']'")
        return host, tail[1:]
    if rest.count(":") > 1:
        # A bare IPv6 literal without a port.
        try:
            ipaddress.IPv6Address(rest)
        except ValueError:
            raise TargetError(f"{_show(spec)}: IPv6 addresses with a port must be bracketed, e.g. [2001:db8::1]:25") from None
        return rest, None
    if ":" in rest:
        host, port = rest.split(":", 1)
        return host, port
    return rest, None


def parse_target(
    spec: str,
    *,
    role: Role | None = None,
    origin_file: str | None = None,
    origin_line: int | None = None,
) -> Endpoint:
    """Parse one target string into an Endpoint, or raise TargetError saying what is expected."""
    text = spec.strip()
    if not text:
        raise TargetError(f"empty target; {EXPECTED}")
    if any(c.isspace() for c in text):
        raise TargetError(f"{_show(spec)}: targets cannot contain spaces; {EXPECTED}")
    scheme_defaults: tuple[int, Mode, Role] | None = None
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme_defaults = SCHEMES.get(scheme.lower())
        if scheme_defaults is None:
            raise TargetError(f"{_show(spec)}: unknown scheme {scheme!r}; use one of {', '.join(sorted(SCHEMES))}")
        rest = rest.rstrip("/")
        if "/" in rest or "@" in rest or "?" in rest:
            raise TargetError(f"{_show(spec)}: only scheme://host[:port] is accepted (no user, path or query)")
    elif text.lower().startswith("domain:"):
        return domain_target(text[7:], spec=text, origin_file=origin_file, origin_line=origin_line)
    else:
        rest = text
    host, port_text = _split_host_port(rest, spec)
    if scheme_defaults is None and port_text is None and role is None and _is_name(host):
        # A bare name is a mail domain (its MX hosts are scanned); host:25 is written host:25.
        return domain_target(host, spec=text, origin_file=origin_file, origin_line=origin_line)
    host = _check_host(host, spec)
    if scheme_defaults is not None:
        default_port, mode, default_role = scheme_defaults
        port = _check_port(port_text, spec) if port_text is not None else default_port
    else:
        port = _check_port(port_text, spec) if port_text is not None else 25
        mode = _mode_for_port(port)
        default_role = _role_for_port(port)
    return Endpoint(
        host=host,
        port=port,
        mode=mode,
        role=role or default_role,
        spec=text,
        origin_file=origin_file,
        origin_line=origin_line,
    )


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return True


def domain_target(name: str, *, spec: str, origin_file: str | None = None, origin_line: int | None = None) -> Endpoint:
    """The pseudo-endpoint of a mail domain (DNS-only probes run on it)."""
    host = _check_host(name, spec)
    try:
        ipaddress.ip_address(host)
        raise TargetError(f"{_show(spec)}: a domain target needs a name, not an IP address")
    except ValueError:
        pass
    return Endpoint(host=host, port=25, mode=Mode.STARTTLS, role=Role.DOMAIN, spec=spec,
                    origin_file=origin_file, origin_line=origin_line, domain=host)


class TargetsFileError(InputError, TargetError):
    """Bad lines of a targets file: an input-file error (file + line, all with --verbose) and a target error."""


def read_targets_file(path: str | Path, *, role: Role | None = None) -> list[Endpoint]:
    """Read one target per line (``#`` starts a comment). Errors name the file and line;
    every bad line is collected (InputError.problems), the first is the message."""

    p = Path(path)
    try:
        lines = read_text(p, what="targets file").splitlines()
    except InputError as exc:
        raise TargetsFileError(p, exc.problems) from None
    endpoints: list[Endpoint] = []
    problems: list[Problem] = []
    for number, line in enumerate(lines, start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        try:
            endpoints.append(parse_target(content, role=role, origin_file=str(path), origin_line=number))
        except TargetError as exc:
            problems.append(Problem(f"line {number}", str(exc)))
    if problems:
        raise TargetsFileError(p, problems)
    return endpoints


def dedupe(endpoints: list[Endpoint]) -> list[Endpoint]:
    """Drop repeated host/port/mode triples, keeping the first occurrence (and its origin)."""
    seen: set[tuple[str, int, Mode, Role]] = set()
    unique: list[Endpoint] = []
    for ep in endpoints:
        key = (ep.host, ep.port, ep.mode, ep.role if ep.role is Role.DOMAIN else Role.MX)
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return unique
