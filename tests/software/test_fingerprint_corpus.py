"""The fingerprint corpus (tests/software/banner_corpus.toml): every real banner is read right, and
smtpaudit's reading agrees with nmap's own database (nmap-service-probes) except where the corpus says
how they differ."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from smtpaudit.probes.smtp.fingerprint import identify
from smtpaudit.engine.versions import Version
from tests.software.nmap_db import PRODUCT_MAP, PROBES_FILE, first_match, load_smtp_matches, require

CORPUS = tomllib.loads((Path(__file__).parent / "banner_corpus.toml").read_text(encoding="utf-8"))["banner"]


def ours(entry: dict) -> tuple[str, str, str]:
    texts = {"banner": "", "ehlo": "", "help": ""}
    texts[entry["source"]] = entry["text"]
    fp = identify(texts["banner"], texts["ehlo"], texts["help"])
    return fp.product or "", fp.version or "", fp.distribution or ""


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e["origin"][:60])
def test_corpus_entry_is_identified(entry: dict) -> None:
    assert ours(entry) == (entry["product"], entry["version"], entry["distribution"])
    if entry["version"]:
        Version(entry["version"])  # every version read must be comparable by the CVE table


def nmap_response(entry: dict) -> str | None:
    """The raw bytes nmap's probes would have read (CRLF lines), or None when nmap sees no such reply."""
    crlf = entry["text"].replace("\n", "\r\n") + "\r\n"
    if entry["source"] == "banner":
        return crlf
    if entry["source"] == "help":  # nmap's Help probe reads the greeting, then the HELP reply
        return "220 mx.example.org ESMTP\r\n" + crlf
    return None  # nmap sends EHLO without a name: a different reply


@pytest.mark.peer
def test_corpus_agrees_with_nmap_database() -> None:
    require(PROBES_FILE, "nmap-service-probes")
    matches, _failed = load_smtp_matches()
    assert len(matches) > 400, "nmap-service-probes has fewer smtp matches than expected"
    compared = agree = 0
    differ = []
    for entry in CORPUS:
        response = nmap_response(entry)
        if response is None:
            continue
        got = first_match(matches, response)
        nmap_product = PRODUCT_MAP.get(got[0], f"other:{got[0]}") if got else ""
        nmap_version = got[1] if got and "X" not in got[1] else ""
        compared += 1
        same_product = nmap_product == entry["product"]
        same_version = nmap_version == entry["version"]
        if same_product and same_version:
            agree += 1
            assert "nmap_differs" not in entry, f"{entry['origin']}: nmap now agrees; drop nmap_differs"
        else:
            differ.append(entry["origin"])
            assert "nmap_differs" in entry, (
                f"{entry['origin']}: nmap reads {nmap_product!r} {nmap_version!r} (line {got[2] if got else '-'}), "
                f"smtpaudit {entry['product']!r} {entry['version']!r}")
            # Where they differ, nmap must never know more: no other product, no version we miss.
            assert nmap_product in ("", entry["product"]) and (not nmap_version or nmap_version == entry["version"]), entry["origin"]
    print(f"\nfingerprint corpus vs nmap-service-probes: {agree}/{compared} agree on product and version; differ: {differ}")
    assert agree >= compared - len([e for e in CORPUS if "nmap_differs" in e])
