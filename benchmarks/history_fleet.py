"""Size of the history database after N nights of a 50-endpoint fleet, and the wall time of
`smtpaudit history DB trend` and `history DB findings` on it.

Usage: python benchmarks/history_fleet.py [--nights 30] [--endpoints 50] [--db /tmp/fleet-history.db]

Every night is a real scan (default rules, DNS rules skipped) of in-process fake MTAs on
loopback: 45 listening (TLS with self-signed certificates; some relay, some disclose users via
VRFY, a few change configuration on given nights) and 5 dead ports. Reports are recorded with
a fixed clock (night n = 2026-10-01T02:00Z + n-1 days) through `smtpaudit report --history`.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smtpaudit.cli import main as cli  # noqa: E402
from tests.fakes.certs import server_context  # noqa: E402
from tests.fakes.mta import FakeMta  # noqa: E402
from tests.history.conftest import LoopThread, at  # noqa: E402


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(argv: list[str], runs: int = 5) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(runs):
        t0 = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        times.append(time.monotonic() - t0)
        size = len(out.stdout)
    return statistics.median(times), size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--endpoints", type=int, default=50)
    ap.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "smtpaudit-fleet-history.db"))
    args = ap.parse_args()
    db = Path(args.db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="smtpaudit-history-bench-"))
    loop = LoopThread()
    mtas = []
    live = args.endpoints - 5
    for i in range(live):
        d = tmp / f"pki{i}"
        d.mkdir()
        mtas.append(FakeMta(tls_context=server_context(d), open_relay=(i % 15 == 0), vrfy="truthful" if i % 4 == 0 else "502",
                            banner=f"mx{i}.example.test ESMTP Postfix (3.{7 + i % 3}.{i % 10})"))
        loop.call(mtas[-1].start())
    targets = [f"127.0.0.1:{m.port}" for m in mtas] + [f"127.0.0.1:{dead_port()}" for _ in range(5)]
    (tmp / "fleet.txt").write_text("\n".join(targets) + "\n")
    scan_times = []
    try:
        for night in range(1, args.nights + 1):
            for i, m in enumerate(mtas):  # a few servers change configuration on given nights
                if i % 10 == 1:
                    m.vrfy = "truthful" if (night // 7) % 2 else "502"
                if i % 15 == 0:
                    m.open_relay = night < 10 + i
            path = tmp / f"night{night:02d}.json"
            t0 = time.monotonic()
            cli(["scan", "-f", str(tmp / "fleet.txt"), "-o", str(path), "-q", "--skip-tag", "dns", "--connect-timeout", "2",
                 "--greeting-timeout", "3", "--command-timeout", "3", "--timeout", "60", "--concurrency", "16"])
            scan_times.append(time.monotonic() - t0)
            report = json.loads(path.read_text())
            report["started"] = at(night)
            path.write_text(json.dumps(report))
            assert cli(["report", str(path), "--history", str(db), "-q"]) == 0
            print(f"night {night}: scan {scan_times[-1]:.1f}s, db {db.stat().st_size / 1e6:.2f} MB", file=sys.stderr)
    finally:
        for m in mtas:
            loop.call(m.stop())
        loop.close()
    raw = sum(p.stat().st_size for p in tmp.glob("night*.json"))
    print(f"{args.nights} nights x {args.endpoints} endpoints: database {db.stat().st_size / 1e6:.2f} MB "
          f"(raw JSON reports {raw / 1e6:.1f} MB)")
    for sub in (["trend"], ["findings"], ["trend", "--format", "json"], ["findings", "--all", "--format", "json"]):
        argv = [sys.executable, "-m", "smtpaudit", "history", str(db), *sub]
        t, size = timed(argv)
        print(f"  smtpaudit history DB {' '.join(sub)}: {t:.2f} s median of 5 ({size} bytes of output)")
    t, _ = timed([sys.executable, "-m", "smtpaudit", "--version"])
    print(f"  (python startup + import: {t:.2f} s)")


if __name__ == "__main__":
    main()
