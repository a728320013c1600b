"""The openspf RFC 7208 test suite, case by case, through the dns.domain probe and the dns rules.

How a case is mapped and scored, and the deliberate differences, are in ``tests/dns/spf_suite.py``;
the suite itself is ``tests/dns/vectors/rfc7208-tests.yml`` (see the README there for provenance).
"""

from __future__ import annotations

import pytest

from tests.dns import spf_suite

CASES = list(spf_suite.cases())


@pytest.mark.parametrize("scenario, case_id, case, zonedata", CASES, ids=[c[1] for c in CASES])
def test_rfc7208_case(scenario, case_id, case, zonedata):
    r = spf_suite.run_case(scenario, case_id, case, zonedata)
    # No case may make the probe fail: a malformed record is a finding, never a probe error.
    assert r.probe_status != "error", f"{case_id}: probe failed: {r.probe_error}"
    if r.domain is not None:
        assert r.probe_status == "ok"
    if r.expected in ("none", "temperror"):
        # No record, or DNS trouble: neither is an error *in* a record.
        assert not r.has_error, f"{case_id}: {r.expected} but {sorted(r.findings)}"
    if r.correct is None:
        return  # not scored (none / temperror / either answer allowed); it ran without failing
    if case_id in spf_suite.DIFFERENCES:
        assert not r.correct, f"{case_id} now agrees with the suite: remove it from DIFFERENCES"
        return
    want = "an SPF error finding" if r.expect_error else "no SPF error finding"
    assert r.correct, f"{case_id} ({case.get('description', '').strip()}): expected {case['result']} -> {want}; got {sorted(r.findings)}"


def test_rfc7208_suite_counts():
    results = spf_suite.run_suite()
    s = spf_suite.summary(results)
    assert s["cases"] == 203 and s["probe_failures"] == 0
    assert s["unexplained"] == 0
    assert s["applicable"] == s["correct"] + s["deliberate_differences"]
    assert s["deliberate_differences"] == len(spf_suite.DIFFERENCES)
    print(f"\nRFC 7208 suite: {s}")
