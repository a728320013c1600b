"""The small modules behind hostile-input handling: bounded loaders, atomic writes, output formats,
RE2 regexes, policy parameter types, EHLO parsing caps."""

from __future__ import annotations

import errno
import os
import time

import pytest

from smtpaudit import atomic
from smtpaudit.engine import regex
from smtpaudit.engine.policy import param_type_error
from smtpaudit.inputs import InputError, json_pointer, load_json, load_toml, toml_key, too_deep
from smtpaudit.outputs import FormatError, choose_format
from smtpaudit.probes.smtp.client import Reply
from smtpaudit.probes.smtp.ehlo import MAX_AUTH, parse_ehlo


def test_depth_is_found_without_recursion_and_named():
    data: dict = {"a": [{"b": None}]}
    node = data["a"][0]
    for _ in range(100_000):  # far deeper than Python's recursion limit
        node["b"] = {"b": None}
        node = node["b"]
    path = too_deep(data, 64)
    assert path is not None and len(path) == 64 and path[:3] == ["a", 0, "b"]
    assert too_deep({"a": [1, [2]]}, 64) is None
    assert json_pointer(["endpoints", 0, "facts", "a/b~c"]) == "/endpoints/0/facts/a~1b~0c"
    assert toml_key(["params", "tls-legacy", "legacy", 0]) == "params.tls-legacy.legacy[0]"


def test_loaders_name_file_and_place(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        load_json(f)
    f.write_text('{"a": ' * 70 + "1" + "}" * 70)
    with pytest.raises(InputError) as err:
        load_json(f)
    assert err.value.problems[0].where == "/" + "/".join(["a"] * 64)
    t = tmp_path / "x.toml"
    t.write_text("x = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(InputError, match="nested too deeply"):
        load_toml(t)
    t.write_bytes(b"x = \"\xff\"")
    with pytest.raises(InputError, match="not UTF-8"):
        load_toml(t)
    with pytest.raises(InputError, match="larger than"):
        load_json(f, max_bytes=10)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text("old")
    os.chmod(out, 0o640)
    atomic.write_text(out, "new")
    assert out.read_text() == "new" and (out.stat().st_mode & 0o777) == 0o640  # permissions kept

    def fail(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(atomic.WriteError, match="no space left on device.*left unchanged"):
        atomic.write_text(out, "newer")
    assert out.read_text() == "new" and os.listdir(tmp_path) == ["r.json"]

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_text(out, "newest")
    assert out.read_text() == "new" and os.listdir(tmp_path) == ["r.json"]


@pytest.mark.parametrize("output,explicit,expected", [
    ("a.html", None, "html"), ("a.SARIF", None, "sarif"), ("a.sarif.json", None, "sarif"), ("a.txt", None, "text"),
    ("a.json", None, "json"), ("a.out", None, "json"), (None, None, "text"), ("-", None, "text"),
    ("a.out", "html", "html"), ("a.html", "html", "html"), ("-", "sarif", "sarif"),
])
def test_format_choice(output, explicit, expected):
    assert choose_format(output, explicit, allowed=("json", "text", "sarif", "html"), default_file="json", default_terminal="text") == expected


def test_format_contradiction():
    with pytest.raises(FormatError, match="contradicts"):
        choose_format("a.html", "json", allowed=("json", "html"), default_file="json", default_terminal="text")
    with pytest.raises(FormatError, match="cannot write sarif"):
        choose_format("d.sarif", None, allowed=("text", "json", "html"), default_file="json", default_terminal="text")


def test_regex_is_linear_and_refuses_backtracking_constructs():
    t0 = time.process_time()
    assert regex.search("(a+)+$", "a" * 100_000 + "!") is False
    assert regex.search("(x+x+)+y", "x" * 100_000) is False
    assert time.process_time() - t0 < 1.0
    for bad in ("(a)\\1", "(?=a)", "(?<!b)a", "[", "a{1001}"):
        with pytest.raises(regex.RegexError):
            regex.compile_pattern(bad)
    with pytest.raises(regex.RegexBudgetExceeded, match="bound"):
        regex.search("a", "a" * (regex.MAX_SUBJECT + 1))


@pytest.mark.parametrize("default,value,ok", [
    (["TLSv1.0"], 12, False), (["TLSv1.0"], ["TLSv1.2"], True), (["TLSv1.0"], ["TLSv1.2", 3], False),
    (2048, 3072, True), (2048, 30.5, True), (2048, True, False), (True, 1, False), ("TLSv1.2", ["x"], False),
    ([], [1, "a"], True),
])
def test_policy_parameter_types(default, value, ok):
    assert (param_type_error(default, value) is None) == ok


def test_ehlo_auth_flood_is_capped_and_linear():
    lines = ["flood.example.test"] + ["AUTH " + " ".join(f"M{i}-{j}" for j in range(500)) for i in range(199)]
    t0 = time.process_time()
    caps = parse_ehlo(Reply(250, lines))
    assert time.process_time() - t0 < 1.0
    assert len(caps.auth) == MAX_AUTH and caps.auth[0] == "M0-0" and caps.truncated > 0
    caps = parse_ehlo(Reply(250, ["h", "AUTH=LOGIN PLAIN", "AUTH PLAIN CRAM-MD5", "SIZE ²", "SIZE 1000"]))
    assert caps.auth == ["LOGIN", "PLAIN", "CRAM-MD5"] and caps.size == 1000
