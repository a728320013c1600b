"""The canonical report model: loading, validating and writing scan reports as JSON.

The report is plain JSON data (built by ``smtpaudit.scan``); its shape is published as a JSON
Schema in ``report-schema.json`` next to this module. SARIF, HTML and text are rendered from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smtpaudit.inputs import InputError, load_report

SCHEMA_PATH = Path(__file__).with_name("report-schema.json")
SUPPORTED_SCHEMA_VERSIONS = ("1.0",)


# A saved report that cannot be used: the message names the file and the JSON pointer.
ReportError = InputError


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def load(path: str | Path) -> dict[str, Any]:
    """Read a saved report, validated against ``report-schema.json`` (size and depth bounded)."""
    return load_report(path)
