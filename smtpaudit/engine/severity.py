"""Severity, confidence and grade vocabularies, and the one table that maps them to SARIF and exit codes.

Scores follow GitHub code scanning's ``security-severity`` bands: critical > 9.0, high 7.0-8.9,
medium 4.0-6.9, low 0.1-3.9, info 0.0. The SARIF level for each severity is defined here once
and shared by the SARIF renderer and the ``--fail-on`` exit-code logic.
"""

from __future__ import annotations

SEVERITIES = ("critical", "high", "medium", "low", "info")
CONFIDENCES = ("certain", "firm", "tentative")
GRADES = ("A+", "A", "B", "C", "D", "E", "F")

SEVERITY_RANK = {s: len(SEVERITIES) - i for i, s in enumerate(SEVERITIES)}  # critical=5 .. info=1

# severity -> (SARIF level, default score)
SARIF_LEVEL = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "info": "note",
}

# SARIF precision from confidence (GitHub sorts by it).
SARIF_PRECISION = {"certain": "very-high", "firm": "high", "tentative": "medium"}


def severity_for_score(score: float) -> str:
    """The severity band a 0-10 score falls in (8.9 < score <= 9.0 is left undefined by GitHub: invalid)."""
    if score > 9.0:
        return "critical"
    if 7.0 <= score <= 8.9:
        return "high"
    if 4.0 <= score <= 6.9:
        return "medium"
    if 0.1 <= score <= 3.9:
        return "low"
    if score == 0:
        return "info"
    return "invalid"


def at_or_above(severity: str, threshold: str) -> bool:
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[threshold]
