#!/usr/bin/env python3
"""Regenerate reports/samples/ from the real-server lab (tests/lab): never edit the samples by hand.

For each lab instance: a scan of its SMTP, submission and SMTPS ports as JSON, SARIF and HTML;
then the whole lab as one fleet report (JSON/SARIF/HTML), a baseline created from the hardened
Postfix, a diff of the insecure Exim before and after a config fix, and a screenshot of the
insecure Postfix HTML report taken in headless Chromium.

    python3 scripts/regenerate-samples.py            # needs .ci/install-lab.sh and .ci/install-report-tools.sh

The lab's ports are random, so the samples name 127.0.0.1 and whatever ports were free.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smtpaudit import diff as differ  # noqa: E402
from smtpaudit.atomic import write_text  # noqa: E402
from smtpaudit.cli import main  # noqa: E402
from smtpaudit.report import html, model, sarif  # noqa: E402
from tests.lab.mta import Lab, missing_binaries  # noqa: E402
from tests.report.browser import find_chromium, open_page  # noqa: E402

OUT = ROOT / "reports" / "samples"
INSTANCES = ("postfix-hardened", "postfix-insecure", "exim-secure", "exim-insecure", "opensmtpd")
SCAN_ARGS = ("-q", "--skip-tag", "dns", "--greeting-timeout", "5", "--timeout", "120")


EXTRA_ARGS: list[str] = []


def scan(targets_file: Path, out: Path) -> dict:
    # Relative paths so the SARIF locations are repository-relative (reports/samples/...).
    main(["scan", "-f", str(targets_file.relative_to(ROOT)), "-o", str(out.relative_to(ROOT)), *SCAN_ARGS, *EXTRA_ARGS])
    return model.load(out)


def write_all(report: dict, stem: str) -> None:
    write_text(OUT / f"{stem}.sarif", sarif.dumps(report, srcroot=ROOT))
    write_text(OUT / f"{stem}.html", html.render(report))


def main_() -> int:
    os.chdir(ROOT)
    available = [n for n in INSTANCES if not missing_binaries(n)]
    if not available:
        print("no lab server installed: run .ci/install-lab.sh", file=sys.stderr)
        return 2
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    lab = Lab(Path(tempfile.mkdtemp(prefix="smtpaudit-samples-")))
    try:
        servers = {name: lab.start(name) for name in available}
        # The secure instances use the lab's own CA, as a company would for internal servers:
        # trust it, so their samples show what a private-CA deployment looks like.
        EXTRA_ARGS[:] = ["--ca-file", str(lab.pki.ca_cert)]
        fleet_lines = []
        for name, srv in servers.items():
            lines = [srv.targets[k] for k in ("smtp", "submission", "smtps")]
            fleet_lines += lines
            tf = OUT / f"{name}.targets"
            tf.write_text(f"# lab instance {name}\n" + "\n".join(lines) + "\n")
            write_all(scan(tf, OUT / f"{name}.json"), name)
            print(f"{name}: done", file=sys.stderr)
        tf = OUT / "lab-fleet.targets"
        tf.write_text("# every lab instance, all ports\n" + "\n".join(fleet_lines) + "\n")
        fleet = scan(tf, OUT / "lab-fleet.json")
        write_all(fleet, "lab-fleet")
        if "postfix-hardened" in servers:
            main(["baseline", "create", "reports/samples/postfix-hardened.json", "-o", "reports/samples/baseline-example.toml",
                  "--justification", "example: accepted while the migration is pending", "--expires", "2099-12-31"])
        if "exim-insecure" in servers:
            srv = servers["exim-insecure"]
            before = model.load(OUT / "exim-insecure.json")
            srv.restart(ALLOW_VRFY=None, ALLOW_EXPN=None, smtp_banner="$smtp_active_hostname ESMTP")
            after = scan(OUT / "exim-insecure.targets", OUT / "exim-insecure-fixed.json")
            d = differ.compare(before, after)
            write_text(OUT / "diff-exim-insecure.json", json.dumps(d, indent=2) + "\n")
            write_text(OUT / "diff-exim-insecure.html", html.render_diff(d))
            (OUT / "exim-insecure-fixed.json").unlink()  # the diff carries what changed
            srv.reset()
        if "postfix-insecure" in servers and find_chromium():
            page = open_page(OUT / "postfix-insecure.html", screenshot=OUT / "postfix-insecure.png", max_height=2600)
            if page.errors or page.requests:
                print(f"chromium: errors {page.errors} requests {page.requests}", file=sys.stderr)
                return 1
            print(f"screenshot: {page.screenshot.relative_to(ROOT)}", file=sys.stderr)
    finally:
        lab.stop_all()
        lab.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
