"""The TLS tables the scanner reasons with: cipher suites, named groups, signature schemes.

All three live in data files next to this module (``data/*.toml``); this module only loads them
once and answers look-ups (by code, by protocol). Nothing here touches the network.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from smtpaudit import tomlcache

DATA_DIR = Path(__file__).parent / "data"

# Protocol names as they appear in facts and in the suite table, oldest first.
PROTOCOLS: tuple[str, ...] = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
PROTOCOL_VERSION: dict[str, int] = {
    "SSLv2": 0x0002,
    "SSLv3": 0x0300,
    "TLSv1.0": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}
VERSION_NAME: dict[int, str] = {v: k for k, v in PROTOCOL_VERSION.items()}

SUITE_FLAGS = frozenset(
    "null export anon rc4 rc2 des 3des idea cbc aead fs md5 sha1 psk srp krb5 non_iana".split()
)


@dataclass(frozen=True)
class CipherSuite:
    """One cipher suite. ``code`` is 2 bytes (SSLv3+) or 3 bytes (an SSLv2 CIPHER-SPEC)."""

    code: int
    iana: str
    openssl: str | None
    protocols: tuple[str, ...]
    kx: str
    auth: str
    enc: str
    bits: int
    mac: str
    flags: frozenset[str]

    @property
    def sslv2(self) -> bool:
        return self.protocols == ("SSLv2",)

    def to_json(self) -> dict[str, object]:
        return {
            "code": f"0x{self.code:0{6 if self.sslv2 else 4}X}",
            "name": self.iana,
            "openssl": self.openssl,
            "kx": self.kx,
            "auth": self.auth,
            "enc": self.enc,
            "bits": self.bits,
            "mac": self.mac,
            "flags": sorted(self.flags),
        }


@dataclass(frozen=True)
class NamedGroup:
    code: int
    name: str
    kind: str  # ec | ffdhe | hybrid | kem
    bits: int
    tls13: bool
    openssl: str | None


class RegistryError(ValueError):
    """A data file is malformed: a packaging bug, reported with the file and entry."""


@dataclass
class Registry:
    suites: tuple[CipherSuite, ...]
    groups: tuple[NamedGroup, ...]
    sigalgs: tuple[int, ...]
    suite_by_code: dict[int, CipherSuite] = field(init=False, repr=False)
    sslv2_by_code: dict[int, CipherSuite] = field(init=False, repr=False)
    group_by_code: dict[int, NamedGroup] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.suite_by_code = {s.code: s for s in self.suites if not s.sslv2}
        self.sslv2_by_code = {s.code: s for s in self.suites if s.sslv2}
        self.group_by_code = {g.code: g for g in self.groups}

    def suites_for(self, protocol: str) -> list[CipherSuite]:
        """Suites that may be negotiated in ``protocol``, in table order (ascending code)."""
        return [s for s in self.suites if protocol in s.protocols]

    def legacy_tls_suites(self) -> list[CipherSuite]:
        """Every SSLv3..TLS 1.2 suite: offered in full to each of those versions, so that a
        server that (wrongly) negotiates a suite outside its version is still seen."""
        return [s for s in self.suites if not s.sslv2 and "TLSv1.3" not in s.protocols]

    def suite(self, code: int) -> CipherSuite | None:
        return self.suite_by_code.get(code)

    def suite_name(self, code: int) -> str:
        s = self.suite_by_code.get(code)
        return s.iana if s else f"UNKNOWN_0x{code:04X}"

    def group_name(self, code: int) -> str:
        g = self.group_by_code.get(code)
        return g.name if g else f"UNKNOWN_0x{code:04X}"


def _load(name: str) -> dict:
    path = DATA_DIR / name
    try:
        return tomlcache.load(path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"{path}: {exc}") from None


def _parse_suite(entry: dict, index: int) -> CipherSuite:
    where = f"cipher_suites.toml suite #{index}"
    try:
        flags = frozenset(entry.get("flags", []))
        protocols = tuple(entry["protocols"])
        suite = CipherSuite(
            code=int(entry["code"]),
            iana=str(entry["iana"]),
            openssl=entry.get("openssl"),
            protocols=protocols,
            kx=str(entry["kx"]),
            auth=str(entry["auth"]),
            enc=str(entry["enc"]),
            bits=int(entry["bits"]),
            mac=str(entry["mac"]),
            flags=flags,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"{where}: missing or bad key {exc}") from None
    if not flags <= SUITE_FLAGS:
        raise RegistryError(f"{where} ({suite.iana}): unknown flags {sorted(flags - SUITE_FLAGS)}")
    if not protocols or not set(protocols) <= set(PROTOCOLS):
        raise RegistryError(f"{where} ({suite.iana}): bad protocols {protocols}")
    return suite


@lru_cache(maxsize=1)
def load_registry() -> Registry:
    """Load (once) and validate the three tables; duplicate codes are a packaging error."""
    suites = tuple(_parse_suite(e, i) for i, e in enumerate(_load("cipher_suites.toml").get("suite", [])))
    seen: set[tuple[bool, int]] = set()
    for s in suites:
        key = (s.sslv2, s.code)
        if key in seen:
            raise RegistryError(f"cipher_suites.toml: code 0x{s.code:04X} ({s.iana}) listed twice")
        seen.add(key)
    groups = tuple(
        NamedGroup(
            code=int(g["code"]),
            name=str(g["name"]),
            kind=str(g["kind"]),
            bits=int(g["bits"]),
            tls13=bool(g.get("tls13", False)),
            openssl=g.get("openssl"),
        )
        for g in _load("groups.toml").get("group", [])
    )
    if len({g.code for g in groups}) != len(groups):
        raise RegistryError("groups.toml: a group code is listed twice")
    sigalgs = tuple(int(x) for x in _load("sigalgs.toml").get("schemes", []))
    return Registry(suites=suites, groups=groups, sigalgs=sigalgs)
