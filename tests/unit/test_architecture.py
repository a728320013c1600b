"""The layers stay apart: probes observe, rules judge, reporters render (DESIGN.md).

Two checks: a static one over every module's imports, and a dynamic one proving that the
offline commands (report, evaluate, diff, baseline) never load the network orchestrator or any
probe family, so they can run where no network is allowed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "smtpaudit"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


@pytest.mark.parametrize("layer,forbidden", [
    ("probes", ("smtpaudit.engine", "smtpaudit.report", "smtpaudit.scan", "smtpaudit.api", "smtpaudit.cli")),
    ("engine", ("smtpaudit.probes", "smtpaudit.report", "smtpaudit.scan", "smtpaudit.api", "smtpaudit.cli")),
    ("report", ("smtpaudit.probes", "smtpaudit.scan", "smtpaudit.api", "smtpaudit.cli")),
])
def test_layers_do_not_import_each_other(layer, forbidden):
    bad = []
    for path in _modules(layer):
        for name in _imports(path):
            if name.startswith(forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


OFFLINE_PROBE = r"""
import json, sys
from smtpaudit.cli import main
report, out = sys.argv[1], sys.argv[2]
codes = [
    main(["report", report, "--format", "sarif", "-o", out + ".sarif", "-q"]),
    main(["report", report, "--format", "html", "-o", out + ".html", "-q"]),
    main(["evaluate", report, "-o", out + ".json", "-q"]),
    main(["diff", report, report, "-o", out + ".diff", "-q"]),
    main(["baseline", "create", report, "-o", out + ".toml"]),
]
network = sorted(m for m in sys.modules if m == "smtpaudit.scan" or m.startswith(("smtpaudit.probes.smtp", "smtpaudit.probes.tls", "smtpaudit.probes.dns", "smtpaudit.probes.registry", "smtpaudit.probes.runner", "smtpaudit.demo")))
print(json.dumps({"codes": codes, "network": network}))
"""


def test_offline_commands_never_load_the_network_side(tmp_path):
    from tests.fakes.smtp import ThreadedFake
    from tests.report.conftest import scan_to, weak_fake

    with ThreadedFake(weak_fake()) as srv:
        code, _ = scan_to(tmp_path / "scan.json", srv.target)
    assert code == 1
    proc = subprocess.run([sys.executable, "-c", OFFLINE_PROBE, str(tmp_path / "scan.json"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["network"] == [], result
    assert result["codes"][0] == 0 and result["codes"][4] == 0


# -- start-up cost: each command loads what it uses, nothing more (docs/architecture.md) ---------

LOADED_PROBE = r"""
import json, sys
from smtpaudit.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
watch = json.loads(sys.argv[1])
print(json.dumps({"code": code, "loaded": sorted(m for m in watch if m in sys.modules)}))
"""

HEAVY = ["asyncio", "dns", "cryptography", "OpenSSL", "jinja2", "jsonschema", "sqlite3", "smtpaudit.api",
         "smtpaudit.scan", "smtpaudit.engine.rules", "smtpaudit.history.store", "smtpaudit.probes.registry",
         "smtpaudit.probes.dns.resolver", "smtpaudit.report.html"]


def _loaded(args: list[str], cwd: Path = ROOT) -> tuple[int, list[str]]:
    """Exit code and which HEAVY modules one CLI run left loaded (a fresh interpreter per run)."""
    proc = subprocess.run([sys.executable, "-c", LOADED_PROBE, json.dumps(HEAVY), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], result["loaded"]


def test_version_and_rules_validate_load_neither_engine_runtime_nor_network_nor_renderers():
    assert _loaded(["--version"]) == (0, [])
    code, loaded = _loaded(["rules", "validate", "rules"])
    assert code == 0
    assert loaded == ["smtpaudit.engine.rules"], loaded


def test_a_scan_loads_dns_only_for_dns_questions_and_jinja_only_for_html(tmp_path):
    from tests.fakes.smtp import ThreadedFake
    from tests.report.conftest import weak_fake

    with ThreadedFake(weak_fake()) as srv:
        # An address literal: the DNS probes run (dns.host, dns.dane) but have nothing to ask.
        code, loaded = _loaded(["scan", srv.target, "-q", "-o", str(tmp_path / "r.json")])
        assert code in (0, 1)
        assert "smtpaudit.scan" in loaded and "asyncio" in loaded  # the probe sees a real scan
        for heavy in ("dns", "smtpaudit.probes.dns.resolver", "jinja2", "smtpaudit.report.html", "jsonschema",
                      "sqlite3", "smtpaudit.history.store"):
            assert heavy not in loaded, loaded
        code, loaded = _loaded(["scan", srv.target, "-q", "-o", str(tmp_path / "r.html")])
        assert "jinja2" in loaded and "smtpaudit.report.html" in loaded


def test_rerendering_as_sarif_loads_no_template_engine_and_no_event_loop(tmp_path):
    from tests.fakes.smtp import ThreadedFake
    from tests.report.conftest import scan_to, weak_fake

    with ThreadedFake(weak_fake()) as srv:
        scan_to(tmp_path / "scan.json", srv.target)
    code, loaded = _loaded(["report", str(tmp_path / "scan.json"), "-q", "-o", str(tmp_path / "out.sarif")])
    assert code == 0
    assert "jsonschema" in loaded  # a saved report is always checked against the schema
    for heavy in ("jinja2", "smtpaudit.report.html", "asyncio", "smtpaudit.api", "sqlite3", "cryptography"):
        assert heavy not in loaded, loaded
