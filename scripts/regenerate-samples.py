#!/usr/bin/env python3
"""Regenerate reports/samples/ from the real-server lab (tests/lab): never edit the samples by hand.

    python3 scripts/regenerate-samples.py     # needs .ci/install-lab.sh and .ci/install-report-tools.sh
    git status --short reports/samples       # empty when neither the code nor the lab changed

What it writes (small on purpose; the JSON reports carry everything else):
  postfix-insecure.{targets,json,sarif,html}  the insecure Postfix, all three ports
  lab-fleet.{targets,json,sarif,html}         a 10-endpoint fleet: every lab instance's SMTP and SMTPS port
  diff-exim-insecure.{json,html}              the insecure Exim before and after a config fix
  baseline-example.toml                       a baseline accepting the hardened Postfix's findings
  *-1400.png, *-390.png                       headless-Chromium screenshots at desktop and phone width

Samples that do not churn: the lab listens on fixed ports (FIXED_PORTS), serves a committed
certificate set (tests/lab/sample-pki, generated once with fixed validity dates), and the times a
scan records (start, durations, transcript offsets, days until a certificate expires) are frozen
to FIXED_CLOCK before rendering, so two runs against unchanged code give identical files.
Screenshots are retaken only when their HTML changed, since a browser update alone must not
change a sample.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtpaudit import diff as differ  # noqa: E402
from smtpaudit.atomic import write_text  # noqa: E402
from smtpaudit.cli import main  # noqa: E402
from smtpaudit.report import html, model, sarif  # noqa: E402
from tests.lab import certs  # noqa: E402
from tests.lab.mta import Lab, missing_binaries  # noqa: E402
from tests.report.browser import Chromium, find_chromium  # noqa: E402

OUT = ROOT / "reports" / "samples"
SAMPLE_PKI = ROOT / "tests" / "lab" / "sample-pki"
INSTANCES = ("postfix-hardened", "postfix-insecure", "exim-secure", "exim-insecure", "opensmtpd")
# Fixed loopback ports below the kernel's ephemeral range (so no test lab picks them): (smtp, submission, smtps) per instance.
FIXED_PORTS = {name: {"smtp": 21025 + 100 * i, "submission": 21087 + 100 * i, "smtps": 21065 + 100 * i}
               for i, name in enumerate(INSTANCES)}
FIXED_CLOCK = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
PKI_NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
PKI_NOT_AFTER = dt.datetime(2035, 12, 1, tzinfo=dt.timezone.utc)
SCAN_ARGS = ("-q", "--skip-tag", "dns", "--greeting-timeout", "5", "--timeout", "120",
             "--ca-file", str(SAMPLE_PKI.relative_to(ROOT) / "ca.pem"))
SCREENSHOTS = {"postfix-insecure": (1400, 390), "lab-fleet": (1400, 390)}
SHOT_HEIGHT = {1400: 1800, 390: 2400}


# -- the committed sample PKI --------------------------------------------------------------------
def ensure_sample_pki() -> None:
    """Create tests/lab/sample-pki once (the lab's kinds of certificate, valid until 2035); afterwards it is only read."""
    files = ["ca.pem", "ca.key", "rsa.pem", "rsa-chain.pem", "rsa.key", "ec.pem", "ec-chain.pem", "ec.key", "weak.pem", "weak.key"]
    if all((SAMPLE_PKI / f).is_file() for f in files):
        return
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    SAMPLE_PKI.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = certs._make_ca(SAMPLE_PKI, PKI_NOT_BEFORE + dt.timedelta(days=1))  # valid 2026-01-01 + 3650 days
    san = [x509.DNSName(n) for n in certs.LEAF_DNS_NAMES] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in certs.LEAF_IPS]
    for stem, key in (("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)), ("ec", ec.generate_private_key(ec.SECP256R1()))):
        cert = (x509.CertificateBuilder().subject_name(certs._name(certs.LAB_HOSTNAME)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(PKI_NOT_BEFORE).not_valid_after(PKI_NOT_AFTER)
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (SAMPLE_PKI / f"{stem}.pem").write_bytes(certs._pem(cert))
        (SAMPLE_PKI / f"{stem}-chain.pem").write_bytes(certs._pem(cert) + certs._pem(ca_cert))
        certs._write_key(SAMPLE_PKI / f"{stem}.key", key)
    # RSA-1024/SHA-1 self-signed like the lab's, signed by the openssl CLI (cryptography refuses SHA-1), 10 years.
    certs._write_key(SAMPLE_PKI / "weak.key", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    alt = ",".join([f"DNS:{n}" for n in certs.LEAF_DNS_NAMES] + [f"IP:{ip}" for ip in certs.LEAF_IPS])
    subprocess.run(["openssl", "req", "-x509", "-new", "-sha1", "-days", "3650", "-key", str(SAMPLE_PKI / "weak.key"),
                    "-out", str(SAMPLE_PKI / "weak.pem"), "-subj", f"/O=smtpaudit lab/CN={certs.LAB_HOSTNAME}",
                    "-addext", f"subjectAltName={alt}", "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    (SAMPLE_PKI / "README.md").write_text(
        "Lab certificates for scripts/regenerate-samples.py only: a throwaway CA and leaves for mail.lab.test,\n"
        "localhost and 127.0.0.1 (RSA-2048 and EC P-256 signed by the CA, valid 2026-01-01 to 2035-12-01; an\n"
        "RSA-1024/SHA-1 self-signed one), committed so the samples do not change with every regeneration.\n"
        "Test keys for loopback lab servers: never use them anywhere else.\n")


def lab_with_sample_pki() -> Lab:
    run_root = Path(tempfile.mkdtemp(prefix="smtpaudit-samples-"))
    pki = run_root / "pki"
    shutil.copytree(SAMPLE_PKI, pki)
    for p in pki.iterdir():
        p.chmod(0o600 if p.suffix == ".key" else 0o644)
    return Lab(run_root)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the MTAs bind: connections of the previous run in TIME_WAIT do not make a port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- frozen clock and stable content ------------------------------------------------------------
# Random names the probes send (so no real user is hit) and the date in an Exim banner.
RANDOM_NAME = re.compile(r"smtpaudit-[0-9a-f]{12}")
BANNER_DATE = re.compile(r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}\b")
# Measured times: frozen to whole seconds in the sample (a 0.012 s greeting is shown as 0).
TIMING_FACTS = ("smtp.greeting.seconds", "smtp.limits.greeting_delay", "smtp.limits.idle_watched", "smtp.limits.idle_timeout",
                "smtp.auth_throttle.first_latency", "smtp.auth_throttle.last_latency", "smtp.connlimit.greeting_seconds_max",
                "smtp.connlimit.rate_seconds")
# Races the lab really has: whether an EHLO sent right after connect lands before the greeting is
# decided by the scheduler, so the early-talker outcome may differ between two runs of the same
# server. A regeneration whose only differences are these keeps the committed sample.
RACY_FACTS = ("smtp.limits.early_talker_rejected", "smtp.limits.early_talker_reply", *TIMING_FACTS)
RACY_RULES = ("early-talker-accepted",)
# How a handshake the server breaks off ends (an alert, or a reset first) is also a race; that it
# failed is not. Compared as "failed", reported as observed.
HANDSHAKE_ERROR = re.compile(r"(TLS handshake failed|connection lost during the TLS handshake)(: [^;\"]*)?")

def iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def freeze(report: dict[str, Any], clock: dt.datetime = FIXED_CLOCK) -> dict[str, Any]:
    """The report as if scanned at ``clock`` in no time: times a scan records are the only part of a
    sample that changes between runs against the same servers."""
    text = RANDOM_NAME.sub("smtpaudit-000000000000", json.dumps(report))
    text = BANNER_DATE.sub(clock.strftime("%a, %d %b %Y %H:%M:%S +0000"), text)
    r = json.loads(text)
    r["started"] = r["finished"] = iso(clock)
    r["duration"] = 0.0
    if "evaluated" in r.get("invocation", {}):
        r["invocation"]["evaluated"] = iso(clock)
    for e in r["endpoints"]:
        e["started"] = iso(clock)
        e["duration"] = 0.0
        for p in e.get("probes", []):
            p["duration"] = 0.0
        for lines in (e.get("transcripts") or {}).values():
            for ln in lines:
                ln["t"] = 0.0
        facts = e.get("facts") or {}
        for name in TIMING_FACTS:
            if isinstance(facts.get(name), (int, float)) and not isinstance(facts[name], bool):
                facts[name] = float(round(facts[name]))
        if isinstance(facts.get("tls.cert.not_after"), str) and isinstance(facts.get("tls.cert.days_left"), int):
            not_after = dt.datetime.fromisoformat(facts["tls.cert.not_after"].replace("Z", "+00:00"))
            facts["tls.cert.days_left"] = (not_after - clock).days
    return r


def stable_view(report: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for a new scan to count as unchanged: everything but the lab's races
    (RACY_FACTS/RACY_RULES) and transcripts (concurrent connections interleave differently)."""
    r = json.loads(HANDSHAKE_ERROR.sub("handshake failed", json.dumps(report)))
    for e in r["endpoints"]:
        e.pop("transcripts", None)
        for p in e.get("probes", []):
            p.pop("connections", None)  # a retried TLS hello counts one more; it decides nothing
        e["facts"] = {k: v for k, v in (e.get("facts") or {}).items() if k not in RACY_FACTS}
        # A message is rendered (and clipped) from the facts compared above.
        e["findings"] = [{k: v for k, v in f.items() if k != "message"} for f in e.get("findings", []) if f["rule_id"] not in RACY_RULES]
        for key in ("passed", "not_applicable"):
            e[key] = [x for x in e.get(key, []) if x not in RACY_RULES]
        e["not_evaluated"] = [x for x in e.get("not_evaluated", []) if x["rule_id"] not in RACY_RULES]
    r.pop("summary", None)  # counts include the racy info finding
    return r


def scan_sample(targets_file: Path, stem: str, attempts: int = 3) -> dict[str, Any]:
    """The sample's report: the committed one while a fresh scan still reproduces it (up to
    ``attempts`` scans: a lab server that stalls once must not rewrite the sample), else a fresh
    scan, preferring one that two scans in a row agree on."""
    path = OUT / f"{stem}.json"
    old = stable_view(model.load(path)) if path.is_file() else None
    seen: list[dict[str, Any]] = []
    for _ in range(attempts):
        new = freeze(scan(targets_file, f".{stem}.scan"))
        view = stable_view(new)
        if old is not None and view == old:
            return model.load(path)
        if seen and stable_view(seen[-1]) == view:
            return new
        seen.append(new)
    print(f"{stem}: scans disagree with each other and with the committed sample; writing the last one", file=sys.stderr)
    return seen[-1]


# -- writing ---------------------------------------------------------------------------------------
def write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)  # atomic: an interrupted regeneration leaves the old sample whole
    return True


def scan(targets_file: Path, stem: str, *extra: str) -> dict[str, Any]:
    """Scan with the real CLI (relative paths, so SARIF locations are repository-relative)."""
    # A fixed output path: the report records its command line.
    raw = OUT / f"{stem}.json"
    main(["scan", "-f", str(targets_file.relative_to(ROOT)), "-o", str(raw.relative_to(ROOT)), *SCAN_ARGS, *extra])
    report = model.load(raw)
    raw.unlink()
    return report


def write_all(report: dict[str, Any], stem: str) -> list[str]:
    changed = []
    for ext, text in (("json", model.dumps(report)), ("sarif", sarif.dumps(report, srcroot=ROOT)), ("html", html.render(report))):
        if write_if_changed(OUT / f"{stem}.{ext}", text):
            changed.append(f"{stem}.{ext}")
    return changed


def screenshots(stems: list[str], changed: list[str]) -> None:
    """Screenshots of the samples whose HTML changed (or that have none yet)."""
    binary = find_chromium()
    if binary is None:
        print("chromium not installed: screenshots not updated (.ci/install-report-tools.sh)", file=sys.stderr)
        return
    with Chromium(binary) as browser:
        for stem in stems:
            for width in SCREENSHOTS[stem]:
                shot = OUT / f"{stem}-{width}.png"
                if shot.is_file() and stem not in changed:
                    continue
                page = browser.open(OUT / f"{stem}.html", screenshot=shot, width=width, max_height=SHOT_HEIGHT[width])
                if page.errors or page.requests:
                    raise SystemExit(f"chromium: {stem}.html: errors {page.errors} requests {page.requests}")
                print(f"screenshot: {shot.relative_to(ROOT)}", file=sys.stderr)


def main_() -> int:
    os.chdir(ROOT)
    available = [n for n in INSTANCES if not missing_binaries(n)]
    if not available:
        print("no lab server installed: run .ci/install-lab.sh", file=sys.stderr)
        return 2
    busy = [p for n in available for p in FIXED_PORTS[n].values() if not port_free(p)]
    if busy:
        print(f"fixed sample ports in use: {busy}; stop what listens there and retry", file=sys.stderr)
        return 2
    ensure_sample_pki()
    OUT.mkdir(parents=True, exist_ok=True)
    keep = {"README.md"}
    changed: list[str] = []
    lab = lab_with_sample_pki()
    try:
        servers = {}
        for name in available:
            srv = lab.get(name)
            srv.ports = dict(FIXED_PORTS[name])
            srv.start()
            servers[name] = srv
        if "postfix-insecure" in servers:
            srv = servers["postfix-insecure"]
            tf = OUT / "postfix-insecure.targets"
            write_if_changed(tf, "# lab instance postfix-insecure\n" + "".join(f"{srv.targets[k]}\n" for k in ("smtp", "submission", "smtps")))
            changed += write_all(scan_sample(tf, "postfix-insecure"), "postfix-insecure")
            keep |= {f"postfix-insecure.{x}" for x in ("targets", "json", "sarif", "html")}
        tf = OUT / "lab-fleet.targets"
        lines = [servers[n].targets[k] for n in servers for k in ("smtp", "smtps")]
        write_if_changed(tf, "# every lab instance, SMTP (25) and SMTPS (465) ports\n" + "\n".join(lines) + "\n")
        fleet = scan_sample(tf, "lab-fleet")
        changed += write_all(fleet, "lab-fleet")
        keep |= {f"lab-fleet.{x}" for x in ("targets", "json", "sarif", "html")}
        if "postfix-hardened" in servers:
            from smtpaudit import baseline as bl
            from smtpaudit.fleet import merge_reports, single_endpoint_report

            hardened = [e for e in fleet["endpoints"] if e["endpoint"]["port"] in FIXED_PORTS["postfix-hardened"].values()]
            one = merge_reports([single_endpoint_report(fleet, e) for e in hardened])
            text = bl.create(one, justification="example: accepted while the migration is pending",
                             expires=dt.date(2099, 12, 31), source="reports/samples/lab-fleet.json")
            changed += ["baseline-example.toml"] if write_if_changed(OUT / "baseline-example.toml", text) else []
            keep.add("baseline-example.toml")
        if "exim-insecure" in servers:
            srv = servers["exim-insecure"]
            tf = Path(tempfile.mkdtemp(prefix="smtpaudit-sample-diff-")) / "exim.targets"
            tf.write_text(f"{srv.targets['smtp']}\n")
            rel = ROOT / "reports" / "samples" / ".exim-insecure.targets"
            shutil.copy(tf, rel)
            try:
                # The diff is about VRFY, EXPN and the banner: the racy early-talker rule stays out of it.
                before = freeze(scan(rel, ".exim-before.scan", "--skip-rule", *RACY_RULES))
                srv.restart(ALLOW_VRFY=None, ALLOW_EXPN=None, smtp_banner="$smtp_active_hostname ESMTP")
                after = freeze(scan(rel, ".exim-after.scan", "--skip-rule", *RACY_RULES), FIXED_CLOCK + dt.timedelta(days=1))
            finally:
                rel.unlink()
                shutil.rmtree(tf.parent, ignore_errors=True)
            d = differ.compare(before, after)
            for ext, text in (("json", json.dumps(d, indent=2) + "\n"), ("html", html.render_diff(d))):
                if write_if_changed(OUT / f"diff-exim-insecure.{ext}", text):
                    changed.append(f"diff-exim-insecure.{ext}")
            keep |= {"diff-exim-insecure.json", "diff-exim-insecure.html"}
            srv.reset()
    finally:
        lab.stop_all()
        lab.cleanup()
    stems = [s for s in SCREENSHOTS if (OUT / f"{s}.html").is_file()]
    screenshots(stems, changed=[s for s in stems if f"{s}.html" in changed])
    for stem in stems:
        keep |= {f"{stem}-{w}.png" for w in SCREENSHOTS[stem]}
    for old in OUT.iterdir():  # samples this script no longer makes
        if old.name not in keep:
            old.unlink()
    digest = hashlib.sha256(b"".join((OUT / n).read_bytes() for n in sorted(keep) if (OUT / n).is_file())).hexdigest()[:16]
    print(f"samples: {len(keep)} files, {sum((OUT / n).stat().st_size for n in keep if (OUT / n).is_file()) // 1024} KiB, "
          f"changed: {', '.join(changed) or 'none'}; digest {digest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
