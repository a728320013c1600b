"""Thirty synthetic nights of a small fleet of in-process fake MTAs whose configuration changes on
given nights, scanned for real each night and recorded through the CLI with a fixed clock.

The schedule (night n is 2026-10-01T02:00:00Z + (n - 1) days):

* A: Postfix 3.8.5 banner (3.9.1 from night 22); VRFY discloses users on nights 1-9 and 20-30.
* B: an open relay on nights 1-4; down (connection refused) on nights 12 and 13.
* C: its certificate is replaced on night 15.
* D: VRFY discloses users from night 25.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from smtpaudit.cli import main
from tests.fakes.certs import server_context
from tests.fakes.mta import FakeMta

NIGHTS = 30
T0 = datetime(2026, 10, 1, 2, 0, 0, tzinfo=timezone.utc)
# The fakes accept injected plaintext after STARTTLS (tls-starttls-injection, high, every night);
# the active test also confirms the CVE of that flaw on their Postfix banner. That second, constant
# finding is not part of the schedule the assertions below encode, so it is left out.
SCAN_ARGS = ("-q", "--skip-tag", "dns", "--skip-rule", "cve-2011-0411", "--greeting-timeout", "3", "--command-timeout", "3", "--connect-timeout", "2", "--timeout", "30")


def at(night: int) -> str:
    """The fixed clock: the start time of night ``night`` (1-based)."""
    return (T0 + timedelta(days=night - 1)).isoformat().replace("+00:00", "Z")


class LoopThread:
    """An event loop in a thread serving fake MTAs that can be stopped and restarted on their port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Fleet:
    loop: LoopThread
    mtas: dict[str, FakeMta]
    tmp: Path
    up: dict[str, bool] = field(default_factory=dict)

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.mtas[name].port}"

    def ids(self) -> dict[str, str]:
        return {name: self.target(name) for name in self.mtas}

    def configure(self, night: int) -> None:
        a, b, c, d = (self.mtas[k] for k in "ABCD")
        a.banner = "mx.example.test ESMTP Postfix (3.9.1)" if night >= 22 else "mx.example.test ESMTP Postfix (3.8.5)"
        a.vrfy = "truthful" if night <= 9 or night >= 20 else "502"
        b.open_relay = night <= 4
        self.set_up("B", night not in (12, 13))
        if night == 15:
            c.tls_context = server_context(self.tmp / "c-renewed")
        d.vrfy = "truthful" if night >= 25 else "502"

    def set_up(self, name: str, up: bool) -> None:
        if self.up.get(name, True) == up:
            return
        mta = self.mtas[name]
        self.loop.call(mta.stop() if not up else mta.start())  # same port on restart
        self.up[name] = up


def make_fleet(tmp: Path) -> Fleet:
    loop = LoopThread()
    mtas = {}
    for name in "ABCD":
        d = tmp / f"pki-{name}"
        d.mkdir(parents=True)
        mta = FakeMta(tls_context=server_context(d), vrfy="502")
        loop.call(mta.start())
        mtas[name] = mta
    fleet = Fleet(loop, mtas, tmp)
    (tmp / "c-renewed").mkdir()
    return fleet


def scan_night(fleet: Fleet, night: int, out: Path) -> dict[str, Any]:
    """One real scan of the fleet, stamped with the night's fixed clock."""
    fleet.configure(night)
    path = out / f"night-{night:02d}.json"
    main(["scan", *fleet.ids().values(), "-o", str(path), *SCAN_ARGS])
    report = json.loads(path.read_text())
    duration = report.get("duration") or 0
    report["started"] = at(night)
    report["finished"] = (datetime.fromisoformat(at(night).replace("Z", "+00:00")) + timedelta(seconds=round(duration))).isoformat().replace("+00:00", "Z")
    path.write_text(json.dumps(report, indent=2))
    return report


@dataclass
class ThirtyNights:
    db: Path
    reports: dict[int, dict[str, Any]]
    paths: dict[int, Path]
    ids: dict[str, str]
    record_codes: list[int]

    def copy_db(self, dest: Path) -> Path:
        target = dest / "copy.db"
        shutil.copy(self.db, target)
        return target


@pytest.fixture(scope="module")
def thirty_nights(tmp_path_factory: pytest.TempPathFactory) -> ThirtyNights:
    tmp = tmp_path_factory.mktemp("history")
    fleet = make_fleet(tmp)
    out = tmp / "reports"
    out.mkdir()
    db = tmp / "history.db"
    reports, paths, codes = {}, {}, []
    try:
        for night in range(1, NIGHTS + 1):
            reports[night] = scan_night(fleet, night, out)
            paths[night] = out / f"night-{night:02d}.json"
            codes.append(main(["report", str(paths[night]), "--history", str(db), "-q"]))
        ids = fleet.ids()
    finally:
        for name, mta in fleet.mtas.items():
            if fleet.up.get(name, True):
                fleet.loop.call(mta.stop())
        fleet.loop.close()
    return ThirtyNights(db, reports, paths, ids, codes)
