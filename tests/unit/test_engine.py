"""The rule engine: conditions (three-valued), rule validation errors naming file and key, policies, scoring."""

import textwrap
from pathlib import Path

import pytest

from smtpaudit.catalog import load_catalog
from smtpaudit.engine.conditions import ConditionError, evaluate, validate
from smtpaudit.engine.evaluate import judge
from smtpaudit.engine.policy import apply_policy, load_policy
from smtpaudit.engine.rules import RuleSetError, Selection, load_rules
from smtpaudit.engine.scoring import ScoredFinding, score_endpoint
from smtpaudit.engine.versions import Version, in_range

KNOWN = {n: s.type for n, s in load_catalog().facts.items()}
KNOWN_T = {**KNOWN, "t.list": "list[object]", "t.n": "int", "t.s": "str", "t.l": "list[str]"}

GOOD_RULE = textwrap.dedent('''
    id = "{id}"
    title = "t"
    severity = "medium"
    score = 5.0
    confidence = "firm"
    description = "d"
    [when]
    all = [{{ fact = "smtp.vrfy.postmaster.code", equals = 250 }}]
    [remediation]
    summary = "s"
    [[references]]
    title = "RFC 5321"
    url = "https://www.rfc-editor.org/rfc/rfc5321"
    [[examples]]
    expect = "finding"
    facts = {{ "smtp.vrfy.postmaster.code" = 250 }}
    [[examples]]
    expect = "pass"
    facts = {{ "smtp.vrfy.postmaster.code" = 502 }}
''')


def ev(cond, facts, params=None):
    validate(cond, "when", KNOWN_T, params or {})
    return evaluate(cond, facts, params or {}).value


@pytest.mark.parametrize("cond, facts, expected", [
    ({"fact": "t.n", "equals": 1}, {"t.n": 1}, True),
    ({"fact": "t.n", "in": [1, 2]}, {"t.n": 3}, False),
    ({"fact": "t.n", "at_least": 3}, {"t.n": 3}, True),
    ({"fact": "t.n", "less_than": 3}, {"t.n": None}, False),
    ({"fact": "t.n", "exists": False}, {"t.n": None}, True),
    ({"fact": "t.n", "exists": True}, {}, None),
    ({"fact": "t.l", "contains_any": ["PLAIN", "LOGIN"]}, {"t.l": ["LOGIN"]}, True),
    ({"fact": "t.l", "contains_all": ["PLAIN", "LOGIN"]}, {"t.l": ["LOGIN"]}, False),
    ({"fact": "t.l", "excludes": "PLAIN"}, {"t.l": ["LOGIN"]}, True),
    ({"fact": "t.l", "empty": True}, {"t.l": []}, True),
    ({"fact": "t.s", "matches": "^Exim 4\\.9"}, {"t.s": "Exim 4.96"}, True),
    ({"fact": "t.s", "contains": "postfix"}, {"t.s": "ESMTP Postfix"}, True),
    ({"fact": "t.s", "version_in": [">=4.87,<4.92"]}, {"t.s": "4.91"}, True),
    ({"fact": "t.s", "version_in": ">=4.87,<4.92"}, {"t.s": "not-a-version"}, False),
    ({"fact": "t.s", "version_lt": "3.9"}, {"t.s": "3.7.11"}, True),
    ({"all": [{"fact": "t.n", "equals": 1}, {"fact": "t.s", "equals": "x"}]}, {"t.n": 2}, False),  # False beats unknown
    ({"all": [{"fact": "t.n", "equals": 1}, {"fact": "t.s", "equals": "x"}]}, {"t.n": 1}, None),
    ({"any": [{"fact": "t.n", "equals": 1}, {"fact": "t.s", "equals": "x"}]}, {"t.n": 1}, True),  # True beats unknown
    ({"any": [{"fact": "t.n", "equals": 1}, {"fact": "t.s", "equals": "x"}]}, {"t.n": 2}, None),
    ({"not": {"fact": "t.n", "equals": 1}}, {}, None),
    ({"not": {"fact": "t.n", "equals": 1}}, {"t.n": 2}, True),
    ({"fact": "t.list", "any_item": {"field": "code", "in": [250, 251]}}, {"t.list": [{"code": 550}, {"code": 250}]}, True),
    ({"fact": "t.list", "all_items": {"field": "code", "in": [250, 251]}}, {"t.list": [{"code": 550}, {"code": 250}]}, False),
    ({"fact": "t.list", "count_at_least": {"where": {"field": "ok", "equals": True}, "n": 2}}, {"t.list": [{"ok": True}, {"ok": True}, {"ok": False}]}, True),
    ({"fact": "t.l", "contains_any": "$mechs"}, {"t.l": ["PLAIN"]}, True),
])
def test_condition_semantics(cond, facts, expected):
    assert ev(cond, facts, {"mechs": ["PLAIN"]}) is expected


