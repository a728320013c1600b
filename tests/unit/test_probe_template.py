"""The probe template (probes/runner.py): skips, guard, deadline and the fact contract, for every probe."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Mapping

from smtpaudit.catalog import load_catalog
from smtpaudit.outcomes import ProbeStatus, Reason
from smtpaudit.probes.base import ProbeContext, ProbeError, ProbeResult, Timeouts
from smtpaudit.probes.runner import run_probe
from smtpaudit.targets import parse_target

EP = parse_target("127.0.0.1:25")


def _run(cls: Any, *, deadline_in: float | None = None, intrusive: bool = False) -> ProbeResult:
    async def go() -> ProbeResult:
        deadline = asyncio.get_running_loop().time() + deadline_in if deadline_in is not None else None
        return await run_probe(cls, cls.name, EP, ProbeContext(timeouts=Timeouts(endpoint=deadline_in or 60), intrusive=intrusive),
                               {}, declared=load_catalog().facts, deadline=deadline)
    return asyncio.run(go())


class _Base:
    name: ClassVar[str] = "smtp.vrfy"
    intrusive: ClassVar[bool] = False
    after: ClassVar[tuple[str, ...]] = ()


def test_undeclared_or_mistyped_facts_are_a_probe_bug_never_judged():
    class Liar(_Base):
        async def run(self, endpoint, ctx, prior) -> ProbeResult:
            return ProbeResult(probe=self.name, facts={"smtp.vrfy.postmaster_code": "250", "tls.available": True,
                                                       "made.up": 1})

    r = _run(Liar)
    assert r.status is ProbeStatus.ERROR and r.error_reason is Reason.FACT_CONTRACT
    assert r.facts == {}  # wrong type, another probe's fact and an undeclared one: all dropped
    assert "made.up" in r.error_message and "smtp.vrfy.postmaster_code" in r.error_message


def test_an_exception_is_an_internal_error_and_a_probe_error_keeps_its_reason():
    class Crash(_Base):
        async def run(self, endpoint, ctx, prior):
            raise KeyError("boom")

    class Refused(_Base):
        async def run(self, endpoint, ctx, prior):
            raise ProbeError("421 bye", reason="service_unavailable")

    assert _run(Crash).error_reason is Reason.INTERNAL
    assert _run(Refused).error_reason is Reason.SERVICE_UNAVAILABLE


def test_the_deadline_cuts_a_probe_and_keeps_none_of_its_facts():
    class Slow(_Base):
        async def run(self, endpoint, ctx, prior):
            await asyncio.sleep(30)
            return ProbeResult(probe=self.name, facts={"smtp.vrfy.postmaster_code": 250})

    r = _run(Slow, deadline_in=0.2)
    assert r.status is ProbeStatus.ERROR and r.error_reason is Reason.DEADLINE and r.facts == {}


def test_intrusive_probes_are_skipped_without_permission():
    class Burst(_Base):
        intrusive: ClassVar[bool] = True

        async def run(self, endpoint, ctx, prior):
            raise AssertionError("must not run")

    r = _run(Burst)
    assert r.status is ProbeStatus.SKIPPED and r.error_reason is Reason.INTRUSIVE
