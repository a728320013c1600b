"""Rendering a report in an output format, and writing text files. No network here.

``cli.py`` parses arguments and picks exit codes; it calls these functions.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from smtpaudit import atomic
from smtpaudit.report import html, model, sarif, text

FORMATS = ("json", "text", "sarif", "html")
EXTENSIONS = {"json": "json", "text": "txt", "sarif": "sarif", "html": "html"}


def renderer(fmt: str, *, sarif_artifact: str | None = None, history: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], str]:
    """Report -> text for one output format (HTML gains the history section when given)."""
    if fmt == "json":
        return model.dumps
    if fmt == "sarif":
        artifact = sarif.Artifact.parse(sarif_artifact) if sarif_artifact else None
        return lambda r: sarif.dumps(r, artifact=artifact)
    if fmt == "html":
        return lambda r: html.render(r, history=history)

    def as_text(r: dict[str, Any]) -> str:
        buf = io.StringIO()
        text.render(r, buf)
        return buf.getvalue()

    return as_text


def write_text(path: str | Path, content: str) -> Path:
    """Atomic: see smtpaudit.atomic."""
    return atomic.write_text(path, content)
