"""Fleet benchmark: `smtpaudit scan` of 100 / 1,000 / 10,000 loopback endpoints; wall time, endpoints/min, peak RSS.

Starts lightweight fake SMTP servers in a separate process, one per address 127.1.x.y port 2525
(loopback only), with a realistic mix: ``fast`` (well-behaved ESMTP, refuses relaying), ``tarpit``
(every error reply past the third waits 1 s, as Postfix does), ``silent`` (accepts, never greets)
and ``dead`` (nothing listens: connection refused). Then runs the smtpaudit CLI as a process with
``--output-dir`` (per-endpoint files, JSON Lines, combined JSON/SARIF streamed) and reports, from
the kernel's accounting of that process (wait4), its peak RSS and CPU time, plus the wall time,
endpoints per minute, the largest number of sockets any one host saw at once (``--per-host`` must
bound it) and the size of what was written.

    python benchmarks/fleet.py --sizes 100,1000,10000
    python benchmarks/fleet.py --sizes 1000 --concurrency 16,64,128      # choose the default
    python benchmarks/fleet.py --sizes 1000 --shards 2                   # both cores: 2 shard processes

Short timeouts (``--greeting-timeout``/``--command-timeout``, default 5 s each) keep the silent
endpoints from dominating the wall time; they are passed to the scan and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 2525
MIX = (("fast", 80), ("tarpit", 8), ("silent", 6), ("dead", 6))  # percent of the fleet


def kind_of(i: int) -> str:
    """Deterministic mix: endpoint i's kind, spread evenly over the fleet."""
    slot = (i * 37) % 100
    edge = 0
    for kind, share in MIX:
        edge += share
        if slot < edge:
            return kind
    return "fast"


