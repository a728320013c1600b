"""Validation of reports against the published JSON Schema, for every test that produces one."""

from __future__ import annotations

from typing import Any

import jsonschema

from smtpaudit.report.model import schema

_VALIDATOR = jsonschema.Draft202012Validator(schema())


def assert_valid_report(report: dict[str, Any]) -> None:
    errors = sorted(_VALIDATOR.iter_errors(report), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
