"""scripts/regenerate-samples.py: the sample pipeline freezes what changes between runs and nothing else."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("regenerate_samples", ROOT / "scripts" / "regenerate-samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report() -> dict:
    ep = {"endpoint": {"id": "127.0.0.1:21025", "port": 21025}, "status": "complete", "started": "2026-11-30T07:00:01Z", "duration": 3.2,
          "facts": {"smtp.greeting.seconds": 0.012, "smtp.limits.idle_watched": 3.4, "tls.cert.not_after": "2035-12-01T00:00:00Z",
                    "tls.cert.days_left": 3288, "smtp.greeting.text": "mail.lab.test ESMTP Exim 4.96 Mon, 30 Nov 2026 07:12:58 +0000",
                    "smtp.relay.control": {"rcpt_to": "smtpaudit-326541250afc@mail.lab.test", "code": 550},
                    "smtp.limits.early_talker_rejected": True},
          "probes": [{"probe": "smtp.session", "duration": 0.4, "connections": 1}],
          "transcripts": {"smtp.session": [{"t": 0.013, "dir": "S", "text": "220 x", "conn": 3}]},
          "findings": [{"rule_id": "early-talker-accepted", "severity": "info", "message": "m"},
                       {"rule_id": "auth-before-starttls", "severity": "high", "message": "m"}],
          "passed": ["a"], "not_applicable": [], "not_evaluated": []}
    return {"started": "2026-11-30T07:00:00Z", "finished": "2026-11-30T07:01:00Z", "duration": 60.1, "invocation": {}, "endpoints": [ep], "summary": {}}


def test_freeze_fixes_clock_random_names_banner_dates_and_timings():
    rs = _script()
    frozen = rs.freeze(_report())
    e = frozen["endpoints"][0]
    assert frozen["started"] == frozen["finished"] == e["started"] == "2026-06-01T12:00:00Z" and frozen["duration"] == 0.0
    assert e["transcripts"]["smtp.session"][0]["t"] == 0.0 and e["probes"][0]["duration"] == 0.0
    assert e["facts"]["smtp.relay.control"]["rcpt_to"] == "smtpaudit-000000000000@mail.lab.test"
    assert e["facts"]["smtp.greeting.text"].endswith("Mon, 01 Jun 2026 12:00:00 +0000")
    assert e["facts"]["smtp.greeting.seconds"] == 0.0 and e["facts"]["smtp.limits.idle_watched"] == 3.0
    assert e["facts"]["tls.cert.days_left"] == 3469  # 2026-06-01T12:00Z to 2035-12-01
    assert rs.freeze(frozen) == frozen  # idempotent


def test_stable_view_ignores_only_the_labs_races():
    rs = _script()
    a = rs.freeze(_report())
    b = copy.deepcopy(a)
    e = b["endpoints"][0]
    e["findings"] = [f for f in e["findings"] if f["rule_id"] != "early-talker-accepted"]
    e["facts"]["smtp.limits.early_talker_rejected"] = False
    e["probes"][0]["connections"] = 2
    e["transcripts"]["smtp.session"][0]["conn"] = 4
    assert rs.stable_view(a) == rs.stable_view(b)
    e["findings"] = []  # a real change: a confirmed finding disappeared
    assert rs.stable_view(a) != rs.stable_view(b)


def test_committed_samples_are_frozen_and_small():
    out = ROOT / "reports" / "samples"
    for name in ("postfix-insecure.json", "lab-fleet.json"):
        report = json.loads((out / name).read_text())
        assert report["started"] == "2026-06-01T12:00:00Z"
        assert all(21000 <= e["endpoint"]["port"] < 22000 for e in report["endpoints"])  # the fixed ports
    fleet = json.loads((out / "lab-fleet.json").read_text())
    assert len(fleet["endpoints"]) == 10
    for png in ("postfix-insecure-1400.png", "postfix-insecure-390.png", "lab-fleet-1400.png", "lab-fleet-390.png"):
        assert (out / png).stat().st_size > 20_000
    assert sum(p.stat().st_size for p in out.iterdir()) < 6_000_000
