"""Shared pytest setup: the real-server lab plugin (when present) and report-schema validation."""

from __future__ import annotations

import importlib.util

pytest_plugins = [p for p in ("tests.lab.fixtures",) if importlib.util.find_spec(p) is not None]
