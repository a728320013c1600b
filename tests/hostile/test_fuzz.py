"""Property-based fuzzing of every input file the CLI reads: targets files, rule / policy / baseline
TOML, and saved reports. For every generated input: no traceback (any exception escaping ``main``
fails the test), exit 2 for every invalid input with a first line naming the file, and bounded
time per input. Inputs are derived from valid ones by mutations that make them invalid, plus raw
garbage; saved reports are judged against the shipped JSON Schema, so a mutation that happens to
stay valid must be accepted (exit 0) instead.

Counts per category and outcome are printed at the end (``pytest -s``), and written as JSON to
``$SMTPAUDIT_FUZZ_STATS`` when set. ``SMTPAUDIT_FUZZ_EXAMPLES`` sets the examples per category.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpaudit.cli import main
from smtpaudit.inputs import InputError, load_report

EXAMPLES = int(os.environ.get("SMTPAUDIT_FUZZ_EXAMPLES", "120"))
PER_INPUT_SECONDS = 10.0
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("SMTPAUDIT_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
STATS: Counter[tuple[str, str]] = Counter()
WORK = Path(os.environ.get("TMPDIR", "/tmp")) / f"smtpaudit-fuzz-{os.getpid()}"


def run_cli(category: str, args: list[Any]) -> tuple[int, str]:
    """main() in-process; returns (exit code, stderr). Exceptions other than SystemExit propagate."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    elapsed = time.monotonic() - t0
    assert elapsed < PER_INPUT_SECONDS, f"{category}: {elapsed:.1f}s for one input"
    assert "Traceback" not in err.getvalue()
    STATS[(category, f"exit {code}")] += 1
    return code, err.getvalue()


def assert_rejected(category: str, code: int, err: str, path: Path) -> None:
    assert code == 2, (category, code, err[-1500:])
    first = err.strip().splitlines()[0]
    assert str(path) in first or path.name in first, first


@pytest.fixture(scope="module", autouse=True)
def stats_report():
    WORK.mkdir(parents=True, exist_ok=True)
    yield
    total = sum(STATS.values())
    lines = [f"fuzz: {total} malformed or mutated inputs"] + [f"  {c:10} {o:8} {n}" for (c, o), n in sorted(STATS.items())]
    print("\n" + "\n".join(lines))
    if os.environ.get("SMTPAUDIT_FUZZ_STATS"):
        Path(os.environ["SMTPAUDIT_FUZZ_STATS"]).write_text(json.dumps({f"{c} {o}": n for (c, o), n in sorted(STATS.items())}, indent=2))


# --- a tiny TOML writer (the fuzz needs to render mutated data) -----------------------------

def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def toml_doc(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in data.items())


scalars = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False),
                    st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
deep = st.integers(min_value=33, max_value=6000).map(lambda n: "[" * n + "]" * n)
garbage = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))


def kind(v: Any) -> str:
    return "bool" if isinstance(v, bool) else "num" if isinstance(v, (int, float)) else type(v).__name__


# --- targets files --------------------------------------------------------------------------

unicode_digits = st.text(alphabet=st.sampled_from("0123456789²³¹٣٢٥०१२३۴߀๑᠑０１"), min_size=0, max_size=12)


def bad_port(text: str) -> bool:
    return not (text.isascii() and text.isdigit() and 0 < len(text) <= 5 and 1 <= int(text) <= 65535)


bad_lines = st.one_of(
    unicode_digits.filter(bad_port).map(lambda p: f"127.0.0.1:{p}"),
    st.text(alphabet="0123456789", min_size=6, max_size=6000).map(lambda p: f"mx.example.org:{p}"),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=10)
      .filter(lambda s: s.lower() not in ("smtp", "smtps", "submission") and "#" not in s and ":" not in s and "/" not in s)
      .map(lambda s: f"{s}://mx.example.org"),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc", "Zl", "Zp")), min_size=0, max_size=40)
      .filter(lambda s: "#" not in s).map(lambda s: f"mx!{s}.example.org"),
    st.text(max_size=30).filter(lambda s: "#" not in s and "\n" not in s and "\r" not in s).map(lambda s: f"[{s}]:25"),
)
good_lines = st.sampled_from(["127.0.0.1:2525", "smtp://mx.example.org", "[::1]:25", "# comment", "", "submission://mail.example.net:587"])


