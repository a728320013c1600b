"""Open a local HTML file in real headless Chromium and report what happened (tests and sample screenshots).

Talks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (NUL-separated JSON on file
descriptors 3 and 4), so it needs only the standard library and Debian's ``chromium`` package:
no websocket client, no browser download. Records console errors, uncaught exceptions, log
errors (CSP violations land there) and every network request the page makes; DNS is mapped to
nowhere so a request that slipped out could not leave the machine anyway.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
)


def find_chromium() -> str | None:
    """The Chromium binary (CHROMIUM env var, then PATH)."""
    for cand in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if cand and (path := shutil.which(cand)):
            return path
    return None


@dataclass
class PageResult:
    url: str
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL other than the page itself
    text: str = ""
    script_elements: int = -1
    title: str = ""
    screenshot: Path | None = None

    @property
    def errors(self) -> list[str]:
        return self.console_errors + self.exceptions + self.log_errors


class CdpError(RuntimeError):
    """Chromium did not start, answer or load the page in time."""


class Chromium:
    """One headless Chromium process with a fresh profile, driven over the debugging pipe."""

    def __init__(self, binary: str, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="smtpaudit-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        # A tiny Python trampoline moves our pipe ends to fds 3 and 4 (where Chromium expects
        # them) and execs the browser; the ends are first copied above 4 so the moves cannot
        # clobber each other. Nothing else of ours is inherited.
        r, w = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 5), fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 5)
        trampoline = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); os.dup2(w, 4); "
                      "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", trampoline, str(r), str(w), binary, *CHROMIUM_FLAGS,
             "--remote-debugging-pipe", f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(r, w),
        )
        os.close(r)
        os.close(w)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    # -- protocol -------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise CdpError(f"Chromium closed the debugging pipe: {self._stderr_tail()}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float | None = None) -> dict[str, Any]:
        for ev in self.events:
            if ev["method"] == method and ev.get("sessionId") == session:
                return ev
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            ev = self._read_message(deadline)
            if "method" in ev:
                self.events.append(ev)
                if ev["method"] == method and ev.get("sessionId") == session:
                    return ev

    def _stderr_tail(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode("utf-8", "replace")[-800:]

    # -- high level -----------------------------------------------------------------------
    def open(self, path: Path, *, screenshot: Path | None = None, width: int = 1200, max_height: int = 16000, settle: float = 0.3) -> PageResult:
        """Load a local file, wait for it, and collect errors, requests, text and a full-page screenshot."""
        url = path.resolve().as_uri()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", {}, session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        time.sleep(settle)  # let late console messages or fetches show up
        self.call("Runtime.evaluate", {"expression": "1"}, session)  # drains pending events
        result = PageResult(url=url)
        for ev in self.events:
            if ev.get("sessionId") != session:
                continue
            p = ev.get("params", {})
            m = ev["method"]
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                result.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                result.exceptions.append(json.dumps(p.get("exceptionDetails", {}))[:500])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                result.log_errors.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.requestWillBeSent":
                req_url = p.get("request", {}).get("url", "")
                if req_url != url:
                    result.requests.append(req_url)
        evaluate = lambda expr: self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)["result"].get("value")  # noqa: E731
        result.text = evaluate("document.body ? document.body.innerText : ''") or ""
        result.script_elements = evaluate("document.querySelectorAll('script').length")
        result.title = evaluate("document.title") or ""
        if screenshot is not None:
            height = int(evaluate("Math.ceil(document.documentElement.scrollHeight)") or 900)
            height = max(600, min(height, max_height))
            self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
            shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}, session)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            result.screenshot = screenshot
        self.call("Target.closeTarget", {"targetId": target})
        return result

    def _session(self, width: int, height: int = 900, *, bypass_csp: bool = False) -> tuple[str, str]:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", {}, session)
        self.call("Runtime.enable", {}, session)
        if bypass_csp:
            self.call("Page.setBypassCSP", {"enabled": True}, session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}, session)
        return target, session

    def _load(self, path: Path, session: str) -> None:
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session)
        self.wait_for("Page.loadEventFired", session)

    def axe(self, path: Path, axe_js: Path, *, width: int = 1400) -> list[dict[str, Any]]:
        """Run axe-core on the page; returns its violations (each with id, impact, help, nodes).

        axe is injected through the DevTools protocol with the page's CSP bypassed for this tab
        only: the report itself never carries or allows a script."""
        target, session = self._session(width, bypass_csp=True)
        try:
            self._load(path, session)
            self.call("Runtime.evaluate", {"expression": axe_js.read_text(encoding="utf-8")}, session)
            expr = ("axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, "
                    "help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' :: ' + (n.failureSummary || '').slice(0, 300))})))")
            old = self.timeout
            self.timeout = max(old, 120.0)
            try:
                res = self.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True}, session)
            finally:
                self.timeout = old
            if "exceptionDetails" in res:
                raise CdpError(f"axe failed: {json.dumps(res['exceptionDetails'])[:500]}")
            return res["result"]["value"]
        finally:
            self.call("Target.closeTarget", {"targetId": target})

    def pdf(self, path: Path, out: Path) -> Path:
        """Print the page to PDF as a browser's print dialog would (A4, backgrounds as the print CSS says)."""
        target, session = self._session(1000)
        try:
            self._load(path, session)
            old = self.timeout
            self.timeout = max(old, 120.0)
            try:
                res = self.call("Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69, "printBackground": False,
                                                    "preferCSSPageSize": True}, session)
            finally:
                self.timeout = old
            out.write_bytes(base64.b64decode(res["data"]))
            return out
        finally:
            self.call("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (CdpError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by handle
            self.proc.wait(5)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_page(path: Path, *, screenshot: Path | None = None, binary: str | None = None, max_height: int = 16000,
              width: int = 1200) -> PageResult:
    """One-shot: start Chromium, open ``path``, close Chromium."""
    binary = binary or find_chromium()
    if binary is None:
        raise CdpError("chromium not installed (apt-get install chromium, or run .ci/install-report-tools.sh)")
    with Chromium(binary) as browser:
        return browser.open(path, screenshot=screenshot, max_height=max_height, width=width)


AXE_JS = Path(os.environ.get("AXE_CORE_JS", Path(os.environ.get("SMTPAUDIT_TOOLS_DIR", "/opt/smtpaudit-tools")) / "axe-core/node_modules/axe-core/axe.min.js"))
BLOCKING_IMPACTS = ("serious", "critical")


def find_axe() -> Path | None:
    """axe-core's browser bundle (npm package axe-core; .ci/install-report-tools.sh installs it)."""
    return AXE_JS if AXE_JS.is_file() else None


def pdf_first_page_png(pdf: Path, out_prefix: Path) -> tuple[int, Path]:
    """(page count, PNG of page 1) with poppler's pdfinfo/pdftoppm: the PDF is a real, renderable document."""
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, timeout=60, check=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(out_prefix)],
                   capture_output=True, timeout=120, check=True)
    return pages, out_prefix.with_suffix(".png")
