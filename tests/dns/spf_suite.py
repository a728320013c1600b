"""Run the openspf RFC 7208 test suite through smtpaudit's own ``dns.domain`` probe and rules.

Source: ``tests/dns/vectors/rfc7208-tests.yml``, the openspf.org suite (release 2014.04, with the
2019 additions), copied unchanged from pyspf (github.com/sdgathman/pyspf, ``test/``, commit
1042e9e15dd29047dc9b0a1bb77437e2fd81e775); licence in ``rfc7208-tests.LICENSE`` next to it.

smtpaudit does not evaluate SPF for one sender IP: it audits the domain's record. So a case maps
to: the audited domain is the MAIL FROM domain (the HELO name when MAIL FROM is empty), its DNS is
the case's ``zonedata`` (served by the stub, no network), and the question is whether the report
carries an SPF error finding (one of ``SPF_ERROR_RULES``):

- expected ``permerror``                      -> at least one SPF error finding;
- expected ``pass``/``fail``/``softfail``/``neutral`` (or a list of only those) -> none;
- ``none``, ``temperror`` and lists that allow permerror *and* another result are not scored
  (the first two are not record errors; for the last the suite accepts either answer), but they
  still run: no case may make the probe fail.

``DIFFERENCES`` lists the cases where smtpaudit deliberately answers otherwise, with the reason;
the test fails if such a case starts to agree (so the list stays true) or if any other case
disagrees. ``python3 -m tests.dns.spf_suite`` prints the counts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from smtpaudit.probes.base import ProbeContext, Timeouts
from smtpaudit.probes.dns.probes import DnsDomainProbe
from smtpaudit.targets import TargetError, parse_target
from tests.dns.judging import findings
from tests.dns.stub_dns import StubZone

SUITE = Path(__file__).resolve().parent / "vectors" / "rfc7208-tests.yml"

# Rules whose finding means "receivers get permerror for this domain's SPF".
SPF_ERROR_RULES = frozenset({
    "spf-syntax-error", "spf-multiple-records", "spf-too-many-lookups", "spf-void-lookups", "spf-permerror",
})
NO_ERROR_RESULTS = frozenset({"pass", "fail", "softfail", "neutral"})

# case id -> why smtpaudit's answer differs from the suite's on purpose.
DIFFERENCES: dict[str, str] = {
    "include-at-limit": (
        "The record needs 11 DNS-querying terms in all (a, include with 9 inside, mx). The suite's "
        "sender IP matches ip4:1.2.3.4 after 10 lookups, so that one evaluation passes; any sender "
        "not matched by then reaches mx, the 11th lookup, and gets permerror (RFC 7208 4.6.4). "
        "smtpaudit audits the record for every sender, not one IP, so it reports "
        "spf-too-many-lookups."
    ),
}


@dataclass
class CaseResult:
    case_id: str
    scenario: str
    expected: Any
    domain: str | None
    expect_error: bool | None  # None: not scored
    probe_status: str
    probe_error: str | None
    findings: set[str]

    @property
    def has_error(self) -> bool:
        return bool(self.findings & SPF_ERROR_RULES)

    @property
    def correct(self) -> bool | None:
        if self.expect_error is None:
            return None
        return self.has_error == self.expect_error


def expectation(result: Any) -> bool | None:
    results = {result} if isinstance(result, str) else set(result)
    if results == {"permerror"}:
        return True
    if results <= NO_ERROR_RESULTS:
        return False
    return None


def audited_domain(case: dict[str, Any]) -> str:
    mailfrom = str(case.get("mailfrom") or "")
    if mailfrom:
        return mailfrom.rpartition("@")[2]
    return str(case.get("helo") or "")


def cases() -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(scenario description, case id, case, zonedata) for every case of the suite."""
    with SUITE.open(encoding="utf-8") as fh:
        for doc in yaml.safe_load_all(fh):
            for case_id, case in doc["tests"].items():
                yield doc["description"], case_id, case, doc.get("zonedata") or {}


def run_case(scenario: str, case_id: str, case: dict[str, Any], zonedata: dict[str, Any]) -> CaseResult:
    domain = audited_domain(case)
    res = CaseResult(case_id, scenario, case["result"], domain, expectation(case["result"]), "skipped", None, set())
    try:
        endpoint = parse_target(f"domain:{domain}")
    except TargetError as exc:
        # Not a name a user could ask smtpaudit to audit (e.g. an HELO literal "[1.2.3.5]").
        res.domain, res.probe_error = None, str(exc)
        return res
    ctx = ProbeContext(options={"resolver": "127.0.0.1:53", "dns_timeout": 0.2},
                       timeouts=Timeouts(connect=2, command=2, tls=2, endpoint=30))
    with StubZone(zonedata).installed():
        result = asyncio.run(DnsDomainProbe().run(endpoint, ctx, {}))
    res.probe_status, res.probe_error = result.status, result.error_message
    res.findings = findings(result.facts)
    return res


def run_suite() -> list[CaseResult]:
    return [run_case(*c) for c in cases()]


def summary(results: list[CaseResult]) -> dict[str, int]:
    scored = [r for r in results if r.correct is not None]
    return {
        "cases": len(results),
        "applicable": len(scored),
        "correct": sum(1 for r in scored if r.correct),
        "deliberate_differences": sum(1 for r in scored if not r.correct and r.case_id in DIFFERENCES),
        "unexplained": sum(1 for r in scored if not r.correct and r.case_id not in DIFFERENCES),
        "probe_failures": sum(1 for r in results if r.probe_status == "error"),
        # Not scored: the suite allows permerror or another result (either answer is right) ...
        "either_answer": sum(1 for r in results if r.correct is None and r.expected not in ("none", "temperror")),
        # ... or there is no record / DNS fails (never an SPF error finding, checked by the test).
        "none_or_temperror": sum(1 for r in results if r.expected in ("none", "temperror")),
        "none_or_temperror_with_error_finding": sum(
            1 for r in results if r.expected in ("none", "temperror") and r.has_error),
    }


if __name__ == "__main__":
    all_results = run_suite()
    for r in all_results:
        if r.correct is False or r.probe_status == "error":
            tag = "DIFF" if r.case_id in DIFFERENCES else "FAIL"
            print(f"{tag} {r.case_id}: expected {r.expected}, findings {sorted(r.findings)} "
                  f"probe {r.probe_status} {r.probe_error or ''}")
    print(summary(all_results))
