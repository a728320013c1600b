"""Rule conditions: validating their structure and evaluating them over facts (three-valued).

A condition is data, never code: ``all``/``any``/``not`` nodes and leaves ``{fact = NAME, OP = VALUE}``
(inside ``any_item``/``all_items``/``count_at_least``, leaves use ``field`` instead of ``fact``).
Evaluation returns True, False or None (unknown: a fact is absent because its probe did not
run or failed). ``all`` is False if any child is False, True if all are True, else unknown;
``any`` is the dual; ``not`` keeps unknown. A leaf over a ``null`` value is False, except
``exists = false`` which is True.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from smtpaudit.engine import regex
from smtpaudit.engine.regex import RegexBudgetExceeded, RegexError
from smtpaudit.inputs import shorten
from smtpaudit.engine.versions import VersionError, in_range, parse_range, Version

ABSENT = object()

_Op = Callable[[Any, Any], bool]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected.lower() in actual.lower()
    if isinstance(actual, list):
        return expected in actual
    return False


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _version_in(actual: Any, ranges: Any) -> bool:
    if not isinstance(actual, str):
        return False
    try:
        return any(in_range(actual, r) for r in _as_list(ranges))
    except VersionError:
        return False  # an unparseable disclosed version matches no range


def _version_cmp(actual: Any, bound: Any, want_less: bool) -> bool:
    if not isinstance(actual, str):
        return False
    try:
        a, b = Version(actual), Version(str(bound))
    except VersionError:
        return False
    return a < b if want_less else a >= b


LEAF_OPS: dict[str, _Op] = {
    "equals": lambda a, e: a == e,
    "not_equals": lambda a, e: a != e,
    "in": lambda a, e: a in e,
    "not_in": lambda a, e: a not in e,
    "contains": _contains,
    "excludes": lambda a, e: isinstance(a, (list, str)) and not _contains(a, e),
    "contains_any": lambda a, e: isinstance(a, (list, str)) and any(_contains(a, x) for x in _as_list(e)),
    "contains_all": lambda a, e: isinstance(a, (list, str)) and all(_contains(a, x) for x in _as_list(e)),
    "matches": lambda a, e: isinstance(a, str) and regex.search(e, a),
    "less_than": lambda a, e: _num(a) and a < e,
    "at_most": lambda a, e: _num(a) and a <= e,
    "greater_than": lambda a, e: _num(a) and a > e,
    "at_least": lambda a, e: _num(a) and a >= e,
    "empty": lambda a, e: isinstance(a, (list, str, dict)) and (len(a) == 0) == bool(e),
    "version_in": _version_in,
    "version_lt": lambda a, e: _version_cmp(a, e, True),
    "version_ge": lambda a, e: _version_cmp(a, e, False),
}
ITEM_OPS = ("any_item", "all_items", "count_at_least")
ALL_LEAF_KEYS = set(LEAF_OPS) | {"exists"} | set(ITEM_OPS)

# What each operator's expected value must look like (after parameter substitution).
_EXPECTED_KIND: dict[str, Callable[[Any], bool]] = {
    "in": lambda v: isinstance(v, list),
    "not_in": lambda v: isinstance(v, list),
    "matches": lambda v: isinstance(v, str),
    "less_than": _num,
    "at_most": _num,
    "greater_than": _num,
    "at_least": _num,
    "empty": lambda v: isinstance(v, bool),
    "exists": lambda v: isinstance(v, bool),
    "version_in": lambda v: isinstance(v, (str, list)),
    "version_lt": lambda v: isinstance(v, str),
    "version_ge": lambda v: isinstance(v, str),
}


class ConditionError(ValueError):
    """A malformed condition; ``path`` says where (e.g. ``when.all[1].contians``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def resolve(value: Any, params: Mapping[str, Any], path: str) -> Any:
    """Substitute ``"$name"`` with the rule parameter ``name``."""
    if isinstance(value, str) and value.startswith("$") and len(value) > 1:
        name = value[1:]
        if name not in params:
            raise ConditionError(path, f"refers to parameter {name!r}, which the rule does not define in [params]")
        return params[name]
    return value


def validate(node: Any, path: str, known_facts: Mapping[str, str], params: Mapping[str, Any], *, item: bool = False,
             sink: list[ConditionError] | None = None) -> set[str]:
    """Check a condition's shape; return the fact names it reads. Raises ConditionError, or with
    ``sink`` appends every error there (one per bad leaf) and returns the facts of the good ones."""
    if sink is None:
        return _validate(node, path, known_facts, params, item=item, sink=None)
    try:
        return _validate(node, path, known_facts, params, item=item, sink=sink)
    except ConditionError as exc:
        sink.append(exc)
        return set()


def _validate(node: Any, path: str, known_facts: Mapping[str, str], params: Mapping[str, Any], *, item: bool,
              sink: list[ConditionError] | None) -> set[str]:
    if not isinstance(node, dict):
        raise ConditionError(path, "a condition must be a table (all / any / not, or a leaf with fact and one operator)")
    facts: set[str] = set()
    combinators = [k for k in ("all", "any", "not") if k in node]
    if combinators:
        if len(node) != 1:
            extra = sorted(set(node) - {combinators[0]})
            raise ConditionError(f"{path}.{extra[0] if extra else combinators[1]}", "a combinator node takes exactly one key (all, any or not)")
        key = combinators[0]
        if key == "not":
            return validate(node["not"], f"{path}.not", known_facts, params, item=item, sink=sink)
        children = node[key]
        if not isinstance(children, list) or not children:
            raise ConditionError(f"{path}.{key}", "must be a non-empty list of conditions")
        for i, child in enumerate(children):
            facts |= validate(child, f"{path}.{key}[{i}]", known_facts, params, item=item, sink=sink)
        return facts
    subject_key = "field" if item else "fact"
    other_key = "fact" if item else "field"
    if other_key in node:
        raise ConditionError(f"{path}.{other_key}", f"use {subject_key!r} here" + (" (inside any_item/all_items leaves name item fields)" if item else ""))
    if subject_key not in node:
        unknown = sorted(set(node) - ALL_LEAF_KEYS)
        if unknown:
            raise ConditionError(f"{path}.{unknown[0]}", f"unknown key; expected all, any, not, or {subject_key} with one of: {', '.join(sorted(ALL_LEAF_KEYS))}")
        raise ConditionError(path, f"leaf condition needs {subject_key!r}")
    subject = node[subject_key]
    if not isinstance(subject, str):
        raise ConditionError(f"{path}.{subject_key}", "must be a string")
    if not item:
        if subject not in known_facts:
            raise ConditionError(f"{path}.fact", f"unknown fact {shorten(subject)} (see `smtpaudit rules facts`)")
        facts.add(subject)
    ops = [k for k in node if k != subject_key]
    unknown = [k for k in ops if k not in ALL_LEAF_KEYS]
    if unknown:
        raise ConditionError(f"{path}.{unknown[0]}", f"unknown operator; expected one of: {', '.join(sorted(ALL_LEAF_KEYS))}")
    if len(ops) != 1:
        raise ConditionError(path, f"a leaf takes exactly one operator, found {len(ops)}: {', '.join(ops) or 'none'}")
    op = ops[0]
    value = resolve(node[op], params, f"{path}.{op}")
    if op in ITEM_OPS:
        if not item and known_facts.get(subject) not in ("list[object]", "any"):
            raise ConditionError(f"{path}.{op}", f"{op} needs a list[object] fact; {subject!r} is {known_facts.get(subject)}")
        if op == "count_at_least":
            if not isinstance(value, dict) or set(value) != {"where", "n"} or not isinstance(value["n"], int):
                raise ConditionError(f"{path}.{op}", "expects { where = {condition}, n = INTEGER }")
            validate(value["where"], f"{path}.{op}.where", known_facts, params, item=True)
        else:
            validate(value, f"{path}.{op}", known_facts, params, item=True)
        return facts
    check = _EXPECTED_KIND.get(op)
    if check is not None and not check(value):
        raise ConditionError(f"{path}.{op}", f"value {shorten(value)} has the wrong type for {op}")
    if op == "matches":
        try:
            regex.compile_pattern(value)
        except RegexError as exc:
            raise ConditionError(f"{path}.matches", f"regular expression {shorten(value)} {exc}") from None
    if op == "version_in":
        try:
            for r in _as_list(value):
                parse_range(r)
        except VersionError as exc:
            raise ConditionError(f"{path}.version_in", str(exc)) from None
    return facts


@dataclass
class Evaluation:
    """Result of evaluating a condition: value (True/False/None) and the facts consulted."""

    value: bool | None
    used: dict[str, Any] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    # Leaves that could not be computed within their bounds (a regex over oversized text):
    # unknown, like an absent fact, and the reason the rule is not evaluated.
    errors: list[str] = field(default_factory=list)


def _lookup(source: Mapping[str, Any], key: str) -> Any:
    return source[key] if key in source else ABSENT


def evaluate(node: Mapping[str, Any], facts: Mapping[str, Any], params: Mapping[str, Any]) -> Evaluation:
    ev = Evaluation(None)
    ev.value = _eval(node, facts, params, ev, item=False)
    return ev


def _eval(node: Mapping[str, Any], source: Mapping[str, Any], params: Mapping[str, Any], ev: Evaluation, *, item: bool) -> bool | None:
    if "all" in node:
        results = [_eval(c, source, params, ev, item=item) for c in node["all"]]
        if any(r is False for r in results):
            return False
        return True if all(r is True for r in results) else None
    if "any" in node:
        results = [_eval(c, source, params, ev, item=item) for c in node["any"]]
        if any(r is True for r in results):
            return True
        return False if all(r is False for r in results) else None
    if "not" in node:
        r = _eval(node["not"], source, params, ev, item=item)
        return None if r is None else not r
    key = node["field" if item else "fact"]
    op = next(k for k in node if k not in ("fact", "field"))
    expected = resolve(node[op], params, op)
    actual = _lookup(source, key)
    if not item:
        if actual is ABSENT:
            ev.missing.add(key)
            return None
        ev.used[key] = actual
    if op == "exists":
        present = actual is not ABSENT and actual is not None
        return present == bool(expected)
    if actual is ABSENT or actual is None:
        return False
    if op in ITEM_OPS:
        if not isinstance(actual, list):
            return False
        items = [x for x in actual if isinstance(x, dict)]
        if op == "count_at_least":
            hits = sum(1 for x in items if _eval(expected["where"], x, params, ev, item=True) is True)
            return hits >= expected["n"]
        results = [_eval(expected, x, params, ev, item=True) is True for x in items]
        return any(results) if op == "any_item" else (bool(results) and all(results))
    try:
        return bool(LEAF_OPS[op](actual, expected))
    except RegexBudgetExceeded as exc:
        ev.errors.append(f"{key}: {exc}")
        return None
    except TypeError:
        return False  # a fact of an unexpected shape never matches
