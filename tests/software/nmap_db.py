"""Reading nmap's service database (`match smtp` lines of nmap-service-probes) and running `nmap -sV`.

Used only by the fingerprint tests, to measure how smtpaudit's identification agrees with nmap's.
nmap's patterns are Perl regexes written `m|...|flags`; the ones Python's `re` cannot compile are
counted and left out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

PROBES_FILE = Path("/usr/share/nmap/nmap-service-probes")
# nmap product name -> smtpaudit product key (only the products smtpaudit identifies)
PRODUCT_MAP = {
    "Postfix smtpd": "postfix",
    "Exim smtpd": "exim",
    "Sendmail": "sendmail",
    "OpenSMTPD": "opensmtpd",
    "Microsoft Exchange smtpd": "exchange",
    "Microsoft Exchange 2010 smtpd": "exchange",
    "Microsoft ESMTP": "iis-smtp",
    "MDaemon smtpd": "mdaemon",
    "Alt-N MDaemon mail server": "mdaemon",
    "hMailServer smtpd": "hmailserver",
    "hMailServer": "hmailserver",
    "Haraka smtpd": "haraka",
    "qmail smtpd": "qmail",
    "Courier smtpd": "courier",
}
_FIELD = re.compile(r"\s(p|v|i|h|o|d|cpe:)(\S)")


@dataclass(frozen=True)
class NmapMatch:
    line: int
    regex: re.Pattern[str]
    fields: dict[str, str]

    def identify(self, response: str) -> tuple[str, str] | None:
        """(nmap product, nmap version) when this line matches the raw response, else None."""
        m = self.regex.search(response)
        if not m:
            return None

        def fill(template: str) -> str:
            return re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))) or "", template)

        return fill(self.fields.get("p", "")), fill(self.fields.get("v", ""))


def require(path: Path, what: str) -> None:
    if not path.exists() and not shutil.which(str(path)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} missing and CI=true (installed with the lab: .ci/install-lab.sh)", pytrace=False)
        pytest.skip(f"{what} missing (installed with the lab: .ci/install-lab.sh)")


def load_smtp_matches(path: Path = PROBES_FILE) -> tuple[list[NmapMatch], int]:
    """The `match smtp` lines in file order, and how many could not be compiled."""
    matches, failed = [], 0
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.startswith("match smtp m"):
            continue
        rest = line[len("match smtp m"):]
        delim = rest[0]
        end = rest.index(delim, 1)
        pattern, tail = rest[1:end], rest[end + 1:]
        flags_text = tail.split(" ", 1)[0]
        flags = (re.DOTALL if "s" in flags_text else 0) | (re.IGNORECASE if "i" in flags_text else 0)
        try:
            regex = re.compile(pattern, flags)
        except re.error:
            failed += 1
            continue
        fields: dict[str, str] = {}
        pos = len(flags_text)
        while True:
            fm = _FIELD.search(tail, pos)
            if not fm:
                break
            close = tail.find(fm.group(2), fm.end())
            if close < 0:
                break
            fields.setdefault(fm.group(1), tail[fm.end():close])
            pos = close + 1
        matches.append(NmapMatch(n, regex, fields))
    return matches, failed


def first_match(matches: list[NmapMatch], response: str) -> tuple[str, str, int] | None:
    """nmap's reading of a raw response: (product, version, line number) of the first matching line."""
    for m in matches:
        got = m.identify(response)
        if got:
            return got[0], got[1], m.line
    return None


def nmap_sv(host: str, port: int) -> tuple[str, str, str]:
    """Run `nmap -sV` on one port: (product, version, raw XML)."""
    require(Path("nmap"), "nmap")
    cmd = [shutil.which("nmap") or "nmap", "-sV", "-Pn", "-n", "-p", str(port), host, "-oX", "-"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240).stdout
    service = ET.fromstring(out).find(".//port/service")
    if service is None:
        return "", "", out
    return service.get("product", ""), service.get("version", ""), out
