"""tomlcache: the same data as tomllib, from a cache only while the file is unchanged."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from smtpaudit import tomlcache


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", str(d))
    return d


def test_cached_data_equals_parsed_and_follows_changes(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n[params]\nn = 1\nx = [1.5, "s"]\n')
    first = tomlcache.load(f)
    assert first == tomllib.loads(f.read_text())
    assert len(list(cache.glob("*.json"))) == 1
    assert tomlcache.load(f) == first  # from the cache
    f.write_text('id = "b"\n')
    os.utime(f, ns=(1, 1))  # even with an old timestamp, the size changed: parsed again
    assert tomlcache.load(f) == {"id": "b"}


def test_dates_are_not_cached_and_errors_still_raise(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text("when = 2026-01-01\n")
    assert str(tomlcache.load(f)["when"]) == "2026-01-01"
    assert not list(cache.glob("*.json"))
    bad = tmp_path / "bad.toml"
    bad.write_text("id = \n")
    with pytest.raises(tomllib.TOMLDecodeError):
        tomlcache.load(bad)


def test_a_corrupt_cache_file_is_ignored(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n')
    tomlcache.load(f)
    for entry in cache.glob("*.json"):
        entry.write_text("{not json")
    assert tomlcache.load(f) == {"id": "a"}


def test_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", "off")
    f = tmp_path / "r.toml"
    f.write_text('id = "a"\n')
    assert tomlcache.load(f) == {"id": "a"} and tomlcache.cache_dir() is None
