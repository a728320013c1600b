"""User regular expressions (rule ``matches``) with bounded cost, run by RE2.

Rules come from users' CI repositories and are matched against server-controlled text, so a
pattern such as ``(a+)+$`` must not be able to hang a scan. RE2 (``google-re2``) matches in time
linear in the subject for every pattern it accepts: there is no backtracking to bound, so the
result does not depend on machine load the way a wall-clock match timeout (``regex`` with
``timeout=``) would, and patterns it cannot run in linear time (backreferences, lookaround) are
refused when the rule is loaded, which lets ``rules validate`` name them. The remaining bounds
are explicit: pattern length, the compiled program's memory, and the subject length.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

MAX_PATTERN = 4096  # characters
MAX_PROGRAM_MEMORY = 8 << 20  # bytes RE2 may use for one compiled pattern (bigger ones fail to compile)
MAX_SUBJECT = 256 * 1024  # characters of fact text a pattern is matched against


class RegexError(ValueError):
    """The pattern cannot be run safely (or at all) by the engine; the message says why."""


class RegexBudgetExceeded(Exception):
    """Matching would exceed a bound; the rule using it is not evaluated, with this reason."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print to stderr; our error message says it once
    options.max_mem = MAX_PROGRAM_MEMORY
    return options


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """Compile with RE2; raise RegexError for patterns it refuses (unsafe, unsupported, too big)."""
    if not isinstance(pattern, str):
        raise RegexError("a regular expression must be a string")
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"pattern longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        hint = ""
        if any(s in pattern for s in ("(?=", "(?!", "(?<=", "(?<!")) or any(f"\\{d}" in pattern for d in "123456789"):
            hint = " (lookaround and backreferences need backtracking, which can take exponential time; RE2 refuses them)"
        raise RegexError(f"not accepted by the linear-time regex engine RE2: {detail}{hint}") from None
    except (TypeError, ValueError) as exc:  # e.g. a pattern with lone surrogates
        raise RegexError(f"not a usable regular expression: {exc}") from None


def search(pattern: str, subject: str) -> bool:
    """True if ``pattern`` matches somewhere in ``subject``; RegexBudgetExceeded past the subject bound."""
    if len(subject) > MAX_SUBJECT:
        raise RegexBudgetExceeded(f"regular expression not run: the text is {len(subject)} characters, above the {MAX_SUBJECT} bound")
    try:
        return compile_pattern(pattern).search(subject) is not None
    except re2.error as exc:
        raise RegexBudgetExceeded(f"regular expression failed in RE2: {exc}") from None
    except (UnicodeError, ValueError) as exc:  # text RE2 cannot take (lone surrogates)
        raise RegexBudgetExceeded(f"regular expression not run: {exc}") from None
