"""Nightly history: every recorded scan kept in an embedded SQLite database, and the questions a
month of nights answers (trend, finding lifecycles, one endpoint's timeline, time to fix).

``store`` opens, validates, migrates and writes the database; ``codec`` splits a report into
content-addressed, compressed parts; ``queries`` computes trends and lifecycles from it;
``render`` turns query results into text, JSON and the HTML report's history section;
``commands`` is what the CLI calls.
"""

from smtpaudit.history.store import HistoryError, HistoryStore, open_store

__all__ = ["HistoryError", "HistoryStore", "open_store"]
