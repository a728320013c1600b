"""Where the built-in rules live: the repository's rules/ (or SMTPAUDIT_RULES_DIR)."""

from __future__ import annotations

import os
from pathlib import Path


def builtin_rules_dir() -> Path:
    env = os.environ.get("SMTPAUDIT_RULES_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent / "rules"
    if repo.is_dir():
        return repo
    # Installed from a wheel: pyproject.toml packs rules/ as smtpaudit._rules.
    return Path(__file__).resolve().parent / "_rules"
