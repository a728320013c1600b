"""Reading the files a user hands us (saved reports, TOML rules/policies/baselines, targets files)
with bounded cost and errors that name the file and the exact place.

Every loader checks size before reading, decodes strictly, bounds nesting depth (the standard
parsers recurse: JSON nested 100k deep or TOML 5000 deep would otherwise end in RecursionError),
and reports problems as :class:`InputError`: the file, a JSON pointer (``/endpoints/0/status``)
or TOML key (``params.tls-legacy.minimum``), and what is wrong. ``str()`` is one line about the
first problem; ``problems`` holds all of them (shown with ``--verbose``).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from smtpaudit import tomlcache

# Saved reports of big fleets reach tens of MB; nothing legitimate comes near these.
MAX_JSON_BYTES = 512 * 1024 * 1024
MAX_TOML_BYTES = 16 * 1024 * 1024
MAX_TEXT_BYTES = 64 * 1024 * 1024
# A report nests about 8 levels (facts may hold objects); rules nest conditions a few levels.
MAX_JSON_DEPTH = 64
MAX_TOML_DEPTH = 32
MAX_SHOWN = 200  # characters of a bad value quoted in a message


@dataclass(frozen=True)
class Problem:
    where: str  # JSON pointer or TOML key; "" for the whole file
    message: str

    def line(self, file: str) -> str:
        return f"{file}: {self.where}: {self.message}" if self.where else f"{file}: {self.message}"


class InputError(ValueError):
    """An input file cannot be used. ``str()`` is one line; ``problems`` lists every problem found."""

    def __init__(self, file: str | Path, problems: Iterable[Problem] | str, where: str = "") -> None:
        self.file = str(file)
        if isinstance(problems, str):
            problems = [Problem(where, problems)]
        self.problems = list(problems) or [Problem("", "invalid")]
        first = self.problems[0].line(self.file)
        more = len(self.problems) - 1
        super().__init__(first + (f" (+{more} more problem(s); --verbose lists them)" if more else ""))

    def lines(self) -> list[str]:
        return [p.line(self.file) for p in self.problems]


def shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def read_bytes(path: str | Path, *, what: str, max_bytes: int) -> bytes:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            # Sized by the file, not by the bound: read(max_bytes + 1) allocates a buffer of the
            # bound (16 MiB for TOML) for every small rule file. The result is the same: the
            # first max_bytes + 1 bytes at most, also when the size is unknown (pipe) or grew.
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(min(size, max_bytes) + 1)
            if size < len(data) <= max_bytes:
                data += fh.read(max_bytes + 1 - len(data))
    except IsADirectoryError:
        raise InputError(p, f"cannot read {what}: is a directory") from None
    except OSError as exc:
        raise InputError(p, f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputError(p, f"{what} larger than {max_bytes // (1024 * 1024)} MiB; refusing to load it")
    return data


def read_text(path: str | Path, *, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    data = read_bytes(path, what=what, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"{what} is not UTF-8 text (byte {exc.start})") from None


def json_pointer(parts: Iterable[Any]) -> str:
    """RFC 6901: ``/endpoints/0/facts/smtp.ehlo.keywords`` (``~`` and ``/`` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


def toml_key(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def too_deep(data: Any, max_depth: int) -> list[Any] | None:
    """The path to the first place nested deeper than ``max_depth``, or None. Iterative (no recursion)."""
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            items: Iterable[tuple[Any, Any]] = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        if len(path) >= max_depth:
            return path
        for key, child in items:
            if isinstance(child, (dict, list)):
                stack.append((child, [*path, key]))
    return None


def parse_json(text: str, file: str | Path, *, what: str = "JSON file", max_depth: int = MAX_JSON_DEPTH) -> Any:
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(file, f"{what} is nested too deeply to parse (limit {max_depth} levels)") from None
    except json.JSONDecodeError as exc:
        raise InputError(file, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(file, f"not usable JSON: {shorten(str(exc))}") from None
    path = too_deep(data, max_depth)
    if path is not None:
        raise InputError(file, f"nested deeper than {max_depth} levels", where=json_pointer(path))
    return data


def load_json(path: str | Path, *, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    return parse_json(read_text(path, what=what, max_bytes=max_bytes), path, what=what, max_depth=max_depth)


def load_toml(path: str | Path, *, what: str = "TOML file", max_bytes: int = MAX_TOML_BYTES, max_depth: int = MAX_TOML_DEPTH,
              cached: bool = False) -> dict[str, Any]:
    """Parse a TOML file with bounded size and depth; errors name the file (and line or key).

    ``cached``: the parse comes from ``tomlcache`` when this exact text was parsed before (rule
    files, read on every run). Reading, the size bound and the depth check happen either way,
    and a file that does not parse is never cached, so every error is the same as without it."""
    text = read_text(path, what=what, max_bytes=max_bytes)
    try:
        data = tomlcache.loads(path, text) if cached else tomllib.loads(text)
    except RecursionError:
        raise InputError(path, f"{what} is nested too deeply to parse (limit {max_depth} levels)") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None
    except ValueError as exc:  # integers beyond Python's digit limit, and the like
        raise InputError(path, f"not usable TOML: {shorten(str(exc))}") from None
    where = too_deep(data, max_depth)
    if where is not None:
        raise InputError(path, f"nested deeper than {max_depth} levels", where=toml_key(where))
    return data


@lru_cache(maxsize=1)
def _report_validator() -> Any:
    import jsonschema

    from smtpaudit.report.model import schema

    return jsonschema.Draft202012Validator(schema())


def schema_problems(report: Any) -> list[Problem]:
    """Every place a report departs from the shipped JSON Schema, outermost first."""
    errors = sorted(_report_validator().iter_errors(report), key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    problems = []
    for err in errors:
        message = err.message
        if len(message) > 2 * MAX_SHOWN:
            message = message[: 2 * MAX_SHOWN] + "..."
        problems.append(Problem(json_pointer(err.absolute_path), message))
    return problems


def load_report(path: str | Path) -> dict[str, Any]:
    """A saved smtpaudit report, checked against the JSON Schema before anything reads it."""
    data = load_json(path, what="report")
    if not isinstance(data, dict) or not isinstance(data.get("tool"), dict) or data["tool"].get("name") != "smtpaudit":
        raise InputError(path, "not an smtpaudit report (no tool.name \"smtpaudit\")", where="/tool")
    problems = schema_problems(data)
    if problems:
        raise InputError(path, problems)
    return data
