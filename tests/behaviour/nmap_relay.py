"""Running nmap's smtp-open-relay against a port and reading which of its 16 variants it saw accepted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from smtpaudit.probes.smtp.relay import FROM_LOCAL

_LINE = re.compile(r"^\|[_ ]\s*MAIL FROM:<([^>]*)> -> RCPT TO:<(.*)>\s*$")
_COUNT = re.compile(r"open relay \((\d+)/16 tests\)")


def nmap_binary() -> str:
    """Path to nmap; skips the test (fails it when CI=true) when nmap is not installed."""
    path = shutil.which("nmap")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nmap is not installed and CI=true (apt-get install nmap)", pytrace=False)
        pytest.skip("nmap not installed (apt-get install nmap)")
    return path


def nmap_relay(host: str, port: int, domain: str, ip: str) -> tuple[int, set[tuple[str, str]], str]:
    """(accepted count, {(mail_from, rcpt_to)} with nmap's sender local part mapped to ours, raw output).

    ``-sV --version-light`` makes nmap recognise SMTP on a non-standard port (its portrule needs
    the service name); ``-vv`` makes the script list every accepted variant.
    """
    cmd = [nmap_binary(), "-Pn", "-n", "-vv", "-sV", "--version-light", "-p", str(port), "--script", "smtp-open-relay",
           "--script-args", f"smtp-open-relay.domain={domain},smtp-open-relay.ip={ip}", host]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    pairs = set()
    for line in out.splitlines():
        m = _LINE.match(line)
        if m:
            sender = m.group(1).replace("antispam@", f"{FROM_LOCAL}@", 1) if m.group(1) else ""
            pairs.add((sender, m.group(2)))
    count = _COUNT.search(out)
    return (int(count.group(1)) if count else 0), pairs, out


def our_pairs(facts: dict) -> set[tuple[str, str]]:
    return {(a["mail_from"], a["rcpt_to"]) for a in facts["smtp.relay.attempts"] if a["accepted"]}
