"""Which format an output file gets: the explicit --format, else the file name's extension.

``-o audit.html`` without ``--format`` must not silently write JSON (a browser or a
code-scanning upload would get the wrong thing); an explicit format that contradicts the
extension is a usage error rather than a guess.
"""

from __future__ import annotations

from pathlib import PurePath

# --color: auto = only on a terminal and without NO_COLOR (report/text.py decides).
COLOR_CHOICES = ("auto", "always", "never")

# Extension (lower case) -> format. ".sarif.json" is GitHub's habit for SARIF files.
BY_EXTENSION = {".json": "json", ".sarif": "sarif", ".html": "html", ".htm": "html", ".txt": "text", ".text": "text"}


class FormatError(ValueError):
    """--format and the output file name disagree, or the format is not available here."""


def format_from_name(path: str) -> str | None:
    name = PurePath(path).name.lower()
    if name.endswith(".sarif.json"):
        return "sarif"
    return BY_EXTENSION.get(PurePath(name).suffix)


def choose_format(output: str | None, explicit: str | None, *, allowed: tuple[str, ...], default_file: str, default_terminal: str) -> str:
    """The format to write ``output`` in (``None`` or ``-`` is the terminal)."""
    to_file = bool(output) and output != "-"
    implied = format_from_name(output) if to_file else None
    if explicit:
        if implied and implied != explicit and not (explicit == "json" and implied == "sarif" and output and output.lower().endswith(".json")):
            raise FormatError(f"--format {explicit} contradicts the output file name {output} (a .{_ext(output)} file is {implied}); drop --format or rename the file")
        return explicit
    if implied:
        if implied not in allowed:
            raise FormatError(f"{output}: this command cannot write {implied} (formats: {', '.join(allowed)}); pick another file name or --format")
        return implied
    return default_file if to_file else default_terminal


def _ext(path: str | None) -> str:
    return PurePath(path or "").suffix.lstrip(".")
