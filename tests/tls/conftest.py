"""Shared helpers for the TLS tests: tool discovery that skips locally and fails under CI=true."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Path of an external tool; skip with a reason when missing, fail when CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package needed for this test)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " and CI=true", pytrace=False)
        pytest.skip(message)
    return path
