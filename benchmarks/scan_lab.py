"""Wall time of a default `smtpaudit scan` of each real lab server (median of N runs).

Usage: python benchmarks/scan_lab.py [--runs 3] [--instances postfix-hardened,postfix-insecure]
Starts the lab (tests/lab, needs .ci/install-lab.sh), scans each instance's SMTP port with the
default rule set, prints wall time, connections, grade and finding count, then stops the lab.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab.mta import Lab  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--instances", default="postfix-hardened,postfix-insecure")
    ap.add_argument("--extra", default="", help="extra scan arguments, space-separated")
    args = ap.parse_args()
    lab = Lab()
    try:
        for name in args.instances.split(","):
            srv = lab.start(name)
            target = srv.targets["smtp"]
            times = []
            report = {}
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "r.json"
                    t0 = time.monotonic()
                    subprocess.run([sys.executable, "-m", "smtpaudit", "scan", target, "-q", "-o", str(out), *args.extra.split()],
                                   check=False)
                    times.append(time.monotonic() - t0)
                    report = json.loads(out.read_text())
            entry = report["endpoints"][0]
            conns = sum(p["connections"] for p in entry["probes"])
            per_probe = ", ".join(f"{p['probe']} {p['duration']:.2f}s/{p['connections']}c" for p in entry["probes"])
            print(f"{name:18} median {statistics.median(times):5.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})  "
                  f"connections {conns}  grade {entry['score']['grade'] if entry['score'] else '-'}  findings {len(entry['findings'])}")
            print(f"{'':18} {per_probe}")
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
