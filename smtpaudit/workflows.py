"""Rendering a report in an output format, and writing text files. No network here.

``cli.py`` parses arguments and picks exit codes; it calls these functions.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from smtpaudit import atomic

# Each renderer is imported when its format is asked for: HTML needs jinja2 (and cryptography for
# certificate details), which a JSON or SARIF run should not load.

FORMATS = ("json", "text", "sarif", "html")
EXTENSIONS = {"json": "json", "text": "txt", "sarif": "sarif", "html": "html"}


def renderer(fmt: str, *, sarif_artifact: str | None = None, history: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], str]:
    """Report -> text for one output format (HTML gains the history section when given)."""
    if fmt == "json":
        from smtpaudit.report import model

        return model.dumps
    if fmt == "sarif":
        from smtpaudit.report import sarif

        artifact = sarif.Artifact.parse(sarif_artifact) if sarif_artifact else None
        return lambda r: sarif.dumps(r, artifact=artifact)
    if fmt == "html":
        from smtpaudit.report import html

        return lambda r: html.render(r, history=history)
    from smtpaudit.report import text

    def as_text(r: dict[str, Any]) -> str:
        buf = io.StringIO()
        text.render(r, buf)
        return buf.getvalue()

    return as_text


def write_text(path: str | Path, content: str) -> Path:
    """Atomic: see smtpaudit.atomic."""
    return atomic.write_text(path, content)
