"""Compiled report templates from the per-user cache: the same page, recompiled whenever the
template, Jinja or the environment's settings differ, and never code from an entry others can write."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest

from smtpaudit.report import html
from smtpaudit.report.jinjacache import CachingEnvironment


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "jinja"


def _env(templates: Path, **settings) -> CachingEnvironment:
    return CachingEnvironment(loader=jinja2.FileSystemLoader(str(templates)), autoescape=True, **settings)


def test_report_page_is_identical_cold_warm_and_without_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = json.loads((Path(__file__).resolve().parents[2] / "reports" / "samples" / "lab-fleet.json").read_text())
    html.environment.cache_clear()
    cold = html.render(report)
    assert len(list(cache.glob("*.json"))) >= 3  # the page and the templates it includes
    html.environment.cache_clear()
    warm = html.render(report)
    monkeypatch.setenv("SMTPAUDIT_CACHE_DIR", "off")
    html.environment.cache_clear()
    uncached = html.render(report)
    html.environment.cache_clear()
    assert cold == warm == uncached


def test_an_edited_template_is_compiled_again(tmp_path: Path, cache: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "page.j2").write_text("<p>{{ x }}</p>")
    assert _env(t).get_template("page.j2").render(x="<a>") == "<p>&lt;a&gt;</p>"
    (t / "page.j2").write_text("<b>{{ x }}</b>")
    assert _env(t).get_template("page.j2").render(x="1") == "<b>1</b>"


def test_other_settings_get_their_own_code(tmp_path: Path, cache: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "page.j2").write_text("{% if true %}\n  <p>{{ x }}</p>\n{% endif %}\n")
    variants = [dict(autoescape=True), dict(autoescape=True, trim_blocks=True, lstrip_blocks=True), dict(autoescape=False)]
    pages = []
    for settings in variants:
        cached = CachingEnvironment(loader=jinja2.FileSystemLoader(str(t)), **settings).get_template("page.j2").render(x="<a>")
        plain = jinja2.Environment(loader=jinja2.FileSystemLoader(str(t)), **settings).get_template("page.j2").render(x="<a>")
        assert cached == plain
        pages.append(cached)
    assert len(set(pages)) == 3  # each variant compiled its own code, none served another's
    assert len(list(cache.glob("*.json"))) == 1  # one entry per template, replaced on each change


def test_a_syntax_error_is_raised_and_not_cached(tmp_path: Path, cache: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "bad.j2").write_text("{% if %}")
    with pytest.raises(jinja2.TemplateSyntaxError):
        _env(t).get_template("bad.j2")
    assert not list(cache.glob("*.json"))


def _forge(cache: Path) -> Path:
    (entry,) = cache.glob("*.json")
    data = json.loads(entry.read_text())
    assert "def root" in data["data"]  # generated Python source, stored as text
    data["data"] = "raise SystemExit('forged cache entry executed')"
    entry.write_text(json.dumps(data))
    return entry


def test_an_entry_others_can_write_is_never_run(tmp_path: Path, cache: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "page.j2").write_text("<p>{{ x }}</p>")
    _env(t).get_template("page.j2")
    entry = _forge(cache)
    entry.chmod(0o666)
    assert _env(t).get_template("page.j2").render(x="1") == "<p>1</p>"


@pytest.mark.parametrize("damage", [
    lambda e: e.write_text("{"),
    lambda e: e.write_text(""),
    lambda e: e.write_text(json.dumps({**json.loads(e.read_text()), "header": {"format": 0}})),
    lambda e: e.write_text(json.dumps({**json.loads(e.read_text()), "data": 42})),
])
def test_a_damaged_entry_is_ignored(tmp_path: Path, cache: Path, damage) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "page.j2").write_text("<p>{{ x }}</p>")
    _env(t).get_template("page.j2")
    (entry,) = cache.glob("*.json")
    damage(entry)
    assert _env(t).get_template("page.j2").render(x="1") == "<p>1</p>"
