"""The DNS lab: BIND's named serving signed lab zones on a free loopback port, plus an HTTPS server
for MTA-STS policies, both started and stopped by the test suite (by PID, no systemd).

Zones come from ``dns_zones.toml`` (a good mail domain and one broken domain per failure mode).
They are signed with BIND's own tools (dnssec-keygen, dnssec-signzone), with a real chain of
trust: the lab TLD ``test.`` holds the DS records of its children, and ``trust_anchor_file``
holds the DS of ``test.`` for the probes' validator. Start-up is about one second.

    lab = DnsLab.build(workdir)          # CA, certificates, zones, signatures, named.conf
    lab.start()                          # named + policy server; lab.port, lab.https_port
    lab.probe_options()                  # ctx.options for the DNS probes
    lab.stop()
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ZONES_FILE = Path(__file__).with_name("dns_zones.toml")
TOOLS = ("named", "dnssec-keygen", "dnssec-signzone")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (named needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port for TCP+UDP")


# -- certificates ---------------------------------------------------------------------------------

@dataclass
class Pki:
    ca_file: Path
    ca_key: Any
    ca_cert: x509.Certificate

    @classmethod
    def create(cls, directory: Path) -> "Pki":
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtpaudit DNS lab CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        ca_file = directory / "ca.pem"
        ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(ca_file, key, cert)

    def issue(self, directory: Path, stem: str, names: list[str], days: int = 90) -> tuple[Path, Path, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
        # The chain file holds leaf + CA so servers present both (DANE-TA needs the CA on the wire).
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                              + self.ca_cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_file, key_file, cert


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


# -- zones ------------------------------------------------------------------------------------------

@dataclass
class ZoneSpec:
    name: str  # fully qualified, no trailing dot
    doc: str
    records: list[str]
    signed: bool
    bogus_ds: bool
    policy: dict[str, Any]


def load_specs(mx_tlsa: str) -> tuple[str, list[ZoneSpec], dict[str, Any]]:
    data = tomllib.loads(ZONES_FILE.read_text(encoding="utf-8"))
    tld = data["tld"]
    specs = []
    for short, z in data["zones"].items():
        domain = f"{short}.{tld}"
        recs = {k: v for k, v in data["template"].items() if k not in z.get("drop", [])}
        lines = list(recs.values()) + list(z.get("add", []))
        policy = dict(data["policy"])
        policy.update(z.get("policy", {}))
        fill = lambda s: s.replace("{domain}", domain).replace("{mx_tlsa}", mx_tlsa)  # noqa: E731
        policy = {k: ([fill(x) for x in v] if isinstance(v, list) else fill(v) if isinstance(v, str) else v)
                  for k, v in policy.items()}
        if "sts_txt" in z.get("drop", []):
            policy = {}
        specs.append(ZoneSpec(domain, z.get("doc", ""), [fill(r) for r in lines], z.get("signed", True),
                              z.get("bogus_ds", False), policy))
    return tld, specs, data["reverse"]


def _zone_text(origin: str, records: list[str]) -> str:
    head = [
        f"$ORIGIN {origin}.", "$TTL 300",
        f"@ SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300",
    ]
    return "\n".join(head + records) + "\n"


def _sign(zone: str, zone_file: Path, keydir: Path, nsec3: bool) -> Path:
    """Generate one ECDSA P-256 key (used as a combined signing key) and sign with dnssec-signzone."""
    subprocess.run([_tool("dnssec-keygen"), "-q", "-K", str(keydir), "-a", "ECDSAP256SHA256", "-f", "KSK",
                    "-n", "ZONE", zone], check=True, capture_output=True, timeout=60)
    cmd = [_tool("dnssec-signzone"), "-q", "-S", "-z", "-K", str(keydir), "-d", str(keydir),
           "-o", zone, "-f", str(zone_file) + ".signed", "-e", "now+2592000"]
    if nsec3:
        cmd += ["-3", "-", "-H", "0"]
    subprocess.run(cmd + [str(zone_file)], check=True, capture_output=True, timeout=60, cwd=keydir)
    return Path(str(zone_file) + ".signed")


def _ds_lines(keydir: Path, zone: str) -> list[str]:
    text = (keydir / f"dsset-{zone}.").read_text()
    return [line for line in text.splitlines() if " DS " in line]


@dataclass
class DnsLab:
    workdir: Path
    tld: str
    zones: list[ZoneSpec]
    pki: Pki
    mx_cert_file: Path
    mx_key_file: Path
    mx_tlsa: str
    trust_anchor_file: Path
    named_conf: Path
    https_files: dict[str, tuple[Path, Path]]
    port: int = 0
    https_port: int = 0
    process: subprocess.Popen | None = None
    policy_server: "PolicyServer | None" = None
    build_seconds: float = 0.0
    start_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def domains(self) -> dict[str, ZoneSpec]:
        return {z.name: z for z in self.zones}

    @classmethod
    def build(cls, workdir: Path, *, mx_cert_pem: str | None = None) -> "DnsLab":
        """Write and sign every zone. ``mx_cert_pem`` (leaf first) is the certificate the lab MX
        servers present; without it a lab MX certificate is issued here."""
        t0 = time.monotonic()
        workdir.mkdir(parents=True, exist_ok=True)
        keydir = workdir / "keys"
        keydir.mkdir(exist_ok=True)
        pki = Pki.create(workdir)
        data = tomllib.loads(ZONES_FILE.read_text(encoding="utf-8"))
        names = [f"{short}.{data['tld']}" for short in data["zones"]]
        mx_names = [f"mx.{d}" for d in names] + names + ["localhost"]
        mx_cert_file, mx_key_file, mx_cert = pki.issue(workdir, "mx", mx_names)
        if mx_cert_pem:
            mx_cert = x509.load_pem_x509_certificate(mx_cert_pem.encode())
        mx_tlsa = spki_sha256(mx_cert)
        tld, specs, reverse = load_specs(mx_tlsa)
        good_cert, good_key, _ = pki.issue(workdir, "mta-sts", [f"mta-sts.{d}" for d in names])
        wrong_cert, wrong_key, _ = pki.issue(workdir, "wrong", ["wrong.test"])

        # Children first (their DS records go into the parent), signed in parallel.
        def sign_child(spec: ZoneSpec) -> None:
            zf = workdir / f"{spec.name}.zone"
            zf.write_text(_zone_text(spec.name, [f"@ NS ns.{tld}."] + spec.records))
            if spec.signed:
                _sign(spec.name, zf, keydir, nsec3=False)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(sign_child, specs))
        parent = [f"@ NS ns.{tld}.", "ns A 127.0.0.1"]
        for spec in specs:
            parent.append(f"{spec.name}. NS ns.{tld}.")
            if spec.signed:
                for line in _ds_lines(keydir, spec.name):
                    if spec.bogus_ds:
                        # Flip the last digest digit: the DS no longer matches the child's key.
                        line = line[:-1] + ("0" if line[-1] != "0" else "1")
                    parent.append(line)
        tzf = workdir / f"{tld}.zone"
        tzf.write_text(_zone_text(tld, parent))
        _sign(tld, tzf, keydir, nsec3=True)
        anchor = workdir / "trust-anchor.txt"
        anchor.write_text("\n".join(_ds_lines(keydir, tld)) + "\n")
        rzf = workdir / "reverse.zone"
        rzf.write_text(_zone_text(reverse["zone"], [f"@ NS ns.{tld}."] + reverse["records"]))

        conf = workdir / "named.conf"
        zone_stanzas = [f'zone "{tld}" {{ type primary; file "{tzf}.signed"; }};',
                        f'zone "{reverse["zone"]}" {{ type primary; file "{rzf}"; }};']
        for spec in specs:
            f = workdir / f"{spec.name}.zone{'.signed' if spec.signed else ''}"
            zone_stanzas.append(f'zone "{spec.name}" {{ type primary; file "{f}"; }};')
        conf.write_text("\n".join([
            "options {",
            f'  directory "{workdir}";',
            f'  pid-file "{workdir}/named.pid";',
            f'  session-keyfile "{workdir}/session.key";',
            f'  managed-keys-directory "{workdir}";',
            "  listen-on port @PORT@ { 127.0.0.1; };",
            "  listen-on-v6 { none; };",
            "  recursion no; notify no; dnssec-validation no; allow-query { any; };",
            "  minimal-responses no;",
            "};",
            "controls { };",
            "logging { channel f { file \"" + str(workdir / "named.log") + "\"; severity info; }; category default { f; }; };",
            *zone_stanzas,
        ]) + "\n")
        https_files = {d: (good_cert, good_key) for d in names}
        https_files["stsbadcert.test"] = (wrong_cert, wrong_key)
        lab = cls(workdir, tld, specs, pki, mx_cert_file, mx_key_file, mx_tlsa, anchor, conf, https_files)
        lab.build_seconds = time.monotonic() - t0
        return lab

    # -- processes --------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        self.port = free_port()
        text = self.named_conf.read_text().replace("@PORT@", str(self.port))
        conf = self.workdir / "named.run.conf"
        conf.write_text(text)
        self.process = subprocess.Popen(
            [_tool("named"), "-c", str(conf), "-f", "-n", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "named.stderr", "wb"),
            start_new_session=True,
        )
        self._wait_ready()
        self.policy_server = PolicyServer(self)
        self.https_port = self.policy_server.start()
        self.start_seconds = time.monotonic() - t0

    def _wait_ready(self, timeout: float = 20.0) -> None:
        import dns.message
        import dns.query

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"named exited with {self.process.returncode}: "
                                   + (self.workdir / "named.stderr").read_text()[-2000:]
                                   + (self.workdir / "named.log").read_text()[-2000:] if (self.workdir / "named.log").exists() else "")
            try:
                q = dns.message.make_query(f"good.{self.tld}.", "SOA")
                r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.3)
                if r.answer:
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("named did not answer within %ss" % timeout)

    def stop(self) -> None:
        if self.policy_server is not None:
            self.policy_server.stop()
            self.policy_server = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def probe_options(self) -> dict[str, Any]:
        return {
            "resolver": self.resolver,
            "dnssec_trust_anchors": str(self.trust_anchor_file),
            "mta_sts_ca_file": str(self.pki.ca_file),
            "mta_sts_port": self.https_port,
            "dns_timeout": 2.0,
        }


class PolicyServer:
    """HTTPS on 127.0.0.1 serving each lab domain's MTA-STS policy, certificate chosen by SNI."""

    def __init__(self, lab: DnsLab) -> None:
        self.lab = lab
        self.httpd: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.requests: list[str] = []

    def _context(self, cert: Path, key: Path) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx

    def start(self) -> int:
        lab = self.lab
        contexts = {f"mta-sts.{d}": self._context(*files) for d, files in lab.https_files.items()}
        default = next(iter(contexts.values()))

        def sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name in contexts:
                sslobj.context = contexts[name]

        default.sni_callback = sni
        policies = {z.name: z.policy for z in lab.zones}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                server.requests.append(f"{host}{self.path}")
                domain = host.removeprefix("mta-sts.")
                pol = policies.get(domain)
                if self.path != "/.well-known/mta-sts.txt" or not pol:
                    return self._send(404, "not found\n")
                if "http_status" in pol:
                    return self._send(int(pol["http_status"]), "no policy here\n")
                if "body" in pol:
                    return self._send(200, pol["body"])
                lines = [f"version: {pol['version']}", f"mode: {pol['mode']}"]
                lines += [f"mx: {m}" for m in pol["mx"]]
                lines.append(f"max_age: {pol['max_age']}")
                self._send(200, "\r\n".join(lines) + "\r\n")

            def _send(self, code: int, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = default.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self.httpd.server_address[1]

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def ci_strict() -> bool:
    return os.environ.get("CI", "").lower() == "true"