@FUZZ
@given(before=st.lists(good_lines, max_size=5), bad=bad_lines, after=st.lists(st.one_of(good_lines, bad_lines), max_size=5))
def test_fuzz_targets_files(before, bad, after):
    path = WORK / "targets.txt"
    path.write_text("\n".join([*before, bad, *after]) + "\n", encoding="utf-8", errors="surrogatepass")
    code, err = run_cli("targets", ["scan", "-f", path, "--timeout", "1"])
    assert_rejected("targets", code, err, path)


@FUZZ
@given(blob=garbage)
def test_fuzz_targets_garbage(blob):
    path = WORK / "targets-garbage.txt"
    path.write_bytes(blob + b"\n127.0.0.1:\xd9\xa3\n")  # at least one bad line (Arabic-Indic 3) or bad UTF-8
    code, err = run_cli("targets", ["scan", "-f", path, "--timeout", "1"])
    assert_rejected("targets", code, err, path)


# --- rule files -----------------------------------------------------------------------------

BASE_RULE: dict[str, Any] = {
    "id": "fuzz-rule", "title": "t", "severity": "medium", "score": 5.0, "confidence": "firm", "description": "d",
    "when": {"all": [{"fact": "smtp.greeting.text", "matches": "^a"}]},
    "remediation": {"summary": "s"},
    "references": [{"title": "r", "url": "https://example.org/"}],
    "examples": [{"expect": "finding", "facts": {"smtp.greeting.text": "ab"}}, {"expect": "pass", "facts": {"smtp.greeting.text": "b"}}],
}
REQUIRED = ["id", "title", "severity", "score", "confidence", "description", "when", "remediation", "references", "examples"]
WANT = {"id": "str", "title": "str", "severity": "str", "score": "num", "confidence": "str", "description": "str",
        "when": "dict", "remediation": "dict", "references": "list", "examples": "list"}


@st.composite
def bad_rules(draw: st.DrawFn) -> bytes:
    rule = json.loads(json.dumps(BASE_RULE))
    how = draw(st.sampled_from(["drop", "retype", "unknown", "severity", "regex", "fact", "operator", "deep", "truncate", "garbage", "example"]))
    if how == "drop":
        del rule[draw(st.sampled_from(REQUIRED))]
    elif how == "retype":
        key = draw(st.sampled_from(REQUIRED))
        rule[key] = draw(values.filter(lambda v: kind(v) != WANT[key]))
    elif how == "unknown":
        rule[draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in BASE_RULE and k not in ("tags", "message", "params", "applies_to", "grade_cap")))] = draw(values)
    elif how == "severity":
        rule["severity"] = draw(st.text(max_size=10).filter(lambda s: s not in ("critical", "high", "medium", "low", "info")))
    elif how == "regex":
        rule["when"]["all"][0]["matches"] = draw(st.sampled_from(["(a)\\1", "(?=a)b", "(?<!x)y", "[", "a{1001}", "(a{1000}){1000}", "x" * 5000]))
    elif how == "fact":
        rule["when"]["all"][0]["fact"] = draw(st.text(max_size=20).filter(lambda f: f != "smtp.greeting.text"))
    elif how == "operator":
        rule["when"]["all"][0] = {"fact": "smtp.greeting.text", draw(st.text(min_size=1, max_size=12).filter(lambda o: o not in ("matches", "fact"))): draw(values)}
    elif how == "example":
        rule["examples"][1]["expect"] = draw(st.text(max_size=10).filter(lambda e: e not in ("finding", "pass", "not_evaluated")))
    text = toml_doc(rule)
    if how == "deep":
        return (text + "extra = " + draw(deep) + "\n").encode()
    if how == "truncate":
        cut = draw(st.integers(min_value=0, max_value=text.rindex('"pass"')))
        return text[:cut].encode()
    if how == "garbage":
        return draw(garbage) + b"\n= = =\n"
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(content=bad_rules())
def test_fuzz_rule_files(content):
    d = WORK / "rules" / "fam"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "fuzz-rule.toml"
    path.write_bytes(content)
    code, err = run_cli("rule", ["rules", "validate", WORK / "rules"])
    assert_rejected("rule", code, err, path)


