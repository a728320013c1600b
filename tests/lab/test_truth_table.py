"""The truth table of issue 15: smtpaudit's verdict per lab server and property against the true
configuration, with the false positives and false negatives counted.

Every lab instance is scanned once (in parallel, one `smtpaudit scan` process each, --intrusive
with only the rules of the properties below), trusting its own CA (`--ca-file`: the operator
knows it), so that "certificate faults" means faults, not "the lab CA is private". The insecure
variants present a self-signed RSA-1024/SHA-1 certificate that does not verify even as its own
anchor, so no served domain can be established there for the smuggling test: they get the
recipient explicitly (`--smuggling-rcpt postmaster@lab.test`), as an operator would pass it.

The truth is the configuration (tests/lab/variants/*.toml), never smtpaudit's output; where it is
a property of the software rather than of a setting, the reason is given next to it. A verdict is
True (a finding), False (every rule passed or does not apply) or None (not evaluated). Cells
whose truth cannot be observed on that server (OpenSMTPD completes no handshake that shows a
certificate) accept None.

Rows of properties another branch is changing are xfail(strict=False) naming the branch, so the
lead can make them strict after merging. `python -m pytest tests/lab/test_truth_table.py -s`
prints the table; SMTPAUDIT_TRUTH_TABLE=FILE also writes it as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
SERVERS = ("postfix-hardened", "postfix-insecure", "exim-secure", "exim-insecure", "opensmtpd",
           "opensmtpd-insecure", "aiosmtpd-hardened", "aiosmtpd-insecure")

# property -> (rules whose finding means "yes", branch that owns it while it is not merged yet:
# its row is xfail(strict=False) until then; h/tls (TLS rows) and h/i15s (version banner) are merged)
PROPERTIES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "protocols": (("tls-legacy-protocols", "tls-sslv2-accepted", "tls-sslv3-accepted", "tls-12-not-supported"), None),
    "weak suites": (("tls-null-export-suites", "tls-rc4-suites", "tls-des-3des-suites", "tls-anonymous-suites",
                     "tls-anonymous-suites-mx", "tls-no-forward-secrecy", "tls12-cbc-only", "tls12-cbc-only-mx",
                     "tls-weak-dh"), None),
    "certificate faults": (("tls-cert-expired", "tls-cert-not-yet-valid", "tls-cert-untrusted-mx", "tls-cert-name-mismatch-mx",
                            "tls-cert-weak-key", "tls-cert-weak-signature", "tls-cert-chain-order"), None),
    "AUTH before TLS": (("auth-before-starttls",), None),
    "plaintext AUTH": (("plaintext-auth-accepted",), None),
    "open relay confirmed": (("open-relay",), None),
    "relay (any verdict)": (("open-relay", "open-relay-unconfirmed"), None),
    "VRFY/EXPN": (("vrfy-discloses-users", "expn-discloses-lists"), None),
    "version banner": (("software-version-disclosed",), None),
    "smuggling": (("smtp-smuggling-exploitable",), None),
    "STARTTLS broken": (("starttls-broken", "tls-unusable"), None),
}

_F = dict.fromkeys(PROPERTIES, False)
INSECURE_COMMON = {
    "protocols": True,            # TLS 1.0 and 1.1 enabled (smtpd_tls_protocols >=TLSv1 / +VERS-TLS1.0 / min TLSv1)
    "weak suites": True,          # NULL+anon+CBC (Postfix), RC4+3DES (Exim), ALL:@SECLEVEL=0 (aiosmtpd)
    "certificate faults": True,   # self-signed RSA-1024, SHA-1
    "AUTH before TLS": True,      # PLAIN LOGIN advertised without TLS
    "plaintext AUTH": True,       # and processed without TLS
    "VRFY/EXPN": True,            # 252 or 250 for known users, 550 for unknown ones
    "version banner": True,       # "Postfix (3.7.11)", "Exim 4.96", "Python SMTP 1.4.6"
}
TRUTH: dict[str, dict[str, bool]] = {
    "postfix-hardened": dict(_F),  # smtpd_forbid_bare_newline = yes: not exploitable
    "exim-secure": dict(_F),
    "aiosmtpd-hardened": dict(_F),
    "postfix-insecure": {**_F, **INSECURE_COMMON, "open relay confirmed": True, "relay (any verdict)": True,
                         "smuggling": True},  # smtpd_forbid_bare_newline = no: <LF>.<LF> ends DATA
    # Debian's 4.96-15+deb12u11 carries the CVE-2023-51766 fix: not exploitable.
    "exim-insecure": {**_F, **INSECURE_COMMON, "open relay confirmed": True, "relay (any verdict)": True},
    # Accepts every recipient: a relay it may be, confirmed it can never be. aiosmtpd >= 1.4.5
    # accepts only <CR><LF>.<CR><LF> (GHSA-pr2m-px7j-xg65): not exploitable.
    "aiosmtpd-insecure": {**_F, **INSECURE_COMMON, "relay (any verdict)": True},
    # STARTTLS advertised, no handshake ever completes (OpenSSL 3 vs its key engine).
    "opensmtpd": {**_F, "STARTTLS broken": True},
    # Same fault, aNULL allowed: only anonymous suites complete, on TLS 1.0-1.2; a default client fails.
    "opensmtpd-insecure": {**_F, "protocols": True, "weak suites": True, "STARTTLS broken": True},
}
# Cells whose truth the scanner cannot observe on that server: "not evaluated" is right there.
UNOBSERVABLE = {("opensmtpd", p) for p in ("protocols", "weak suites", "certificate faults", "smuggling")} | {
    ("opensmtpd-insecure", p) for p in ("certificate faults", "smuggling")}


def _scan(lab: Any, name: str, out_dir: Path) -> dict[str, Any]:
    from tests.lab.fixtures import start_instance

    server = start_instance(lab, name)
    out = out_dir / f"{name}.json"
    rules = [arg for rule in dict.fromkeys(r for rules, _ in PROPERTIES.values() for r in rules) for arg in ("--rule", rule)]
    extra = ["--smuggling-rcpt", "postmaster@lab.test"] if server.spec["cert"] == "weak" else []
    cmd = [sys.executable, "-m", "smtpaudit", "scan", server.targets["smtp"], "--role", "mx", "--intrusive",
           "--ca-file", str(server.ca_cert), "--command-timeout", "8", "-o", str(out), "--format", "json", "-q",
           *rules, *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1, 3), (name, proc.returncode, proc.stderr[-2000:])
    return json.loads(out.read_text())["endpoints"][0]


@pytest.fixture(scope="module")
def reports(lab, tmp_path_factory) -> dict[str, dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("truth")
    for name in SERVERS:  # start in the main thread (skips/failures with the reason)
        from tests.lab.fixtures import start_instance
        start_instance(lab, name)
    with ThreadPoolExecutor(max_workers=len(SERVERS)) as pool:
        return dict(zip(SERVERS, pool.map(lambda n: _scan(lab, n, out_dir), SERVERS)))


def verdict(entry: dict[str, Any], rules: tuple[str, ...]) -> bool | None:
    found = {f["rule_id"] for f in entry["findings"]}
    if found & set(rules):
        return True
    settled = set(entry["passed"]) | set(entry.get("not_applicable", []))
    return False if set(rules) <= settled else None


def _cells() -> list[Any]:
    cells = []
    for name in SERVERS:
        for prop, (_rules, owner) in PROPERTIES.items():
            marks = [pytest.mark.xfail(strict=False, reason=f"owned by {owner}: may fail until it merges")] if owner else []
            cells.append(pytest.param(name, prop, marks=marks, id=f"{name}:{prop}"))
    return cells


@pytest.mark.parametrize(("name", "prop"), _cells())
def test_verdict_matches_the_configuration(reports, name: str, prop: str) -> None:
    entry = reports[name]
    rules, _owner = PROPERTIES[prop]
    got, truth = verdict(entry, rules), TRUTH[name][prop]
    if got is None and (name, prop) in UNOBSERVABLE:
        return
    why = [n for n in entry["not_evaluated"] if n["rule_id"] in rules]
    findings = [(f["rule_id"], f["message"][:160]) for f in entry["findings"] if f["rule_id"] in rules]
    assert got == truth, f"{name} / {prop}: verdict {got}, truth {truth}; findings {findings}; not evaluated {why}"


def test_print_the_truth_table(reports) -> None:
    """The table, with false positives / negatives counted (printed with -s; JSON via SMTPAUDIT_TRUTH_TABLE)."""
    rows, fp, fn, ne = [], 0, 0, 0
    sym = {True: "yes", False: "no", None: "n/e"}
    for prop, (rules, owner) in PROPERTIES.items():
        cells = []
        for name in SERVERS:
            got, truth = verdict(reports[name], rules), TRUTH[name][prop]
            fp += got is True and truth is False
            fn += truth is True and got is not True
            ne += got is None
            mark = "" if got == truth else ("*" if got is None and (name, prop) in UNOBSERVABLE else " !")
            cells.append({"server": name, "verdict": got, "truth": truth, "mark": mark})
        rows.append({"property": prop, "owner": owner, "cells": cells})
    width = max(len(p) for p in PROPERTIES) + 2
    lines = ["truth table: smtpaudit verdict / true configuration (! = wrong, * = not observable there)",
             " " * width + " ".join(f"{n:>18}" for n in SERVERS)]
    for row in rows:
        lines.append(f"{row['property']:<{width}}" + " ".join(
            f"{sym[c['verdict']] + '/' + sym[c['truth']] + c['mark']:>18}" for c in row["cells"]))
    cells_total = len(PROPERTIES) * len(SERVERS)
    lines.append(f"{cells_total} cells: {fp} false positive(s), {fn} false negative(s), {ne} not evaluated")
    print("\n" + "\n".join(lines))
    if os.environ.get("SMTPAUDIT_TRUTH_TABLE"):
        Path(os.environ["SMTPAUDIT_TRUTH_TABLE"]).write_text(json.dumps(
            {"rows": rows, "false_positives": fp, "false_negatives": fn, "not_evaluated": ne, "cells": cells_total}, indent=2))
    assert cells_total == len(SERVERS) * len(PROPERTIES) == 88
