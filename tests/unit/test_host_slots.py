"""Per-host socket reservations: all-or-nothing by default, "as many as are free" when a probe allows it."""

import asyncio

from smtpaudit.probes.net import HostSlots


def test_a_probe_that_allows_fewer_sockets_starts_beside_a_long_one() -> None:
    async def main() -> tuple[int, bool, int]:
        host = HostSlots(2)
        long_one = await host.reserve(1)  # e.g. smtp.limits waiting out a tarpit's second
        flexible = await asyncio.wait_for(host.reserve(2, minimum=1), timeout=1)
        # All-or-nothing reservations still wait: nothing is free now.
        strict = asyncio.create_task(host.reserve(1))
        await asyncio.sleep(0.05)
        waited = not strict.done()
        await long_one.close()
        got = await asyncio.wait_for(strict, timeout=1)
        await flexible.close()
        await got.close()
        return flexible.limit, waited, host._free

    taken, waited, free = asyncio.run(main())
    assert taken == 1 and waited and free == 2


def test_an_all_or_nothing_reservation_waits_for_every_socket() -> None:
    async def main() -> bool:
        host = HostSlots(2)
        held = await host.reserve(1)
        both = asyncio.create_task(host.reserve(2))
        await asyncio.sleep(0.05)
        blocked = not both.done()
        await held.close()
        budget = await asyncio.wait_for(both, timeout=1)
        assert budget.limit == 2
        await budget.close()
        return blocked

    assert asyncio.run(main())