# --- policies -------------------------------------------------------------------------------

@st.composite
def bad_policies(draw: st.DrawFn) -> bytes:
    policy: dict[str, Any] = {"id": "p", "version": "1", "title": "t", "params": {"tls-legacy-protocols": {"legacy": ["TLSv1.0"]}}}
    how = draw(st.sampled_from(["param-type", "param-items", "unknown-param", "unknown-rule", "unknown-key", "missing", "skip", "deep", "garbage"]))
    if how == "param-type":
        policy["params"]["tls-legacy-protocols"]["legacy"] = draw(values.filter(lambda v: not isinstance(v, list)))
    elif how == "param-items":
        policy["params"]["tls-legacy-protocols"]["legacy"] = ["TLSv1.0", draw(values.filter(lambda v: not isinstance(v, str)))]
    elif how == "unknown-param":
        policy["params"]["tls-legacy-protocols"][draw(st.text(min_size=1, max_size=10).filter(lambda k: k != "legacy"))] = draw(values)
    elif how == "unknown-rule":
        policy["params"][draw(st.text(min_size=1, max_size=20).filter(lambda k: k != "tls-legacy-protocols"))] = {"x": 1}
    elif how == "unknown-key":
        policy[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in ("id", "version", "title", "description", "skip", "params")))] = draw(values)
    elif how == "missing":
        del policy[draw(st.sampled_from(["id", "version", "title"]))]
    elif how == "skip":
        policy["skip"] = draw(values.filter(lambda v: not (isinstance(v, list) and all(isinstance(x, str) for x in v)) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v))))
        if isinstance(policy["skip"], list) and all(isinstance(x, str) for x in policy["skip"]):
            policy["skip"] = [*policy["skip"], "no-such-rule-zz"]
    text = toml_doc(policy)
    if how == "deep":
        return (text + "extra = " + draw(deep) + "\n").encode()
    if how == "garbage":
        return draw(garbage) + b"\n[[[\n"
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(content=bad_policies())
def test_fuzz_policies(content):
    path = WORK / "policy.toml"
    path.write_bytes(content)
    code, err = run_cli("policy", ["rules", "list", "--policy", path])
    assert_rejected("policy", code, err, path)


# --- baselines ------------------------------------------------------------------------------

@st.composite
def bad_baselines(draw: st.DrawFn) -> bytes:
    entry: dict[str, Any] = {"rule": "*", "endpoint": "*", "justification": "accepted"}
    doc: dict[str, Any] = {"version": 1, "accept": [entry]}
    how = draw(st.sampled_from(["version", "accept", "missing", "empty", "unknown", "expires", "entry-type", "deep", "garbage"]))
    if how == "version":
        doc["version"] = draw(values.filter(lambda v: v != 1 or isinstance(v, bool)))
    elif how == "accept":
        doc["accept"] = draw(values.filter(lambda v: not isinstance(v, list)))
    elif how == "missing":
        del entry[draw(st.sampled_from(["rule", "endpoint", "justification"]))]
    elif how == "empty":
        entry[draw(st.sampled_from(["rule", "endpoint", "justification"]))] = draw(st.one_of(st.just(""), st.just("   "), values.filter(lambda v: not isinstance(v, str))))
    elif how == "unknown":
        entry[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in ("rule", "endpoint", "justification", "expires")))] = draw(values)
    elif how == "expires":
        entry["expires"] = draw(st.one_of(st.text(max_size=12).filter(lambda s: not _is_date(s)), st.integers(), st.lists(st.integers(), max_size=2)))
    elif how == "entry-type":
        doc["accept"] = [draw(values.filter(lambda v: not isinstance(v, dict)))]
    text = toml_doc(doc)
    if how == "deep":
        return (text + "extra = " + draw(deep) + "\n").encode()
    if how == "garbage":
        return draw(garbage) + b"\n= nope\n"
    return text.encode("utf-8", "surrogatepass")


def _is_date(s: str) -> bool:
    import datetime as dt

    try:
        dt.date.fromisoformat(s)
        return True
    except ValueError:
        return False


@FUZZ
@given(content=bad_baselines())
def test_fuzz_baselines(content, saved_report):
    path = WORK / "baseline.toml"
    path.write_bytes(content)
    code, err = run_cli("baseline", ["report", saved_report, "--baseline", path, "-o", WORK / "with-baseline.json"])
    assert_rejected("baseline", code, err, path)


