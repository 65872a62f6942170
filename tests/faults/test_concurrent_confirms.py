"""Two phones of one household press 「確認しました」 at the same instant, fifty times.

The service-level race (both threads on one process) is in
tests/circulars/test_services.py; here the two phones are two logged-in members talking to
two different server processes over HTTP, on PostgreSQL, and the chair's 配布状況 socket
counts the events: exactly one confirmation and one event per circular.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from websockets.asyncio.client import ClientConnection

from tests.faults.stack import AppServer, Ledger, Stack, confirm, open_ledger, run_seed

pytestmark = pytest.mark.services

ROUNDS = 50


def _at_once(calls: list[tuple[AppServer, str]], slug: str, circular_id: int) -> list[int]:
    barrier = threading.Barrier(len(calls), timeout=10)
    statuses: list[int] = [0] * len(calls)

    def press(position: int, server: AppServer, session: str) -> None:
        barrier.wait()
        statuses[position] = confirm(
            server, slug=slug, circular_id=circular_id, session=session
        ).status

    threads = [
        threading.Thread(target=press, args=(position, server, session))
        for position, (server, session) in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return statuses


def test_two_phones_at_the_same_instant_record_one_confirmation_each_time(stack: Stack) -> None:
    seeded = run_seed(stack.env, households=1, circulars=ROUNDS)
    server_a, server_b = stack.serve("a", "b")
    phones = [(server_a, seeded.resident_sessions[0]), (server_b, seeded.second_device_session)]

    async def scenario() -> list[list[dict[str, object]]]:
        sockets = await asyncio.gather(
            *(
                open_ledger(server_b, Ledger(seeded.slug, circular_id, seeded.chair_session))
                for circular_id in seeded.circular_ids
            )
        )
        for circular_id in seeded.circular_ids:
            statuses = await asyncio.to_thread(_at_once, phones, seeded.slug, circular_id)
            assert statuses == [302, 302], statuses

        async def listen(socket: ClientConnection) -> list[dict[str, object]]:
            events = []
            while True:
                try:
                    events.append(json.loads(await asyncio.wait_for(socket.recv(), 1.0)))
                except TimeoutError:
                    await socket.close()
                    return events

        heard = await asyncio.gather(*(listen(socket) for socket in sockets))
        return list(heard)

    try:
        heard = asyncio.run(scenario())
    except BaseException:
        print(stack.logs())
        raise

    rows = stack.postgres.sql(
        stack.database,
        "SELECT circular_id, count(*), count(confirmed_at), max(version), "
        "count(DISTINCT confirmed_by_id) FROM circulars_receipt "
        "WHERE household_id = %s GROUP BY circular_id ORDER BY circular_id",
        seeded.household_ids[0],
    )
    # One receipt, confirmed, by one of the two phones, and updated once (version 1).
    assert rows == [(circular_id, 1, 1, 1, 1) for circular_id in seeded.circular_ids], rows
    for circular_id, events in zip(seeded.circular_ids, heard, strict=True):
        confirmations = [
            event
            for event in events
            if event.get("type") == "ledger.receipt" and event.get("status") == "confirmed"
        ]
        assert len(confirmations) == 1, (circular_id, events)
    print(f"{ROUNDS} rounds: {ROUNDS} receipts, {ROUNDS} events")
