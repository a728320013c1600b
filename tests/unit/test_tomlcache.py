"""tomlcache: the same data as tomllib, from a cache only for exactly the same text; the rule set
loaded through it reports every error as it would without it."""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import pytest

from smtpaudit import tomlcache
from smtpaudit.cli import main


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", str(d))
    return d / "toml"


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json"))


def test_cached_data_equals_parsed_and_follows_changes(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n[params]\nn = 1\nx = [1.5, "s", -0.0, 12345678901234567890]\n')
    first = tomlcache.load(f)
    assert first == tomllib.loads(f.read_text())
    assert len(_entries(cache)) == 1
    assert tomlcache.load(f) == first  # from the cache
    f.write_text('id = "b"\n')
    os.utime(f, ns=(1, 1))
    assert tomlcache.load(f) == {"id": "b"}
    assert len(_entries(cache)) == 1  # one entry per file: the old one was replaced


def test_an_edit_keeping_size_and_mtime_is_still_seen(tmp_path: Path, cache: Path) -> None:
    # Coarse timestamps, `cp -p`, a checkout: size and mtime say nothing; the key is the content.
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n')
    st = f.stat()
    assert tomlcache.load(f) == {"id": "a"}
    f.write_text('id = "b"\n')
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert tomlcache.load(f) == {"id": "b"}


def test_cached_data_is_a_fresh_copy(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('[params]\nx = [1]\n')
    tomlcache.load(f)
    first = tomlcache.load(f)
    first["params"]["x"].append(2)  # a caller that changes what it got changes nothing for the next
    assert tomlcache.load(f) == {"params": {"x": [1]}}


def test_dates_are_not_cached_and_errors_still_raise(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text("when = 2026-01-01\n")
    assert str(tomlcache.load(f)["when"]) == "2026-01-01"
    assert not _entries(cache)
    bad = tmp_path / "bad.toml"
    bad.write_text("id = \n")
    with pytest.raises(tomllib.TOMLDecodeError):
        tomlcache.load(bad)
    assert not _entries(cache)


def _edit(p: Path, change) -> None:
    entry = json.loads(p.read_text())
    change(entry)
    p.write_text(json.dumps(entry))


@pytest.mark.parametrize("damage", [
    lambda p: p.write_text("{not json"),
    lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
    lambda p: p.write_text(""),
    lambda p: p.write_text("[1, 2]"),
    lambda p: _edit(p, lambda e: e["header"].update(format=999)),  # another version's
    lambda p: _edit(p, lambda e: e["header"].update(python="2.7")),
    lambda p: _edit(p, lambda e: (e["header"].update(sha256="0" * 64), e.update(data={"id": "evil"}))),
    lambda p: _edit(p, lambda e: e["header"].update(path="/elsewhere.toml")),
    lambda p: _edit(p, lambda e: e.update(data=["not", "a", "table"])),
    lambda p: _edit(p, lambda e: e.pop("data")),
    lambda p: p.write_text("[" * 100000),  # nested past the JSON parser's recursion limit
])
def test_a_damaged_or_foreign_entry_is_ignored_and_rewritten(tmp_path: Path, cache: Path, damage) -> None:
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n')
    tomlcache.load(f)
    (entry,) = _entries(cache)
    damage(entry)
    assert tomlcache.load(f) == {"id": "a"}
    assert json.loads(entry.read_text())["data"] == {"id": "a"}  # rebuilt


def test_an_entry_others_can_write_is_not_trusted(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n')
    tomlcache.load(f)
    (entry,) = _entries(cache)
    assert entry.stat().st_mode & 0o777 == 0o600
    forged = json.loads(entry.read_text())
    forged["data"] = {"id": "forged"}
    entry.write_text(json.dumps(forged))
    entry.chmod(0o666)
    assert tomlcache.load(f) == {"id": "a"}


def test_an_unwritable_cache_directory_only_means_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", str(blocker))  # mkdir below it fails, whoever runs the test
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n')
    assert tomlcache.load(f) == {"id": "a"}
    assert tomlcache.load(f) == {"id": "a"}
    assert blocker.is_file() and not list(tmp_path.glob(".smtpaudit-*"))


def test_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", "off")
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n')
    assert tomlcache.load(f) == {"id": "a"} and tomlcache.cache_dir() is None


def test_default_location_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTPAUDIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tomlcache.cache_dir() == tmp_path / "xdg" / "smtpaudit" / "toml"


# -- the rule set through the cache ------------------------------------------------------------

GOOD_RULE = Path(__file__).resolve().parents[2] / "rules" / "auth" / "auth-before-starttls.toml"


def _rule_dir(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "rules" / "custom"
    d.mkdir(parents=True)
    rule = d / "my-rule.toml"
    rule.write_text(GOOD_RULE.read_text().replace('id = "auth-before-starttls"', 'id = "my-rule"'))
    return tmp_path / "rules", rule


def test_rule_set_is_the_same_from_the_cache(cache: Path, capsys) -> None:
    assert main(["rules", "list", "--json"]) == 0
    cold = capsys.readouterr().out
    assert len(_entries(cache)) > 90  # every rule file
    assert main(["rules", "list", "--json"]) == 0
    assert capsys.readouterr().out == cold


def test_an_edited_invalid_rule_gives_the_same_error_with_a_warm_cache(tmp_path: Path, cache: Path, capsys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rules, rule = _rule_dir(tmp_path)
    assert GOOD_RULE.exists()
    assert main(["rules", "validate", str(rules)]) == 0
    assert main(["rules", "validate", str(rules)]) == 0  # warm
    capsys.readouterr()
    st = rule.stat()
    text = rule.read_text()
    broken = text.replace('severity = "high"', 'severity = "hihg"')
    assert len(broken) == len(text) and broken != text
    rule.write_text(broken)
    os.utime(rule, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the content says
    assert main(["rules", "validate", str(rules)]) == 2
    warm_err = capsys.readouterr().err
    assert f"{rule}: severity: expected one of critical" in warm_err
    assert main(["scan", "127.0.0.1:1", "--rules", str(rules)]) == 2
    assert f"{rule}: severity: expected one of critical" in capsys.readouterr().err
    # ... and exactly what a run without any cache says.
    shutil.rmtree(cache)
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", "off")
    assert main(["rules", "validate", str(rules)]) == 2
    assert capsys.readouterr().err == warm_err


def test_a_rule_file_that_stops_parsing_is_reported_not_served(tmp_path: Path, cache: Path, capsys) -> None:
    rules, rule = _rule_dir(tmp_path)
    assert main(["rules", "validate", str(rules)]) == 0
    capsys.readouterr()
    rule.write_text(rule.read_text() + "\nid = 3 = 4\n")
    assert main(["rules", "validate", str(rules)]) == 2
    assert f"{rule}: not valid TOML" in capsys.readouterr().err
