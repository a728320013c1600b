"""Benchmark: full TLS audit of one endpoint by smtpaudit, sslyze and testssl.sh (when installed).

Same scope for all: SSLv2..TLS 1.3, every suite, the certificate. Prints the median wall time of
several runs, the connections each tool opened (counted by a loopback TCP relay in front of the
server), and the ratios to smtpaudit. Not a test: run it by hand, e.g.

    python benchmarks/tls_vs_peers.py --target 127.0.0.1:2525 --starttls --runs 5
    python benchmarks/tls_vs_peers.py --local weak --runs 5      # a built-in Python STARTTLS server

sslyze may live in another interpreter: --sslyze-python PATH (or SMTPAUDIT_SSLYZE_PYTHON).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smtpaudit.probes.base import ProbeContext, Timeouts  # noqa: E402
from smtpaudit.probes.tls.certificate import TlsCertificateProbe  # noqa: E402
from smtpaudit.probes.tls.protocols import TlsProtocolsProbe  # noqa: E402
from smtpaudit.targets import Endpoint, Mode, Role  # noqa: E402


class CountingRelay:
    """127.0.0.1:<port> -> target; counts accepted connections (each tool's connection count) and
    the connections the server turned away with a 421 greeting (``busy``: while a tool's leftovers
    fill the server's connection limit, real mail is refused too)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.count = 0
        self.busy = 0
        self.loop = asyncio.new_event_loop()
        self.listen_port = 0
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.listen_port = server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.count += 1
        try:
            ur, uw = await asyncio.open_connection(self.host, self.port)
        except OSError:
            w.close()
            return

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter, greeting: bool = False) -> None:
            try:
                while data := await a.read(65536):
                    if greeting:
                        self.busy += data.startswith(b"421")
                        greeting = False
                    b.write(data)
                    await b.drain()
            except OSError:
                pass
            finally:
                b.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w, greeting=True))


def run_smtpaudit(port: int, starttls: bool, per_host: int) -> None:
    ep = Endpoint("127.0.0.1", port, Mode.STARTTLS if starttls else Mode.IMPLICIT, Role.MX, spec="bench")

    async def main() -> None:
        ctx = ProbeContext(timeouts=Timeouts(connect=10, greeting=10, command=10, tls=10), host_slots=asyncio.Semaphore(per_host))
        prior = {"smtp.starttls.offered": True}
        r = await TlsProtocolsProbe().run(ep, ctx, prior)
        c = await TlsCertificateProbe().run(ep, ctx, prior)
        if r.status != "ok" or c.status != "ok":
            raise RuntimeError(f"smtpaudit: {r.error_message} {c.error_message}")

    asyncio.run(main())


def run_sslyze(python: str, port: int, starttls: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [python, "-m", "sslyze", f"127.0.0.1:{port}", f"--json_out={tmp}/o.json", "--sslv2", "--sslv3", "--tlsv1",
               "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--certinfo", "--mozilla_config=disable"]
        if starttls:
            cmd += ["--starttls", "smtp"]
        subprocess.run(cmd, capture_output=True, timeout=900)


def run_testssl(binary: str, port: int, starttls: bool) -> None:
    cmd = [binary, "--quiet", "--color", "0", "--warnings", "off", "-p", "-e", "-S"]
    if starttls:
        cmd += ["--starttls", "smtp"]
    subprocess.run(cmd + [f"127.0.0.1:{port}"], capture_output=True, timeout=1800)


def measure(name: str, fn, relay: CountingRelay, runs: int) -> tuple[float, int]:
    times, conns = [], []
    for _ in range(runs):
        before = relay.count
        t0 = time.monotonic()
        fn()
        times.append(time.monotonic() - t0)
        conns.append(relay.count - before)
        time.sleep(0.5)  # let the server reap its children between runs
    med_t, med_c = statistics.median(times), int(statistics.median(conns))
    print(f"{name:10s} median {med_t:7.2f}s  connections {med_c:5d}   runs {[round(t, 2) for t in times]}", flush=True)
    return med_t, med_c


def local_server(kind: str) -> tuple[int, object]:
    """A Python STARTTLS server (tests/tls) in a thread: 'strong' (TLS 1.2+, ECDHE AEAD) or 'weak'."""
    import ssl
    import warnings

    from tests.tls.certgen import make_cert
    from tests.tls.smtp_tls_server import SmtpTlsServer
    from tests.tls.test_sslyze_agreement import ThreadedServer

    tmp = Path(tempfile.mkdtemp())
    cert, key = make_cert(tmp)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20" if kind == "strong" else "ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if kind == "strong" else ssl.TLSVersion.TLSv1
    ctx.load_cert_chain(cert, key)
    threaded = ThreadedServer(SmtpTlsServer(ctx))
    server = threaded.__enter__()
    return server.port, threaded


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="HOST:PORT of the server to audit")
    ap.add_argument("--local", choices=["strong", "weak"], help="start a local Python STARTTLS server instead")
    ap.add_argument("--starttls", action="store_true", help="the target speaks SMTP with STARTTLS (else implicit TLS)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--per-host", type=int, default=2, help="smtpaudit's per-host connection limit (its default: 2)")
    ap.add_argument("--sslyze-python", default=os.environ.get("SMTPAUDIT_SSLYZE_PYTHON", sys.executable))
    ap.add_argument("--skip", action="append", default=[], choices=["sslyze", "testssl"])
    args = ap.parse_args()
    if args.local:
        port, _keep = local_server(args.local)
        host, starttls = "127.0.0.1", True
    elif args.target:
        host, _, p = args.target.rpartition(":")
        port, starttls = int(p), args.starttls
    else:
        ap.error("give --target HOST:PORT or --local strong|weak")
    relay = CountingRelay(host, port)
    rp = relay.listen_port
    print(f"target {host}:{port} ({'STARTTLS' if starttls else 'implicit TLS'}), {args.runs} runs each, smtpaudit per-host={args.per_host}")
    ours = measure("smtpaudit", lambda: run_smtpaudit(rp, starttls, args.per_host), relay, args.runs)
    peers: dict[str, tuple[float, int]] = {}
    if "sslyze" not in args.skip and subprocess.run([args.sslyze_python, "-c", "import sslyze"], capture_output=True).returncode == 0:
        peers["sslyze"] = measure("sslyze", lambda: run_sslyze(args.sslyze_python, rp, starttls), relay, args.runs)
    else:
        print("sslyze     not installed (or skipped)")
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    if "testssl" not in args.skip and testssl:
        peers["testssl"] = measure("testssl", lambda: run_testssl(testssl, rp, starttls), relay, max(1, min(args.runs, 3)))
    else:
        print("testssl    not installed (or skipped)")
    for name, (t, c) in peers.items():
        print(f"smtpaudit / {name}: time {ours[0] / t:.3f}x  connections {ours[1]}/{c} = {ours[1] / max(c, 1):.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