@pytest.mark.parametrize("cond, path", [
    ({"fact": "t.n", "equal": 1}, "when.equal"),
    ({"fact": "no.such.fact", "equals": 1}, "when.fact"),
    ({"all": [{"fact": "t.n", "equals": 1}, {"fact": "t.n", "contians": 2}]}, "when.all[1].contians"),
    ({"fact": "t.n", "equals": 1, "in": [1]}, "when"),
    ({"all": []}, "when.all"),
    ({"fact": "t.n", "at_least": "3"}, "when.at_least"),
    ({"fact": "t.s", "matches": "("}, "when.matches"),
    ({"fact": "t.s", "version_in": ["~4"]}, "when.version_in"),
    ({"fact": "t.l", "in": "$nope"}, "when.in"),
    ({"fact": "t.n", "any_item": {"field": "x", "equals": 1}}, "when.any_item"),
])
def test_condition_errors_name_the_path(cond, path):
    with pytest.raises(ConditionError) as err:
        validate(cond, "when", KNOWN_T, {})
    assert err.value.path == path


def write_rule(d: Path, rid: str, text: str | None = None, sub: str = "fam") -> Path:
    (d / sub).mkdir(parents=True, exist_ok=True)
    p = d / sub / f"{rid}.toml"
    p.write_text(text if text is not None else GOOD_RULE.format(id=rid))
    return p


@pytest.mark.parametrize("mutate, key", [
    (lambda s: s.replace('title = "t"', 'title = "t"\ncolour = "red"'), "colour"),
    (lambda s: s.replace('severity = "medium"', 'severity = "severe"'), "severity"),
    (lambda s: s.replace("score = 5.0", "score = 9.5"), "score"),
    (lambda s: s.replace("score = 5.0", 'score = "5"'), "score"),
    (lambda s: s.replace('equals = 250 }]', 'equal = 250 }]'), "when.all[0].equal"),
    (lambda s: s.replace('fact = "smtp.vrfy.postmaster.code", equals', 'fact = "smtp.vrfy.nope", equals'), "when.all[0].fact"),
    (lambda s: s.replace('[remediation]\nsummary = "s"', '[remediation]\nsumary = "s"'), "remediation.sumary"),
    (lambda s: s.replace('url = "https://www.rfc-editor.org/rfc/rfc5321"', 'url = "ftp://x"'), "references[0].url"),
    (lambda s: s.replace('expect = "pass"', 'expect = "ok"'), "examples[1].expect"),
    (lambda s: s.replace('description = "d"\n', ''), "description"),
])
def test_rule_errors_name_file_and_key(tmp_path, mutate, key):
    path = write_rule(tmp_path, "r-one", mutate(GOOD_RULE.format(id="r-one")))
    with pytest.raises(RuleSetError) as err:
        load_rules([tmp_path], KNOWN)
    e = err.value.errors[0]  # the first problem names the key; later ones may follow from it (sumary -> no summary)
    assert e.path == str(path) and e.key == key, str(e)


def test_duplicate_ids_and_file_name_mismatch(tmp_path):
    write_rule(tmp_path, "r-one")
    write_rule(tmp_path, "r-one", sub="other")
    write_rule(tmp_path, "r-two", GOOD_RULE.format(id="r-three"))
    with pytest.raises(RuleSetError) as err:
        load_rules([tmp_path], KNOWN)
    messages = sorted(str(e) for e in err.value.errors)
    assert any("duplicate rule id 'r-one'" in m for m in messages)
    assert any("'r-three' must equal the file name 'r-two'" in m for m in messages)


