"""Whole-process benchmark: the `smtpaudit` CLI against nmap, sslyze and testssl.sh on the real lab servers.

Every tool runs as a separate process, as a user runs it, against the same server, interleaved
(run 1 of every tool, then run 2, ...), so a server that slows down over time (Dovecot's failed-login
penalty, say) hurts all of them alike. Connections are counted by a TCP relay on loopback in front of
the server (each tool talks to the relay's port). Prints the median wall time and connections per
tool and target, then the ratios the project's goals are stated in:

    default scan / nmap SMTP scripts     goal <= 0.25
    --tag tls / sslyze                   goal <= 0.5, with fewer connections

A ratio means something only when both runs did their work, so every run is also judged complete
or not: smtpaudit by its exit status 3 (an endpoint not fully scanned), sslyze by the scan
commands its JSON marks ERROR, nmap by the failures its scripts print, testssl.sh by its "Oops"
lines. A ratio against a peer whose runs were mostly incomplete is printed but marked "not
comparable" instead of ok/MISSED. The relay also counts the 421 "too many connections" greetings
each tool caused: while a tool's leftovers fill the server's connection limit, real mail is refused.

Usage (needs the lab: sudo bash .ci/install-lab.sh):

    python benchmarks/vs_peers.py --runs 5
    python benchmarks/vs_peers.py --runs 3 --targets postfix-hardened --testssl-runs 1
    python benchmarks/vs_peers.py --skip testssl --skip nmap

The peers: nmap ``-sV`` + smtp-open-relay, smtp-commands, smtp-enum-users, ssl-enum-ciphers,
ssl-cert (the SMTP/TLS scripts skip a non-standard port without -sV); ``sslyze --starttls smtp``
with its default scan commands (from /opt/smtpaudit-lab/sslyze-venv, or --sslyze-python);
``testssl -t smtp`` (its default run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.tls_vs_peers import CountingRelay  # noqa: E402
from tests.lab.mta import Lab  # noqa: E402

DEFAULT_TARGETS = "postfix-hardened,postfix-insecure,exim-secure,exim-insecure"
SSLYZE_VENV_PYTHON = "/opt/smtpaudit-lab/sslyze-venv/bin/python"
NMAP_SCRIPTS = "smtp-open-relay,smtp-commands,smtp-enum-users,ssl-enum-ciphers,ssl-cert"


@dataclass
class Tool:
    name: str
    command: Callable[[int, Path], list[str]]  # (relay port, scratch dir) -> argv
    runs: int
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[subprocess.CompletedProcess, Path], str] = lambda proc, tmp: ""  # why a run was incomplete ("" = complete)
    output: str = ""  # the file in the scratch dir the tool writes
    times: list[float] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # one reason per incomplete run

    def mostly_incomplete(self) -> bool:
        return 2 * len(self.incomplete) > len(self.times)

    def incomplete_text(self) -> str:
        if not self.incomplete:
            return ""
        return f"  INCOMPLETE in {len(self.incomplete)}/{len(self.times)} runs: {self.incomplete[-1]}"


def smtpaudit_cmd(*extra: str) -> Callable[[int, Path], list[str]]:
    def cmd(port: int, tmp: Path) -> list[str]:
        return [sys.executable, "-m", "smtpaudit", "scan", f"127.0.0.1:{port}", "-q", "--format", "json",
                "-o", str(tmp / "smtpaudit.json"), "--fail-on", "critical", *extra]
    return cmd


def nmap_cmd(port: int, tmp: Path) -> list[str]:
    return ["nmap", "-Pn", "-n", "-sV", "-p", str(port), "--script", NMAP_SCRIPTS, "-oN", str(tmp / "nmap.txt"), "127.0.0.1"]


def sslyze_cmd(python: str) -> Callable[[int, Path], list[str]]:
    def cmd(port: int, tmp: Path) -> list[str]:
        return [python, "-m", "sslyze", "--starttls", "smtp", f"127.0.0.1:{port}", f"--json_out={tmp / 'sslyze.json'}"]
    return cmd


def testssl_cmd(binary: str) -> Callable[[int, Path], list[str]]:
    def cmd(port: int, tmp: Path) -> list[str]:
        return [binary, "--quiet", "--color", "0", "--warnings", "off", "-t", "smtp", f"127.0.0.1:{port}"]
    return cmd


def smtpaudit_check(proc: subprocess.CompletedProcess, tmp: Path) -> str:
    if proc.returncode != 3:
        return ""
    try:
        entry = json.loads((tmp / "smtpaudit.json").read_text())["endpoints"][0]
        return "not fully scanned: " + "; ".join(entry.get("status_reasons") or [entry.get("status", "?")])[:200]
    except (OSError, ValueError, KeyError, IndexError):
        return "exit 3 (not fully scanned)"


def sslyze_check(proc: subprocess.CompletedProcess, tmp: Path) -> str:
    try:
        results = json.loads((tmp / "sslyze.json").read_text())["server_scan_results"]
    except (OSError, ValueError, KeyError):
        return "no JSON result"
    for server in results:
        if server.get("scan_status") != "COMPLETED":
            return f"scan {server.get('scan_status')}: {str(server.get('connectivity_error_trace'))[:120]}"
        commands = [c for c in (server.get("scan_result") or {}).values() if isinstance(c, dict) and c.get("status") != "NOT_SCHEDULED"]
        errors = [c for c in commands if c.get("status") == "ERROR"]
        if errors:
            last = (errors[0].get("error_trace") or errors[0].get("error_reason") or "").strip().splitlines()
            return f"{len(errors)} of {len(commands)} scan commands failed ({last[-1][-110:] if last else '?'})"
    return ""


NMAP_FAILURES = ("failed to receive data", "Script execution failed", "ERROR:", "TIMEOUT")


def nmap_check(proc: subprocess.CompletedProcess, tmp: Path) -> str:
    try:
        text = (tmp / "nmap.txt").read_text(errors="replace")
    except OSError:
        return "no output"
    bad = [line.strip("|_ ") for line in text.splitlines() if any(m in line for m in NMAP_FAILURES)]
    return f"{len(bad)} script failure(s): {bad[0][:120]}" if bad else ""


def testssl_check(proc: subprocess.CompletedProcess, tmp: Path) -> str:
    bad = [line.strip() for line in (proc.stdout or "").splitlines() if "Oops" in line or "connect problem" in line]
    return f"{len(bad)} failure(s): {bad[0][:120]}" if bad else ""


def run_once(tool: Tool, relay: CountingRelay, tmp: Path) -> None:
    before, busy_before = relay.count, relay.busy
    env = {**os.environ, **tool.env}
    if tool.output:  # a run that writes nothing must not be judged by the previous run's file
        (tmp / tool.output).unlink(missing_ok=True)
    t0 = time.monotonic()
    proc = subprocess.run(tool.command(relay.listen_port, tmp), capture_output=True, text=True, env=env, timeout=1800)
    tool.times.append(time.monotonic() - t0)
    time.sleep(0.3)  # let the relay see the last connection close before counting
    tool.connections.append(relay.count - before)
    tool.busy.append(relay.busy - busy_before)
    if why := tool.check(proc, tmp):
        tool.incomplete.append(why)
    # smtpaudit exits 1 on findings (3: not complete), sslyze 1 on a failed Mozilla check, testssl.sh
    # with a count of its findings: only a process that printed nothing useful counted as failed.
    if proc.returncode not in (0, 1, 3) and not tool.name.startswith("testssl"):
        tool.failures.append(f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}")


def breakdown(report: Path) -> str:
    """smtpaudit's own per-probe timings from its last report (a breakdown, never the headline)."""
    try:
        entry = json.loads(report.read_text())["endpoints"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return "(no report)"
    probes = sorted(entry["probes"], key=lambda p: -p["duration"])[:5]
    return ", ".join(f"{p['probe']} {p['duration']:.2f}s/{p['connections']}c" for p in probes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--testssl-runs", type=int, default=1, help="testssl.sh takes about a minute per run (default: %(default)s)")
    ap.add_argument("--targets", default=DEFAULT_TARGETS, help="lab instances, comma-separated (default: %(default)s)")
    ap.add_argument("--sslyze-python", default=os.environ.get("SMTPAUDIT_SSLYZE_PYTHON", SSLYZE_VENV_PYTHON))
    ap.add_argument("--skip", action="append", default=[], choices=["nmap", "sslyze", "testssl"])
    args = ap.parse_args()

    env = {"PYTHONPATH": str(ROOT)}
    # As installed by pip: byte-compiled (this environment may set PYTHONDONTWRITEBYTECODE, which
    # would make every smtpaudit run compile its modules again; the peers are pip/apt-installed).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "smtpaudit")], check=False, capture_output=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the lab servers on kill, too
    lab = Lab()
    results: dict[str, dict[str, Tool]] = {}
    try:
        for name in args.targets.split(","):
            srv = lab.start(name)
            relay = CountingRelay(srv.host, srv.ports["smtp"])
            tools = [
                Tool("smtpaudit default", smtpaudit_cmd(), args.runs, env, smtpaudit_check, "smtpaudit.json"),
                Tool("smtpaudit --tag tls", smtpaudit_cmd("--tag", "tls"), args.runs, env, smtpaudit_check, "smtpaudit.json"),
            ]
            if "nmap" not in args.skip and shutil.which("nmap"):
                tools.append(Tool("nmap SMTP scripts", nmap_cmd, args.runs, check=nmap_check, output="nmap.txt"))
            if "sslyze" not in args.skip and Path(args.sslyze_python).exists():
                tools.append(Tool("sslyze", sslyze_cmd(args.sslyze_python), args.runs, check=sslyze_check, output="sslyze.json"))
            testssl = shutil.which("testssl") or shutil.which("testssl.sh")
            if "testssl" not in args.skip and testssl:
                tools.append(Tool("testssl.sh", testssl_cmd(testssl), max(1, args.testssl_runs), check=testssl_check))
            print(f"== {name} (127.0.0.1:{srv.ports['smtp']} via counting relay :{relay.listen_port}), "
                  f"{args.runs} interleaved runs", flush=True)
            with tempfile.TemporaryDirectory() as tmpdir:
                tmp = Path(tmpdir)
                for i in range(max(t.runs for t in tools)):
                    for tool in tools:
                        if i < tool.runs:
                            run_once(tool, relay, tmp)
                for tool in tools:
                    med = statistics.median(tool.times)
                    conns = int(statistics.median(tool.connections))
                    busy = int(statistics.median(tool.busy))
                    print(f"  {tool.name:22} median {med:7.2f} s  connections {conns:4d}  busy 421s {busy:4d}   runs "
                          f"{[round(t, 2) for t in tool.times]}" + (f"  FAILED: {tool.failures[0]}" if tool.failures else "")
                          + tool.incomplete_text(), flush=True)
                print(f"  breakdown of the last smtpaudit --tag tls run: {breakdown(tmp / 'smtpaudit.json')}")
            results[name] = {t.name: t for t in tools}
    finally:
        lab.cleanup()

    print("\nratios (median wall time of whole processes; connections from the relay):")
    for name, tools in results.items():
        parts = []
        ours, tls = tools["smtpaudit default"], tools["smtpaudit --tag tls"]
        for peer, mine, goal in (("nmap SMTP scripts", ours, 0.25), ("sslyze", tls, 0.5), ("testssl.sh", tls, None)):
            if peer not in tools:
                continue
            p = tools[peer]
            r = statistics.median(mine.times) / statistics.median(p.times)
            c_mine, c_peer = int(statistics.median(mine.connections)), int(statistics.median(p.connections))
            if mine.mostly_incomplete():
                verdict = f" MISSED ({mine.name} incomplete)"
            elif p.mostly_incomplete():
                verdict = f" not comparable ({peer} incomplete)"
            elif goal is None:
                verdict = ""
            else:
                verdict = " ok" if r <= goal and (peer != "sslyze" or c_mine < c_peer) else " MISSED"
            parts.append(f"{mine.name.split(' ', 1)[1]}/{peer} {r:.2f}x (connections {c_mine}/{c_peer}){verdict}")
        print(f"  {name:17} " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