def address(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


# ---------------------------------------------------------------- fake servers (child process)

class FakeSmtp(asyncio.Protocol):
    """A cheap ESMTP server: enough for every default probe, no TLS (STARTTLS not offered)."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        self.buf = b""
        self.errors = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.kind != "silent":
            self.transport.write(f"220 {self.name} ESMTP fake\r\n".encode())

    def data_received(self, data: bytes) -> None:
        if self.kind == "silent" or self.transport is None:
            return
        self.buf += data
        if len(self.buf) > 65536:
            self.transport.close()
            return
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.answer(line.strip().decode("latin-1"))

    def answer(self, line: str) -> None:
        assert self.transport is not None
        verb = line.split(" ", 1)[0].upper()
        if verb == "EHLO":
            reply = f"250-{self.name}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"
        elif verb == "HELO":
            reply = f"250 {self.name}\r\n"
        elif verb in ("MAIL", "RSET", "NOOP"):
            reply = "250 2.0.0 Ok\r\n"
        elif verb == "RCPT":
            local = "postmaster@" in line.lower() or line.lower().endswith("<postmaster>")
            reply = "250 2.1.5 Ok\r\n" if local else "554 5.7.1 Relay access denied\r\n"
        elif verb == "VRFY":
            reply = "252 2.0.0 Cannot VRFY user\r\n"
        elif verb == "HELP":
            reply = "214 2.0.0 See RFC 5321\r\n"
        elif verb == "QUIT":
            self.transport.write(b"221 2.0.0 Bye\r\n")
            self.transport.close()
            return
        else:
            reply = "502 5.5.2 Error: command not recognized\r\n"
        if reply[0] in "45":
            self.errors += 1
            if self.kind == "tarpit" and self.errors > 3:
                loop = asyncio.get_running_loop()
                loop.call_later(1.0, self._late, reply.encode())
                return
        self.transport.write(reply.encode())

    def _late(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def serve(count: int, ready: Path) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for i in range(count):
        kind = kind_of(i)
        if kind == "dead":
            continue
        host = address(i)
        name = f"mx{i}.fleet.test"
        servers.append(await loop.create_server(lambda k=kind, n=name: FakeSmtp(k, n), host, PORT, backlog=64))
    ready.write_text(str(len(servers)))
    await asyncio.Event().wait()


# ---------------------------------------------------------------- measuring (parent)

def run_scan(targets: Path, out: Path, args: argparse.Namespace, concurrency: int, shard: str | None = None) -> tuple[int, float, float, int]:
    """Run the CLI; (exit code, wall s, cpu s, peak RSS KiB) of that process alone (wait4)."""
    cmd = [sys.executable, "-m", "smtpaudit", "scan", "-f", str(targets), "-q", "--output-dir", str(out),
           "--format", "sarif", "--greeting-timeout", str(args.greeting_timeout), "--command-timeout",
           str(args.command_timeout), "--concurrency", str(concurrency), "--per-host", str(args.per_host)]
    if shard:
        cmd += ["--shard", shard]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 1, 3):
        print(f"    scan failed (exit {proc.returncode}): {err[-500:]}", flush=True)
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def sizes_of(out: Path) -> dict[str, int]:
    sizes = {}
    for p in sorted(out.glob("report*")):
        sizes[p.suffix.lstrip(".")] = sizes.get(p.suffix.lstrip("."), 0) + p.stat().st_size
    per = out / "endpoints"
    sizes["per-endpoint files"] = sum(p.stat().st_size for p in per.iterdir()) if per.is_dir() else 0
    return sizes


def peak_sockets(out: Path) -> int | None:
    """The largest number of sockets one host had open at once, from the report head."""
    peaks = []
    for report in out.glob("report*.json"):
        with report.open(encoding="utf-8") as fh:
            head = fh.read(1 << 20)
        # invocation comes before the endpoints in the streamed file; parse just that object.
        start = head.find('"peak_sockets_per_host"')
        if start < 0:
            continue
        brace = head.index("{", start)
        depth, end = 0, brace
        for end in range(brace, len(head)):
            depth += {"{": 1, "}": -1}.get(head[end], 0)
            if depth == 0:
                break
        peaks.extend(json.loads(head[brace:end + 1]).values())
    return max(peaks) if peaks else None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--concurrency", default="64", help="comma-separated values to compare (default: %(default)s)")
    ap.add_argument("--per-host", type=int, default=2)
    ap.add_argument("--shards", type=int, default=1, help="run N shard processes at once (--shard i/N), e.g. 2 for two cores")
    ap.add_argument("--greeting-timeout", type=float, default=5.0)
    ap.add_argument("--command-timeout", type=float, default=5.0)
    ap.add_argument("--keep", metavar="DIR", help="keep the output directories under DIR")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "smtpaudit")], check=False, capture_output=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"mix: {', '.join(f'{k} {p}%' for k, p in MIX)}; timeouts greeting {args.greeting_timeout:g}s command "
          f"{args.command_timeout:g}s; per-host {args.per_host}; shards {args.shards}; {os.cpu_count()} cores", flush=True)
    for count in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="smtpaudit-fleet-"))
        ready = tmp / "ready"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(count), str(ready)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            while not ready.exists():
                if server.poll() is not None:
                    raise SystemExit(f"fake servers did not start (exit {server.returncode})")
                time.sleep(0.2)
            targets = tmp / "fleet.txt"
            targets.write_text("".join(f"smtp://{address(i)}:{PORT}\n" for i in range(count)))
            for conc in (int(c) for c in args.concurrency.split(",")):
                outs = [tmp / f"out-{conc}-{s}" for s in range(args.shards)]
                t0 = time.monotonic()
                if args.shards == 1:
                    code, wall, cpu, rss = run_scan(targets, outs[0], args, conc)
                    rss_list, cpu_total = [rss], cpu
                else:
                    import concurrent.futures as cf

                    with cf.ThreadPoolExecutor(args.shards) as ex:
                        futs = [ex.submit(run_scan, targets, outs[s], args, conc, f"{s + 1}/{args.shards}") for s in range(args.shards)]
                        results = [f.result() for f in futs]
                    wall = time.monotonic() - t0
                    rss_list, cpu_total = [r[3] for r in results], sum(r[2] for r in results)
                merge_note = ""
                if args.shards > 1:
                    # The shards' reports merged as the docs say (docs/fleets.md): `smtpaudit report`, streamed.
                    shard_files = [str(f) for o in outs for f in o.glob("report-shard-*.json")]
                    t1 = time.monotonic()
                    merge = subprocess.Popen([sys.executable, "-m", "smtpaudit", "report", *shard_files, "--format", "json",
                                              "-o", str(tmp / "merged.json"), "-q"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    _, _, m_usage = os.wait4(merge.pid, 0)
                    merged_endpoints = sum(1 for line in (tmp / "merged.json").open(encoding="utf-8") if line.startswith('    {'))
                    merge_note = (f"; merge with `smtpaudit report`: {time.monotonic() - t1:.1f} s, peak RSS "
                                  f"{m_usage.ru_maxrss / 1024:.1f} MB, {merged_endpoints} endpoints, {human((tmp / 'merged.json').stat().st_size)}")
                    (tmp / "merged.json").unlink()
                sizes_written: dict[str, int] = {}
                for o in outs:
                    for k, v in sizes_of(o).items():
                        sizes_written[k] = sizes_written.get(k, 0) + v
                peaks = [p for p in (peak_sockets(o) for o in outs) if p is not None]
                print(f"{count:6d} endpoints  concurrency {conc:4d}: wall {wall:7.1f} s  {count / wall * 60:8.0f} endpoints/min  "
                      f"peak RSS {max(rss_list) / 1024:6.1f} MB{' per process' if args.shards > 1 else ''}  CPU {cpu_total:6.1f} s "
                      f"({cpu_total / count * 1000:.1f} ms/endpoint)  max sockets per host {max(peaks) if peaks else '?'}", flush=True)
                print("        written: " + ", ".join(f"{k} {human(v)}" for k, v in sizes_written.items()) + merge_note, flush=True)
                if args.keep:
                    for o in outs:
                        shutil.copytree(o, Path(args.keep) / f"{count}-{o.name}", dirs_exist_ok=True)
                for o in outs:
                    shutil.rmtree(o, ignore_errors=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        try:
            asyncio.run(serve(int(sys.argv[2]), Path(sys.argv[3])))
        except KeyboardInterrupt:
            pass
        raise SystemExit(0)
    raise SystemExit(main())