def test_override_by_id_and_selection(tmp_path):
    base, extra = tmp_path / "base", tmp_path / "extra"
    write_rule(base, "r-one")
    write_rule(base, "r-two")
    write_rule(extra, "r-one", GOOD_RULE.format(id="r-one").replace('title = "t"', 'title = "overridden"'))
    rules = load_rules([base, extra], KNOWN)
    assert rules["r-one"].title == "overridden" and rules["r-one"].origin == str(extra)
    assert list(Selection(skip=("r-one",)).apply(rules)) == ["r-two"]
    assert list(Selection(tags=("fam",)).apply(rules)) == ["r-one", "r-two"]
    with pytest.raises(RuleSetError, match="unknown rule id 'nope'"):
        Selection(only=("nope",)).apply(rules)


def test_policy_overrides_params_and_skips(tmp_path):
    rules = load_rules([Path("rules")], KNOWN)
    pol = tmp_path / "p.toml"
    pol.write_text('id = "p"\nversion = "1"\ntitle = "P"\nskip = ["expn-discloses-lists"]\n[params."auth-before-starttls"]\nplaintext = ["CRAM-MD5"]\n')
    applied = apply_policy(load_policy(pol), rules, KNOWN)
    assert "expn-discloses-lists" not in applied
    facts = {"smtp.auth.mechanisms_before_tls": ["CRAM-MD5"]}
    assert judge(applied["auth-before-starttls"], facts, fact_probe={}, probe_errors={}).status == "finding"
    assert judge(rules["auth-before-starttls"], facts, fact_probe={}, probe_errors={}).status == "passed"
    pol.write_text('id = "p"\nversion = "1"\ntitle = "P"\n[params."auth-before-starttls"]\nplaintxt = []\n')
    with pytest.raises(RuleSetError, match="params.auth-before-starttls.plaintxt"):
        apply_policy(load_policy(pol), rules, KNOWN)


def test_not_evaluated_names_the_failed_probe():
    rules = load_rules([Path("rules")], KNOWN)
    out = judge(rules["vrfy-discloses-users"], {"endpoint.role": "mx"}, fact_probe={n: s.probe for n, s in load_catalog().facts.items()},
                probe_errors={"smtp.vrfy": "read_timeout: server sent nothing for 20s"})
    assert out.status == "not_evaluated"
    assert "smtp.vrfy failed: read_timeout" in out.reason


def test_vulnerable_versions_expand_to_tentative_capped_rules():
    rules = load_rules([Path("rules")], KNOWN)
    wizard = rules["cve-2019-10149"]
    assert wizard.confidence == "tentative" and wizard.severity == "high" and wizard.score <= 8.9
    assert judge(wizard, {"software.product": "exim", "software.version": "4.91"}, fact_probe={}, probe_errors={}).status == "finding"
    assert judge(wizard, {"software.product": "exim", "software.version": "4.92"}, fact_probe={}, probe_errors={}).status == "passed"
    assert judge(wizard, {"software.product": "postfix", "software.version": "4.91"}, fact_probe={}, probe_errors={}).status == "passed"


@pytest.mark.parametrize("a, b", [("4.92.1", "4.92"), ("6.6.2p1", "6.6.2"), ("4.70", "4.7"), ("4.97.1", "4.97rc1"), ("V4.93", "4.92")])
def test_version_ordering(a, b):
    assert Version(a) > Version(b)


def test_version_equalities_and_ranges():
    assert Version("10.1.0") == Version("10.1") and Version("8.15.2/8.15.2") == Version("8.15.2")
    assert in_range("4.91", ">=4.87,<4.92") and not in_range("4.92", ">=4.87,<4.92")


def test_scoring_formula_and_caps():
    assert score_endpoint([]).grade == "A+"
    s = score_endpoint([ScoredFinding("a", "high", "firm"), ScoredFinding("b", "low", "certain")])
    assert (s.score, s.grade) == (78, "C")
    s = score_endpoint([ScoredFinding("a", "high", "tentative")])
    assert (s.score, s.grade) == (90, "A")
    s = score_endpoint([ScoredFinding("relay", "low", "certain", grade_cap="F", title="open relay")])
    assert s.score == 98 and s.grade == "F" and s.caps[0]["rule_id"] == "relay"
    assert score_endpoint([ScoredFinding(str(i), "critical", "certain") for i in range(5)]).score == 0
