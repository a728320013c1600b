"""Whole-process cost of everyday commands: median wall time of N runs of the real CLI.

Usage: python benchmarks/startup.py [--runs 15] [--against OTHER_CHECKOUT] [--instance postfix-hardened]

Runs ``python -m smtpaudit`` as a process for ``--version``, ``rules validate``, a ``--tag tls``
and a default scan of a lab server (tests/lab, started here), and ``report`` of that scan to
HTML. With ``--against``, the same commands of another checkout (e.g. ``git worktree add
/tmp/before main``) run interleaved with this one's, so machine load hits both alike. Both
trees are byte-compiled first, as pip installs them (this environment may set
PYTHONDONTWRITEBYTECODE, which would make every run compile every module again); the per-user
cache (smtpaudit/cache.py) is warm after the first, discarded, round: the steady state of a user
who runs smtpaudit more than once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lab.mta import Lab  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--against", type=Path, help="another checkout to compare with (run interleaved)")
    ap.add_argument("--instance", default="postfix-hardened")
    args = ap.parse_args()
    trees = {"this": ROOT} | ({"other": args.against.resolve()} if args.against else {})
    for tree in trees.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "smtpaudit")], check=False, capture_output=True)
    lab = Lab()
    try:
        target = lab.start(args.instance).targets["smtp"]
        with tempfile.TemporaryDirectory() as tmp:
            commands = {
                "--version": ["--version"],
                "rules validate": ["rules", "validate", "{tree}/rules"],
                "scan --tag tls": ["scan", target, "--tag", "tls", "-q", "-o", f"{tmp}/tls-{{name}}.json"],
                "scan (default)": ["scan", target, "-q", "-o", f"{tmp}/scan-{{name}}.json"],
                "report -> html": ["report", f"{tmp}/scan-{{name}}.json", "-q", "-o", f"{tmp}/scan-{{name}}.html"],
            }
            for label, template in commands.items():
                times: dict[str, list[float]] = {name: [] for name in trees}
                for i in range(args.runs + 1):
                    order = list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))
                    for name, tree in order:
                        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
                        env["PYTHONPATH"] = str(tree)
                        argv = [a.format(tree=tree, name=name) for a in template]
                        t0 = time.perf_counter()
                        # cwd: a neutral directory (python -m puts the working directory first on sys.path).
                        proc = subprocess.run([sys.executable, "-m", "smtpaudit", *argv], env=env, cwd=tmp,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                        elapsed = time.perf_counter() - t0
                        if proc.returncode not in (0, 1):
                            sys.exit(f"{name}: smtpaudit {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-500:]}")
                        if i:  # the first round warms the OS caches and the smtpaudit cache
                            times[name].append(elapsed)
                cells = "   ".join(f"{name} {statistics.median(t) * 1000:7.1f} ms" for name, t in times.items())
                print(f"{label:16} {cells}   (median of {args.runs})", flush=True)
    finally:
        lab.cleanup()


if __name__ == "__main__":
    main()
