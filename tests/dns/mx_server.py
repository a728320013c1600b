"""A minimal STARTTLS SMTP server on 127.0.0.1 that presents a given certificate chain: the MX of
the DNS lab in tests (DANE matching needs a real handshake). Threaded, stopped by the test."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class StartTlsServer:
    def __init__(self, cert_file: Path, key_file: Path, name: str = "mx.good.test") -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert_file, key_file)
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.handshakes = 0

    def start(self) -> "StartTlsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        tls = False
        try:
            f = conn.makefile("rb")
            conn.sendall(f"220 {self.name} ESMTP lab\r\n".encode())
            while True:
                line = f.readline(1000)
                if not line:
                    return
                cmd = line.decode("ascii", "replace").strip().upper()
                if cmd.startswith(("EHLO", "HELO")):
                    caps = ["8BITMIME"] + ([] if tls else ["STARTTLS"])
                    lines = [self.name] + caps
                    conn.sendall("".join(f"250{'-' if i < len(lines) - 1 else ' '}{l}\r\n" for i, l in enumerate(lines)).encode())
                elif cmd == "STARTTLS" and not tls:
                    conn.sendall(b"220 2.0.0 ready\r\n")
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    self.handshakes += 1
                    f = conn.makefile("rb")
                    tls = True
                elif cmd == "QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                elif cmd.startswith(("MAIL", "RSET", "NOOP")):
                    conn.sendall(b"250 2.0.0 ok\r\n")
                elif cmd.startswith("RCPT"):
                    conn.sendall(b"550 5.7.1 relay denied\r\n")
                else:
                    conn.sendall(b"502 5.5.1 not implemented\r\n")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()
