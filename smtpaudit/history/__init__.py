"""Nightly history: every recorded scan kept in an embedded SQLite database, and the questions a
month of nights answers (trend, finding lifecycles, one endpoint's timeline, time to fix).

``store`` opens, validates, migrates and writes the database; ``codec`` splits a report into
content-addressed, compressed parts; ``queries`` computes trends and lifecycles from it;
``render`` turns query results into text, JSON and the HTML report's history section;
``commands`` is what the CLI calls.
"""

from typing import Any

__all__ = ["HistoryError", "HistoryStore", "open_store"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the CLI imports history.commands for its parser on every run, and
    # the store's SQLite and codec modules are needed only by runs that touch a database.
    if name in __all__:
        from smtpaudit.history import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
