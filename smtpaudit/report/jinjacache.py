"""Report templates compiled once: the Python source Jinja generates for a template, cached.

One job: :class:`CachingEnvironment` is a ``jinja2.Environment`` whose ``compile`` takes the
generated Python source from a cache entry (``smtpaudit/cache.py``, kind ``jinja``) when the same
template text was compiled before by the same Jinja, Python and environment settings. Lexing,
parsing and code generation of the report templates took ~45 ms of every process that writes
HTML; Python's own ``compile`` of the cached source (~9 ms) still runs each time, so no bytecode,
marshal or pickle is ever read back: the entry is JSON text. That text is code the report
runs, so it is believed only from the user's own cache (``cache.read``: owned by this user,
writable by nobody else) and only for exactly the template text, Jinja version and settings it
was generated from; anything else is compiled afresh. Template syntax errors are raised by Jinja
as before (a template that does not compile is never cached).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import jinja2

from smtpaudit import cache

_FORMAT = 1


def _settings(env: jinja2.Environment) -> str | None:
    """Everything of the environment the generated code depends on, or None if not cacheable."""
    if not isinstance(env.autoescape, bool) or env.finalize is not None or env.is_async:
        return None

    def calls(table: dict[str, Any]) -> list[list[str]]:
        # Code generation checks each filter/test exists and how it is called (context, environment).
        return sorted([name, str(getattr(fn, "jinja_pass_arg", None))] for name, fn in table.items())

    parts = [
        env.block_start_string, env.block_end_string, env.variable_start_string, env.variable_end_string,
        env.comment_start_string, env.comment_end_string, env.line_statement_prefix, env.line_comment_prefix,
        env.trim_blocks, env.lstrip_blocks, env.newline_sequence, env.keep_trailing_newline, env.optimized,
        env.autoescape, sorted(env.extensions), calls(env.filters), calls(env.tests),
        f"{env.code_generator_class.__module__}.{env.code_generator_class.__qualname__}",
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class CachingEnvironment(jinja2.Environment):
    """A Jinja environment whose template compilation goes through the per-user cache."""

    def compile(self, source: Any, name: str | None = None, filename: str | None = None,
                raw: bool = False, defer_init: bool = False) -> Any:
        directory = cache.cache_dir("jinja")
        settings = _settings(self) if directory is not None else None
        if raw or defer_init or not isinstance(source, str) or settings is None or directory is None:
            return super().compile(source, name, filename, raw=raw, defer_init=defer_init)
        header = {"format": _FORMAT, "jinja": jinja2.__version__, "python": "%d.%d" % sys.version_info[:2],
                  "name": name, "filename": filename, "settings": settings,
                  "sha256": hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()}
        entry = cache.entry_path(directory, f"{filename}|{name}")
        python = cache.read(entry, header)
        if not isinstance(python, str):
            python = super().compile(source, name, filename, raw=True)
            cache.write(entry, header, python)
        return self._compile(python, filename or "<template>")
