"""The history package stays on the offline side: it imports no probe, scanner or CLI module, and
recording, querying and diffing against a history never load the network side."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("smtpaudit.probes", "smtpaudit.scan", "smtpaudit.api", "smtpaudit.cli", "smtpaudit.engine")


def test_history_imports_no_network_or_engine_module():
    bad = []
    for path in sorted((ROOT / "smtpaudit/history").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            bad += [f"{path.name} imports {n}" for n in names if n.startswith(FORBIDDEN)]
    assert not bad, bad


PROBE = r"""
import json, sys
from smtpaudit.cli import main
first, second, db, out = sys.argv[1:5]
codes = [
    main(["report", first, "--history", db, "-q"]),
    main(["report", second, "--history", db, "--format", "html", "-o", out, "-q"]),
    main(["history", db, "trend"]),
    main(["history", db, "findings", "--all", "--format", "json"]),
    main(["history", db, "mttr"]),
    main(["diff", "--history", db, second, "-q", "-o", out + ".diff"]),
    main(["history", db, "prune", "--keep-days", "400"]),
]
network = sorted(m for m in sys.modules if m == "smtpaudit.scan" or m.startswith(("smtpaudit.probes.smtp", "smtpaudit.probes.tls", "smtpaudit.probes.dns", "smtpaudit.probes.registry", "smtpaudit.probes.runner", "smtpaudit.demo")))
print(json.dumps({"codes": codes, "network": network}))
"""


def test_history_commands_never_load_the_network_side(tmp_path):
    from smtpaudit.cli import main
    from tests.fakes.mta import FakeMta, ThreadedMta

    with ThreadedMta(FakeMta(vrfy="truthful")) as mta:
        main(["scan", f"127.0.0.1:{mta.port}", "-o", str(tmp_path / "a.json"), "-q", "--skip-tag", "dns", "--timeout", "30"])
    report = json.loads((tmp_path / "a.json").read_text())
    report["started"] = "2026-11-01T02:00:00Z"
    (tmp_path / "a.json").write_text(json.dumps(report))
    report["started"] = "2026-11-02T02:00:00Z"
    (tmp_path / "b.json").write_text(json.dumps(report))
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "a.json"), str(tmp_path / "b.json"), str(tmp_path / "h.db"),
                           str(tmp_path / "out.html")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0, 0, 0, 0], "network": []}, result
