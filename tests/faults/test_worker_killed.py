"""One of two uvicorn workers is killed with SIGKILL while residents confirm.

Three 配布状況 sockets are open on each worker. The killed worker's sockets reconnect as the
page's script does (try again every 0.25 s, through whichever worker answers) and land on
the survivor; confirmations keep going with a retry on the other worker, as a load
balancer would, carrying the same idempotency key. Every acknowledged confirmation is in
the database, and every socket hears the confirmations made after the reconnect.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from websockets.asyncio.client import ClientConnection

from tests.faults.stack import (
    AppServer,
    Ledger,
    Seeded,
    Stack,
    drain_receipts,
    open_ledger,
    reconnect_ledger,
    request,
    run_seed,
)

pytestmark = pytest.mark.services

HOUSEHOLDS = 40
SOCKETS_PER_WORKER = 3


def confirm_with_failover(servers: list[AppServer], seeded: Seeded, index: int) -> int:
    """Press 「確認しました」 once; a connection that fails is retried on the next worker
    with the same key, so a confirmation that did reach the dead worker is not doubled."""
    key = str(uuid.uuid4())
    path = f"/c/{seeded.slug}/circulars/{seeded.circular_ids[0]}/confirm/"
    for server in servers:
        try:
            response = request(
                server,
                "POST",
                path,
                session=seeded.resident_sessions[index],
                form={"key": key},
                timeout=5,
            )
        except OSError:
            continue
        return response.status
    return 0


def test_killed_worker_sockets_move_to_the_other_and_nothing_is_lost(stack: Stack) -> None:
    seeded = run_seed(stack.env, households=HOUSEHOLDS)
    server_a, server_b = stack.serve("a", "b")
    ledger = Ledger(seeded.slug, seeded.circular_ids[0], seeded.chair_session)
    households = seeded.household_ids
    figures: dict[str, float] = {}

    async def confirm_range(indexes: range, servers: list[AppServer]) -> dict[int, int]:
        statuses = await asyncio.gather(
            *(asyncio.to_thread(confirm_with_failover, servers, seeded, i) for i in indexes)
        )
        return {households[i]: status for i, status in zip(indexes, statuses, strict=True)}

    async def scenario() -> dict[int, int]:
        on_a = [await open_ledger(server_a, ledger) for _ in range(SOCKETS_PER_WORKER)]
        on_b = [await open_ledger(server_b, ledger) for _ in range(SOCKETS_PER_WORKER)]
        statuses = await confirm_range(range(10), [server_a, server_b])
        for socket in on_a + on_b:
            assert set(statuses) <= await drain_receipts(socket, wanted=set(statuses), timeout=10)

        server_a.kill()
        killed_at = time.monotonic()
        # Residents keep confirming, first through the dead worker, while the sockets move.
        meanwhile = asyncio.create_task(confirm_range(range(10, 30), [server_a, server_b]))

        async def move(socket: ClientConnection) -> tuple[ClientConnection, AppServer]:
            await socket.wait_closed()
            moved, landed, _attempts = await reconnect_ledger(
                [server_a, server_b], ledger, within=10
            )
            return moved, landed

        moved = await asyncio.gather(*(move(socket) for socket in on_a))
        figures["all_reconnected_after_kill_s"] = time.monotonic() - killed_at
        assert all(landed is server_b for _socket, landed in moved)
        statuses |= await meanwhile

        after = await confirm_range(range(30, HOUSEHOLDS), [server_a, server_b])
        sockets = [socket for socket, _landed in moved] + on_b
        for socket in sockets:
            heard = await drain_receipts(socket, wanted=set(after), timeout=10)
            assert set(after) <= heard
            await socket.close()
        return statuses | after

    try:
        statuses = asyncio.run(scenario())
    except BaseException:
        print(stack.logs())
        raise
    stored = stack.confirmed(seeded.circular_ids[0])
    acknowledged = sum(status == 302 for status in statuses.values())
    print(f"acknowledged {acknowledged}, stored {stored}, {figures}")
    assert list(statuses.values()) == [302] * HOUSEHOLDS, statuses
    assert stored == acknowledged == HOUSEHOLDS