# --- saved reports --------------------------------------------------------------------------

def _paths(node: Any, prefix: tuple[Any, ...] = (), limit: int = 4000) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    stack = [(node, prefix)]
    while stack and len(out) < limit:
        cur, path = stack.pop()
        items = cur.items() if isinstance(cur, dict) else enumerate(cur) if isinstance(cur, list) else ()
        for k, v in items:
            out.append((*path, k))
            stack.append((v, (*path, k)))
    return out


hostile_text = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["</script><script>alert(1)</script>", "{{ 7*7 }}", "\u202e\u0000\x1b[31m", "%s%n", "../../etc/passwd",
                     "x" * 200_000, "\ud7ff" * 1000]),
)


@st.composite
def mutated_reports(draw: st.DrawFn, base: dict[str, Any], paths: list[tuple[Any, ...]], string_paths: list[tuple[Any, ...]]) -> bytes:
    how = draw(st.sampled_from(["delete", "replace", "wrap", "deep", "truncate", "garbage", "random-json", "top", "hostile-strings"]))
    if how == "hostile-strings":
        # Mostly still schema-valid: what a server could have put in facts, transcripts, messages.
        report = json.loads(json.dumps(base))
        for path in draw(st.lists(st.sampled_from(string_paths), min_size=1, max_size=8)):
            parent = report
            for k in path[:-1]:
                parent = parent[k]
            parent[path[-1]] = draw(hostile_text)
        return json.dumps(report, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if how in ("delete", "replace", "wrap", "deep"):
        report = json.loads(json.dumps(base))
        path = draw(st.sampled_from(paths))
        parent = report
        for k in path[:-1]:
            parent = parent[k]
        last = path[-1]
        if how == "delete":
            parent.pop(last) if isinstance(parent, dict) else parent.pop(last)
        elif how == "replace":
            parent[last] = draw(values)
        elif how == "wrap":
            parent[last] = [parent[last]]
        else:
            # Nesting is added as text: json.dumps itself would recurse too deep to write it.
            n = draw(st.integers(min_value=60, max_value=100_000))
            return (json.dumps(report)[:-1] + ', "deep": ' + "[" * n + "]" * n + "}").encode()
        return json.dumps(report, ensure_ascii=False).encode("utf-8", "surrogatepass")
    text = json.dumps(base)
    if how == "truncate":
        return text[: draw(st.integers(min_value=0, max_value=len(text) - 2))].encode()
    if how == "garbage":
        return draw(garbage)
    if how == "top":
        return json.dumps({"tool": draw(st.one_of(st.just("smtpaudit"), st.just({"name": "smtpaudit"}), values))}).encode()
    return json.dumps(draw(values)).encode()


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        node = node[k]
    return node


REPORT_COMMANDS = {
    "report-html": lambda p: ["report", p, "-o", WORK / "out.html"],
    "report-sarif": lambda p: ["report", p, "-o", WORK / "out.sarif"],
    "baseline": lambda p: ["baseline", "create", p, "-o", WORK / "created.toml"],
    "diff": lambda p: ["diff", p, p, "-o", WORK / "diff.json"],
    "evaluate": lambda p: ["evaluate", p, "-o", WORK / "judged.json", "--fail-on", "critical"],
}


@pytest.mark.parametrize("command", sorted(REPORT_COMMANDS))
def test_fuzz_saved_reports(command, saved_report):
    base = json.loads(saved_report.read_text())
    paths = _paths(base)
    string_paths = [p for p in paths if isinstance(_get(base, p), str)]

    @FUZZ
    @given(content=mutated_reports(base, paths, string_paths))
    def check(content: bytes) -> None:
        path = WORK / "report.json"
        path.write_bytes(content)
        try:
            load_report(path)
            valid = True
        except InputError:
            valid = False
        code, err = run_cli("report", REPORT_COMMANDS[command](path))
        if valid:
            STATS[("report", "valid")] += 1
            assert code in (0, 1, 3), (code, err[-1500:])
        else:
            STATS[("report", "invalid")] += 1
            assert_rejected("report", code, err, path)

    check()
