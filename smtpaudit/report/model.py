"""The canonical report model: loading, validating and writing scan reports as JSON.

The report is plain JSON data (built by ``smtpaudit.scan``); its shape is published as a JSON
Schema in ``report-schema.json`` next to this module. SARIF, HTML and text are rendered from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("report-schema.json")
SUPPORTED_SCHEMA_VERSIONS = ("1.0",)


class ReportError(ValueError):
    """A saved report cannot be used; the message says which file and why."""


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def load(path: str | Path) -> dict[str, Any]:
    """Read a saved report and check the parts every consumer relies on."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read report {str(p)!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{p}: not a JSON report ({exc})") from None
    if not isinstance(data, dict) or data.get("tool", {}).get("name") != "smtpaudit":
        raise ReportError(f"{p}: not an smtpaudit report")
    if data.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
        raise ReportError(f"{p}: report schema_version {data.get('schema_version')!r} is not supported (supported: {', '.join(SUPPORTED_SCHEMA_VERSIONS)})")
    if not isinstance(data.get("endpoints"), list):
        raise ReportError(f"{p}: report has no endpoints list")
    return data
