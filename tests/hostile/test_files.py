"""Malformed input files and hostile local conditions, through the real CLI: exit 2 with one line
naming the file and the place (JSON pointer / TOML key), never a traceback; outputs written
atomically; format from the file name; broken pipes end quietly."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smtpaudit import atomic
from smtpaudit.cli import main
from tests.hostile.helpers import ROOT, assert_no_traceback, assert_usage_error, cli, load_valid_report

RULE_TEMPLATE = '''id = "{id}"
title = "Greeting matches a user pattern"
severity = "low"
score = 1.0
confidence = "firm"
description = "A user rule from a CI repository."
[when]
all = [{{ fact = "smtp.greeting.text", matches = {pattern} }}]
[remediation]
summary = "none"
[[references]]
title = "example"
url = "https://example.org/"
[[examples]]
expect = "finding"
facts = {{ "smtp.greeting.text" = "aaaa" }}
[[examples]]
expect = "pass"
facts = {{ "smtp.greeting.text" = "aaab" }}
'''


def write_rule(directory: Path, rid: str, pattern: str) -> Path:
    (directory / "custom").mkdir(parents=True, exist_ok=True)
    path = directory / "custom" / f"{rid}.toml"
    path.write_text(RULE_TEMPLATE.format(id=rid, pattern=json.dumps(pattern)))
    return path


# --- saved reports --------------------------------------------------------------------------

def _bad_reports(report: dict) -> dict[str, tuple[str, str]]:
    """name -> (file content, expected JSON pointer / fragment in the message)."""
    no_findings = json.loads(json.dumps(report))
    del no_findings["endpoints"][0]["findings"]
    bad_status = json.loads(json.dumps(report))
    bad_status["endpoints"][0]["status"] = 5
    no_endpoints = {k: v for k, v in report.items() if k != "endpoints"}
    return {
        "wrong-shape": ('{"tool":"smtpaudit"}', "not an smtpaudit report"),
        "tool-only": ('{"tool":{"name":"smtpaudit"}}', "'schema_version' is a required property"),
        "no-findings": (json.dumps(no_findings), "/endpoints/0: 'findings' is a required property"),
        "bad-status": (json.dumps(bad_status), "/endpoints/0/status"),
        "no-endpoints": (json.dumps(no_endpoints), "'endpoints' is a required property"),
        "deep-100k": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "deep-object": ('{"a":' * 200 + "1" + "}" * 200, "nested deeper than 64 levels"),
        "truncated": (json.dumps(report)[:5000], "not valid JSON"),
        "not-utf8": ('{"tool": "\xff"}', "is not UTF-8 text"),
        "list": ("[]", "not an smtpaudit report"),
        "huge-int": ('{"tool": {"name": "smtpaudit"}, "duration": ' + "9" * 5000 + "}", "not usable JSON"),
    }


COMMANDS = {
    "report": lambda p, out: ["report", p, "-o", out],
    "evaluate": lambda p, out: ["evaluate", p, "-o", out],
    "diff-old": lambda p, out: ["diff", p, p, "-o", out],
    "baseline": lambda p, out: ["baseline", "create", p, "-o", out],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_saved_reports_exit_2_naming_file_and_pointer(tmp_path, saved_report, command, capsys):
    report = load_valid_report(saved_report)
    for name, (content, fragment) in _bad_reports(report).items():
        path = tmp_path / f"{name}.json"
        path.write_text(content, encoding="latin-1" if name == "not-utf8" else "utf-8")
        out = tmp_path / f"out-{name}"
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in COMMANDS[command](path, out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2, (name, err)
        first = err.strip().splitlines()[0]
        assert str(path) in first and fragment in first, (name, first)
        assert not out.exists(), name  # nothing written from a bad input


def test_bad_report_all_problems_with_verbose(tmp_path, saved_report):
    report = load_valid_report(saved_report)
    del report["endpoints"][0]["findings"]
    report["endpoints"][0]["status"] = "bogus"
    path = tmp_path / "two-problems.json"
    path.write_text(json.dumps(report))
    quiet = cli("report", path)
    assert_usage_error(quiet, str(path), "/endpoints/0")
    assert len(quiet.err.strip().splitlines()) == 1 and "--verbose" in quiet.err
    loud = cli("report", path, "--verbose")
    assert_usage_error(loud)
    lines = loud.err.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith(f"smtpaudit: error: {path}: /endpoints/0") for l in lines), loud.err
    assert "'findings' is a required property" in loud.err and "/endpoints/0/status" in loud.err


def test_bad_baseline_given_to_scan_side_commands(tmp_path, saved_report):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    run = cli("report", saved_report, "--baseline", deep)
    assert_usage_error(run, str(deep), "nested too deeply")


# --- TOML: rules, policies, baselines -------------------------------------------------------

DEEP_TOML = "x = " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_TABLES = "x = " + "{ a = " * 40 + "1" + " }" * 40 + "\n"


@pytest.mark.parametrize("content,fragment", [(DEEP_TOML, "nested too deeply"), (DEEP_TABLES, "nested deeper than 32 levels")],
                         ids=["arrays-5000-deep", "tables-40-deep"])
def test_deep_toml_everywhere(tmp_path, saved_report, content, fragment):
    rules = tmp_path / "rules"
    (rules / "custom").mkdir(parents=True)
    rule = rules / "custom" / "deep.toml"
    rule.write_text(content)
    assert_usage_error(cli("rules", "validate", rules), str(rule), fragment)
    assert_usage_error(cli("evaluate", saved_report, "--rules", rules), str(rule), fragment)
    policy = tmp_path / "policy.toml"
    policy.write_text(content)
    assert_usage_error(cli("evaluate", saved_report, "--policy", policy), str(policy), fragment)
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(content)
    assert_usage_error(cli("report", saved_report, "--baseline", baseline), str(baseline), fragment)


def test_policy_parameter_of_the_wrong_type_is_rejected(tmp_path, saved_report):
    policy = tmp_path / "policy.toml"
    policy.write_text('id = "bad"\nversion = "1"\ntitle = "bad"\n[params."tls-legacy-protocols"]\nlegacy = 12\n')
    run = cli("evaluate", saved_report, "--policy", policy)
    assert_usage_error(run, str(policy), "params.tls-legacy-protocols.legacy", "expected an array")
    policy.write_text('id = "bad"\nversion = "1"\ntitle = "bad"\n[params."tls-legacy-protocols"]\nlegacy = ["TLSv1.0", 3]\n')
    assert_usage_error(cli("evaluate", saved_report, "--policy", policy), "params.tls-legacy-protocols.legacy", "array of string")
    # A well-typed override still works.
    policy.write_text('id = "ok"\nversion = "1"\ntitle = "ok"\n[params."tls-legacy-protocols"]\nlegacy = ["TLSv1.0"]\n')
    ok = cli("evaluate", saved_report, "--policy", policy, "-q")
    assert_no_traceback(ok)
    assert ok.code in (0, 1, 3), ok.err


def test_rules_validate_lists_every_problem_in_every_file(tmp_path):
    rules = tmp_path / "rules"
    write_rule(rules, "good-one", "^a+$")
    bad = rules / "custom" / "many-problems.toml"
    bad.write_text("bogus = 1\n" + RULE_TEMPLATE.format(id="Many_Problems", pattern=json.dumps("(a)\\1"))
                   .replace('severity = "low"', 'severity = "urgent"').replace('url = "https://example.org/"', 'url = "ftp://x"'))
    other = rules / "custom" / "other.toml"
    other.write_text(RULE_TEMPLATE.format(id="other", pattern=json.dumps("(?=x)y")).replace('expect = "pass"', 'expect = "ok"'))
    run = cli("rules", "validate", rules)
    assert_no_traceback(run)
    assert run.code == 2
    lines = [l for l in run.err.splitlines() if l.startswith(str(rules))]
    keys = {(Path(l.split(": ")[0]).name, l.split(": ")[1]) for l in lines}
    assert {("many-problems.toml", "id"), ("many-problems.toml", "severity"), ("many-problems.toml", "bogus"),
            ("many-problems.toml", "references[0].url"), ("many-problems.toml", "when.all[0].matches"),
            ("other.toml", "when.all[0].matches"), ("other.toml", "examples[1].expect")} <= keys, run.err


# --- regexes --------------------------------------------------------------------------------

def test_catastrophic_pattern_validates_fast_and_unsafe_ones_are_refused(tmp_path):
    rules = tmp_path / "rules"
    write_rule(rules, "greeting-nested", "(a+)+$")  # exponential in backtracking engines, linear in RE2
    run = cli("rules", "validate", rules, timeout=60)
    assert_no_traceback(run)
    assert run.code == 0 and "1 rule(s) valid" in run.out, run.err
    assert run.wall < 20
    backref = write_rule(rules, "greeting-backref", "(a+)+\\1$")
    run = cli("rules", "validate", rules)
    assert_usage_error(run, str(backref), "when.all[0].matches", "RE2")


# --- targets --------------------------------------------------------------------------------

@pytest.mark.parametrize("target,fragment", [
    ("127.0.0.1:" + "9" * 5000, "is not a number between 1 and 65535"),
    ("127.0.0.1:²", "is not a number"),
    ("127.0.0.1:٣", "is not a number"),
    ("smtp://127.0.0.1:٢٥", "is not a number"),
    ("127.0.0.1:0", "out of range"),
    ("127.0.0.1:65536", "out of range"),
], ids=["5000-digits", "superscript-two", "arabic-indic-three", "arabic-indic-25-url", "zero", "65536"])
def test_bad_ports_on_the_command_line_and_in_files(tmp_path, target, fragment):
    run = cli("scan", target, "--timeout", "5")
    assert_usage_error(run, fragment)
    assert len(run.err) < 2000  # a 5000-digit port is not echoed back whole
    targets = tmp_path / "fleet.txt"
    targets.write_text(f"# fleet\n127.0.0.1:2525\n{target}\n")
    run = cli("scan", "-f", targets, "--timeout", "5")
    assert_usage_error(run, str(targets), "line 3", fragment)


def test_every_bad_target_line_with_verbose(tmp_path):
    targets = tmp_path / "fleet.txt"
    targets.write_text("127.0.0.1:²\n127.0.0.1:25\nhttp://x.example\n" + "a" * 5000 + "\n")
    quiet = cli("scan", "-f", targets)
    assert_usage_error(quiet, "line 1")
    loud = cli("scan", "-f", targets, "--verbose")
    assert_usage_error(loud)
    assert [l.split(": ")[3] for l in loud.err.splitlines()] == ["line 1", "line 3", "line 4"], loud.err


# --- nothing lost: atomic writes, full disk, signals ----------------------------------------

def test_full_disk_keeps_the_old_file(tmp_path, saved_report, monkeypatch, capsys):
    out = tmp_path / "report.json"
    out.write_text('{"old": true}\n')

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(SystemExit) as exc:
        main(["report", str(saved_report), "-o", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"cannot write {out}: no space left on device (the previous file is left unchanged)" in err
    assert out.read_text() == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left behind


def test_full_tmpfs_keeps_the_old_file(tmp_path, saved_report):
    """The real thing when we may mount a small tmpfs (root in CI containers); skipped otherwise."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the injected ENOSPC test covers the logic")
    try:
        old = mnt / "report.json"
        old.write_text('{"old": true}\n')
        (mnt / "filler").write_bytes(b"\0" * 50_000)
        run = cli("report", saved_report, "-o", old)
        assert_usage_error(run, str(old), "no space left on device")
        assert old.read_text() == '{"old": true}\n'
        assert sorted(os.listdir(mnt)) == ["filler", "report.json"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_sigterm_during_a_write_leaves_the_old_file(tmp_path):
    """SIGTERM arrives while the report is being written: exit 143, old file whole, no temp file."""
    out = tmp_path / "report.json"
    out.write_text('{"old": true}\n')
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from smtpaudit import atomic
from smtpaudit.interrupt import handle_signals, Interrupted
real_fsync = atomic.os.fsync
def slow_fsync(fd):
    os.kill(os.getpid(), signal.SIGTERM)   # the signal lands between write and rename
    real_fsync(fd)
atomic.os.fsync = slow_fsync
try:
    with handle_signals():
        atomic.write_text({str(out)!r}, "x" * 1_000_000)
except Interrupted as exc:
    sys.exit(exc.exit_code)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_text() == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["report.json"]


# --- output formats and pipes ---------------------------------------------------------------

@pytest.mark.parametrize("name,check", [
    ("audit.html", lambda t: t.startswith("<!DOCTYPE html>")),
    ("audit.sarif", lambda t: json.loads(t)["version"] == "2.1.0"),
    ("audit.sarif.json", lambda t: json.loads(t)["version"] == "2.1.0"),
    ("audit.txt", lambda t: not t.lstrip().startswith(("{", "<"))),
    ("audit.json", lambda t: json.loads(t)["tool"]["name"] == "smtpaudit"),
])
def test_format_follows_the_file_name(tmp_path, saved_report, name, check):
    out = tmp_path / name
    run = cli("report", saved_report, "-o", out, "-q")
    assert_no_traceback(run)
    assert run.code == 0, run.err
    assert check(out.read_text())


def test_format_contradicting_the_file_name_is_exit_2(tmp_path, saved_report):
    out = tmp_path / "audit.html"
    run = cli("report", saved_report, "-o", out, "--format", "sarif")
    assert_usage_error(run, "--format sarif contradicts", "audit.html")
    assert not out.exists()
    run = cli("diff", saved_report, saved_report, "-o", tmp_path / "d.sarif")
    assert_usage_error(run, "cannot write sarif")


def test_broken_pipe_ends_quietly():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(f"{shutil.which('python3') or sys.executable} -m smtpaudit rules list | head -n 1; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    assert proc.returncode in (0, 141)  # 141 = 128 + SIGPIPE, like any Unix filter whose reader left


def test_rules_validate_checks_policies_too(tmp_path):
    rules = tmp_path / "rules"
    write_rule(rules, "good-one", "^a+$")
    (rules / "policies").mkdir()
    bad = rules / "policies" / "strict.toml"
    bad.write_text('id = "strict"\nversion = "1"\ntitle = "t"\n[params."tls-legacy-protocols"]\nlegacy = 12\n'
                   '[params."good-one"]\nnope = 1\n')
    run = cli("rules", "validate", rules)
    assert_usage_error(run, str(bad), "params.tls-legacy-protocols.legacy")
    assert f"{bad}: params.good-one.nope: the rule has no such parameter" in run.err


def test_bad_baseline_stops_a_scan_before_it_starts(tmp_path):
    baseline = tmp_path / "baseline.toml"
    baseline.write_text('version = 1\n[[accept]]\nrule = "x"\n')
    run = cli("scan", "127.0.0.1:9", "--baseline", baseline, "--timeout", "60", "-o", tmp_path / "r.json")
    assert_usage_error(run, str(baseline), "accept[1].endpoint")
    assert run.wall < 10 and not (tmp_path / "r.json").exists()
