"""Redis is killed in the middle of a burst of 「確認しました」 and started again.

Process A takes the confirmations, the chair's 配布状況 socket is on process B, and the
only thing between them is a private Redis. Nothing acknowledged may be lost (the database
is the truth, Redis only carries the news); the socket is closed with 4503 so the page
falls back to polling; once Redis is back a new socket connects and is live again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from notifications.watchdog import CLOSE_CODE_LAYER_DOWN, PROBE_INTERVAL_SECONDS
from tests.faults.stack import (
    AppServer,
    Ledger,
    Seeded,
    Stack,
    confirm,
    drain_receipts,
    open_ledger,
    reconnect_ledger,
    run_seed,
)

pytestmark = pytest.mark.services

HOUSEHOLDS = 90
BEFORE, DURING = 30, 60  # households 0–29 before the kill, 30–59 while Redis is down


async def _confirm_many(
    server: AppServer, seeded: Seeded, indexes: range, *, every: float = 0.0
) -> dict[int, int]:
    """Confirm as the residents of these households (four at a time); status per household."""
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(4)

    async def one(index: int) -> None:
        async with gate:
            response = await asyncio.to_thread(
                confirm,
                server,
                slug=seeded.slug,
                circular_id=seeded.circular_ids[0],
                session=seeded.resident_sessions[index],
            )
            statuses[seeded.household_ids[index]] = response.status

    tasks = []
    for index in indexes:
        tasks.append(asyncio.create_task(one(index)))
        if every:
            await asyncio.sleep(every)
    await asyncio.gather(*tasks)
    return statuses


def test_redis_killed_mid_burst_loses_nothing_and_ledgers_come_back(stack: Stack) -> None:
    seeded = run_seed(stack.env, households=HOUSEHOLDS)
    server_a, server_b = stack.serve("a", "b")
    ledger = Ledger(seeded.slug, seeded.circular_ids[0], seeded.chair_session)
    figures: dict[str, float] = {}

    async def scenario() -> dict[int, int]:
        first = await open_ledger(server_b, ledger)
        statuses = await _confirm_many(server_a, seeded, range(BEFORE))
        live = await drain_receipts(first, wanted=set(statuses), timeout=10)
        assert live == set(statuses), "the ledger was not live before the fault"

        # Kill Redis while confirmations keep coming (about five a second).
        burst = asyncio.create_task(
            _confirm_many(server_a, seeded, range(BEFORE, DURING), every=0.2)
        )
        await asyncio.sleep(0.5)
        stack.redis.kill()
        killed_at = time.monotonic()
        await asyncio.wait_for(first.wait_closed(), PROBE_INTERVAL_SECONDS * 3)
        figures["socket_closed_after_s"] = time.monotonic() - killed_at
        assert first.close_code == CLOSE_CODE_LAYER_DOWN, first.close_code

        # While Redis is down a new socket is refused: the page keeps polling.
        with pytest.raises(AssertionError):
            await reconnect_ledger([server_b], ledger, within=1)

        stack.redis.start()
        restarted_at = time.monotonic()
        second, _server, attempts = await reconnect_ledger([server_b], ledger, within=20)
        figures["reconnected_after_restart_s"] = time.monotonic() - restarted_at
        figures["reconnect_attempts"] = attempts
        statuses |= await burst

        after = await _confirm_many(server_a, seeded, range(DURING, HOUSEHOLDS))
        sent_at = time.monotonic()
        live_again = await drain_receipts(second, wanted=set(after), timeout=10)
        figures["live_again_all_events_s"] = time.monotonic() - sent_at
        assert set(after) <= live_again, "the new socket did not get live events"
        await second.close()
        return statuses | after

    try:
        statuses = asyncio.run(scenario())
    except BaseException:
        print(stack.logs())
        raise
    acknowledged = [household for household, status in statuses.items() if status == 302]
    stored = stack.confirmed(seeded.circular_ids[0])
    print(f"acknowledged {len(acknowledged)}, stored {stored}, {figures}")
    assert sorted(statuses.values()) == [302] * HOUSEHOLDS, statuses
    assert stored == len(acknowledged) == HOUSEHOLDS
