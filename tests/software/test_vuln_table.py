"""Checks the software data files: rules/software/vulnerable-versions.toml and fingerprints.toml.

The version comparator below is a *reference* for the semantics documented in the TOML header; it lives
only in this test (the engine owns the real implementation) and is itself tested against the examples
the header promises.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VULN_FILE = ROOT / "rules" / "software" / "vulnerable-versions.toml"
FP_FILE = ROOT / "rules" / "software" / "fingerprints.toml"

PRODUCTS = {"exim", "postfix", "sendmail", "opensmtpd", "haraka", "exchange", "iis-smtp",
            "hmailserver", "mdaemon", "qmail", "zimbra", "courier", "python-smtpd"}
SURFACES = {"smtp", "smtp-tls", "smtp-auth", "http", "local", "client"}
VERIFIED = {"NVD", "vendor advisory", "secondary", "unverified"}
CVSS_SOURCES = re.compile(r"^(NVD|NVD v2|ADP:CISA|none|CNA:[A-Za-z0-9_-]+)$")
ID_RE = re.compile(r"^(CVE-\d{4}-\d{4,}|[A-Z][A-Za-z0-9]*-[A-Za-z0-9.-]+)$")
CVE_RE = re.compile(r"^CVE-\d{4}-\d{4,}$")
OPS = (">=", "<=", "==", ">", "<")


# --------------------------------------------------------------------------- reference comparator
def version_key(text: str) -> tuple:
    """Return the comparison key of a version string (see the TOML header, steps 1-4)."""
    head = text.split("/", 1)[0].strip()
    if head[:1] in ("V", "v"):
        head = head[1:]
    parts: list = []
    for num, word in re.findall(r"(\d+)|([A-Za-z]+)", head):
        parts.append(int(num) if num else word.lower())
    if not parts or not isinstance(parts[0], int):
        raise ValueError(f"unparseable version: {text!r}")
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def compare(a: str, b: str) -> int:
    """-1/0/1 for a<b, a==b, a>b: words sort below integers, a prefix sorts below its extensions."""
    ka, kb = version_key(a), version_key(b)
    for x, y in zip(ka, kb):
        if x == y:
            continue
        if isinstance(x, int) != isinstance(y, int):
            return 1 if isinstance(x, int) else -1
        return -1 if x < y else 1
    return (len(ka) > len(kb)) - (len(ka) < len(kb))


def parse_range(text: str) -> list[tuple[str, str]]:
    """Split '>=4.87,<4.92' into [('>=','4.87'), ('<','4.92')]; raise on anything else."""
    out = []
    for part in text.split(","):
        part = part.strip()
        op = next((o for o in OPS if part.startswith(o)), None)
        if op is None or not part[len(op):].strip():
            raise ValueError(f"bad comparator {part!r} in {text!r}")
        ver = part[len(op):].strip()
        version_key(ver)  # must parse
        out.append((op, ver))
    return out


def satisfies(version: str, range_text: str) -> bool:
    checks = {">=": lambda c: c >= 0, ">": lambda c: c > 0, "<=": lambda c: c <= 0,
              "<": lambda c: c < 0, "==": lambda c: c == 0}
    return all(checks[op](compare(version, bound)) for op, bound in parse_range(range_text))


def is_affected(version: str, entry: dict) -> bool:
    return any(satisfies(version, r) for r in entry["affected"])


@pytest.mark.parametrize("low, high", [
    ("4.92", "4.92.1"), ("6.6.2", "6.6.2p1"), ("4.7", "4.70"), ("4.97rc1", "4.97.1"),
    ("8.8.15", "8.8.15p46"), ("8.8.15p46", "9.0.0"), ("4.9", "4.10"), ("2.8.8", "2.8.9"),
])
def test_comparator_orders_documented_examples(low: str, high: str) -> None:
    assert compare(low, high) == -1 and compare(high, low) == 1


@pytest.mark.parametrize("a, b", [
    ("8.15.2/8.15.2", "8.15.2"), ("10.1.0", "10.1"), ("V4.96", "4.96"), ("4.90_1", "4.90.1"),
    ("8.17.1/8.17.1/Debian-2", "8.17.1"),
])
def test_comparator_equalities(a: str, b: str) -> None:
    assert compare(a, b) == 0


def test_comparator_rejects_garbage() -> None:
    for bad in ("", "ESMTP", "/4.1", "p1"):
        with pytest.raises(ValueError):
            version_key(bad)


# --------------------------------------------------------------------------- vulnerability table
@pytest.fixture(scope="module")
def table() -> dict:
    with VULN_FILE.open("rb") as fh:
        return tomllib.load(fh)


def entries(table: dict) -> list[dict]:
    return table["vulnerability"]


def test_table_schema_version(table: dict) -> None:
    assert table["schema"] == 1
    assert len(entries(table)) >= 30


REQUIRED = {"id": str, "aliases": list, "product": str, "title": str, "summary": str, "affected": list,
            "fixed": list, "cvss_source": str, "attack_surface": str, "preconditions": str,
            "verified": str, "sources": list}
OPTIONAL = {"cvss": float, "cvss_vector": str, "notes": str, "requires": list, "active_test": str}


def test_entries_have_required_keys_and_types(table: dict) -> None:
    for e in entries(table):
        where = e.get("id", "<no id>")
        for key, typ in REQUIRED.items():
            assert key in e, f"{where}: missing {key}"
            assert isinstance(e[key], typ), f"{where}: {key} is not {typ.__name__}"
        for key, value in e.items():
            assert key in REQUIRED or key in OPTIONAL, f"{where}: unknown key {key}"
            if key in OPTIONAL:
                assert isinstance(value, OPTIONAL[key]), f"{where}: {key} is not {OPTIONAL[key].__name__}"
        for key in ("title", "summary", "preconditions"):
            assert e[key].strip(), f"{where}: empty {key}"


def test_entry_vocabularies(table: dict) -> None:
    for e in entries(table):
        where = e["id"]
        assert ID_RE.match(e["id"]), where
        assert all(CVE_RE.match(a) for a in e["aliases"]), where
        assert e["product"] in PRODUCTS, where
        assert e["attack_surface"] in SURFACES, where
        assert e["verified"] in VERIFIED, where
        assert CVSS_SOURCES.match(e["cvss_source"]), where
        assert e["sources"] and all(s.startswith(("http://", "https://")) for s in e["sources"]), where


def test_cvss_consistency(table: dict) -> None:
    for e in entries(table):
        where = e["id"]
        if e["cvss_source"] == "none":
            assert "cvss" not in e and "cvss_vector" not in e, where
            continue
        assert 0.0 <= e["cvss"] <= 10.0, where
        vector = e["cvss_vector"]
        if e["cvss_source"] == "NVD v2":
            assert vector.startswith("AV:"), where
        else:
            assert vector.startswith(("CVSS:3.0/", "CVSS:3.1/")), where


def test_ids_unique_across_ids_and_aliases(table: dict) -> None:
    seen: list[str] = []
    for e in entries(table):
        seen.append(e["id"])
        seen.extend(e["aliases"])
    dupes = {x for x in seen if seen.count(x) > 1}
    assert not dupes, dupes
    rule_ids = [e["id"].lower() for e in entries(table)]
    assert len(rule_ids) == len(set(rule_ids))


def test_ranges_parse_and_are_ordered(table: dict) -> None:
    for e in entries(table):
        assert e["affected"], e["id"]
        for r in e["affected"]:
            comps = parse_range(r)
            lows = [v for op, v in comps if op in (">=", ">")]
            highs = [v for op, v in comps if op in ("<=", "<")]
            assert len(lows) <= 1 and len(highs) <= 1, f"{e['id']}: {r}"
            if lows and highs:
                assert compare(lows[0], highs[0]) < 0, f"{e['id']}: empty range {r}"


def test_fixed_versions_fall_outside_affected_ranges(table: dict) -> None:
    for e in entries(table):
        assert e["fixed"], e["id"]
        for fixed in e["fixed"]:
            version_key(fixed)
            assert not is_affected(fixed, e), f"{e['id']}: fixed {fixed} is inside {e['affected']}"


def test_each_fixed_version_closes_some_range(table: dict) -> None:
    """A fixed version should be the upper bound (or just above) of one affected range."""
    for e in entries(table):
        uppers = [v for r in e["affected"] for op, v in parse_range(r) if op in ("<", "<=")]
        for fixed in e["fixed"]:
            assert any(compare(fixed, u) >= 0 for u in uppers), f"{e['id']}: {fixed} closes nothing"


def test_products_in_table_have_fingerprints(table: dict, fingerprints: dict) -> None:
    known = {f["product"] for f in fingerprints["fingerprint"]}
    # Zimbra's MTA is Postfix: its version only comes from HTTPS, so no SMTP fingerprint exists.
    missing = {e["product"] for e in entries(table)} - known - {"zimbra"}
    assert not missing, missing


@pytest.mark.parametrize("version, cve, expected", [
    ("4.91", "CVE-2019-10149", True), ("4.92", "CVE-2019-10149", False), ("4.86.2", "CVE-2019-10149", False),
    ("4.92.2", "CVE-2019-16928", True), ("4.92.3", "CVE-2019-16928", False),
    ("4.90_1", "CVE-2020-28018", True), ("4.89", "CVE-2020-28018", False),
    ("2.6.8", "CVE-2011-0411", True), ("2.6.9", "CVE-2011-0411", False), ("2.3.0", "CVE-2011-0411", False),
    ("8.15.2/8.15.2", "CVE-2023-51765", True), ("8.18.1/8.18.1", "CVE-2023-51765", False),
    ("6.6.1p1", "CVE-2020-7247", True), ("6.6.2p1", "CVE-2020-7247", False),
    ("6.8.0", "CVE-2020-35679", True), ("6.8.0p1", "CVE-2020-35679", False),
    ("9.0.0p40", "CVE-2024-45519", True), ("9.0.0p41", "CVE-2024-45519", False),
    ("4.99.2", "CVE-2026-45185", True), ("4.96", "CVE-2026-45185", False),
    # issue 15: 4.99 introduced CVE-2025-67896 (4.98.2 is not affected); CVE-2020-7247 from OpenSMTPD 6.4.0
    ("4.99", "CVE-2025-67896", True), ("4.98.2", "CVE-2025-67896", False), ("4.99.1", "CVE-2025-67896", False),
    ("6.4.0", "CVE-2020-7247", True), ("6.4.0p1", "CVE-2020-7247", True), ("6.0.3", "CVE-2020-7247", False),
    ("4.90", "CVE-2018-6789", True), ("4.90.1", "CVE-2018-6789", False),
    ("4.92", "CVE-2019-13917", True), ("4.92.1", "CVE-2019-13917", False), ("4.84", "CVE-2019-13917", False),
    ("4.89", "CVE-2017-16943", True), ("4.89.1", "CVE-2017-16943", False), ("4.87", "CVE-2017-16943", False),
    ("4.96", "CVE-2026-48840", True), ("4.99.4", "CVE-2026-48840", False), ("4.87", "CVE-2026-48840", False),
    ("3.7.11", "CVE-2026-43964", True), ("3.8.16", "CVE-2026-43964", False), ("3.10.8", "CVE-2026-43964", True),
    ("3.11.2", "CVE-2026-43964", False), ("2.2.10", "CVE-2026-43964", False),
])
def test_known_points(table: dict, version: str, cve: str, expected: bool) -> None:
    entry = next(e for e in entries(table) if e["id"] == cve)
    assert is_affected(version, entry) is expected


# --------------------------------------------------------------------------- fingerprints
@pytest.fixture(scope="module")
def fingerprints() -> dict:
    with FP_FILE.open("rb") as fh:
        return tomllib.load(fh)


FLAG_MAP = {"I": re.IGNORECASE, "M": re.MULTILINE}


def compiled(fp: dict) -> re.Pattern:
    flags = 0
    for f in fp["flags"]:
        flags |= FLAG_MAP[f]
    return re.compile(fp["pattern"], flags)


def test_fingerprint_schema(fingerprints: dict) -> None:
    assert fingerprints["schema"] == 1
    ids = [fp["id"] for fp in fingerprints["fingerprint"]]
    assert len(ids) == len(set(ids))
    for fp in fingerprints["fingerprint"]:
        assert fp["product"] in PRODUCTS, fp["id"]
        assert fp["source"] in {"banner", "ehlo", "help"}, fp["id"]
        assert fp["confidence"] in {"firm", "tentative"}, fp["id"]
        assert set(fp["flags"]) <= set(FLAG_MAP), fp["id"]
        assert fp["examples"], fp["id"]
        pat = compiled(fp)
        assert set(pat.groupindex) <= {"version"}, f"{fp['id']}: only a 'version' group is allowed"


def test_fingerprint_examples_match_their_own_pattern(fingerprints: dict) -> None:
    for fp in fingerprints["fingerprint"]:
        pat = compiled(fp)
        for ex in fp["examples"]:
            m = pat.search(ex["text"])
            assert m, f"{fp['id']}: no match for {ex['text']!r}"
            assert ex["product"] == fp["product"], fp["id"]
            got = (m.groupdict().get("version") or "")
            assert got == ex["version"], f"{fp['id']}: version {got!r} != {ex['version']!r}"
            if got:
                version_key(got)  # every disclosed version must be comparable


def test_first_match_in_file_order_names_the_right_product(fingerprints: dict) -> None:
    """Order matters: the first fingerprint of the same source that matches an example must agree on it."""
    fps = fingerprints["fingerprint"]
    for fp in fps:
        for ex in fp["examples"]:
            first = next(f for f in fps if f["source"] == fp["source"] and compiled(f).search(ex["text"]))
            assert first["product"] == ex["product"], f"{ex['text']!r} taken by {first['id']}"
            m = compiled(first).search(ex["text"])
            assert (m.groupdict().get("version") or "") == ex["version"], f"{ex['text']!r} via {first['id']}"
