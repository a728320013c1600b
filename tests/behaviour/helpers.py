"""Running one probe against a fake server, the way the scanner does, with the catalog check applied."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable

from smtpaudit.catalog import load_catalog, value_matches_type
from smtpaudit.probes.base import ProbeContext, ProbeResult, Timeouts
from smtpaudit.targets import parse_target


async def run_probe(probe_cls: type, port: int, *, prior: dict[str, Any] | None = None, intrusive: bool = False,
                    options: dict[str, Any] | None = None, secrets: tuple[str, ...] = (), target: str | None = None,
                    timeouts: Timeouts | None = None, role: str | None = None) -> ProbeResult:
    from smtpaudit.targets import Role

    endpoint = parse_target(target or f"127.0.0.1:{port}", role=Role(role) if role else None)
    ctx = ProbeContext(timeouts=timeouts or Timeouts(connect=3, greeting=5, command=5, tls=5), intrusive=intrusive,
                       options=dict(options or {}), secrets=secrets)
    result = await probe_cls().run(endpoint, ctx, dict(prior or {}))
    check_catalog(result)
    return result


def check_catalog(result: ProbeResult) -> None:
    """Every fact a probe emits is declared for that probe, with a value of the declared type."""
    catalog = load_catalog()
    for name, value in result.facts.items():
        spec = catalog.facts.get(name)
        assert spec is not None, f"{result.probe} emitted undeclared fact {name}"
        assert spec.probe == result.probe, f"{name} is declared for {spec.probe}, emitted by {result.probe}"
        assert value_matches_type(value, spec.type), f"{name}={value!r} is not a {spec.type}"


def async_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper
