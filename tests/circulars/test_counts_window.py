"""The ledger's counts are recounted once per window per circular, by one page process.

Each ``_CountsCoalescer`` here stands for one gunicorn worker: the window they share lives
in Redis, so two of them marking changes of one circular within a window give one count of
the blocks both changed. Without Redis each keeps its own windows, as before.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from django.test import override_settings

from circulars import events
from tests.notifications.test_broadcast import layer_settings

WINDOW = 0.15


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, frozenset[int] | None]]]:
    calls: list[tuple[int, frozenset[int] | None]] = []
    monkeypatch.setattr(
        events, "_counts_send", lambda circular_id, blocks: calls.append((circular_id, blocks))
    )
    yield calls


@pytest.fixture
def private_keys(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, so runs side by side share no window."""
    layer = layer_settings("redis", redis_url)
    layer["default"]["CONFIG"]["prefix"] = f"test-{uuid.uuid4().hex[:8]}"
    with override_settings(CHANNEL_LAYERS=layer, KAIRAN_LEDGER_COUNTS_SECONDS=WINDOW):
        yield redis_url


def wait_for(calls: list[tuple[int, frozenset[int] | None]], n: int) -> None:
    deadline = time.monotonic() + 5
    while len(calls) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(WINDOW * 2)  # and nothing more comes


def test_two_processes_share_one_window_per_circular(
    private_keys: str, counted: list[tuple[int, frozenset[int] | None]]
) -> None:
    worker1 = events._CountsCoalescer(redis_url=private_keys)
    worker2 = events._CountsCoalescer(redis_url=private_keys)
    worker1.mark(7, 1)
    worker2.mark(7, 2)
    worker2.mark(7, 1)
    worker1.mark(8, 5)  # another circular: a window of its own
    wait_for(counted, 2)
    assert sorted(counted, key=lambda call: call[0]) == [
        (7, frozenset({1, 2})),
        (8, frozenset({5})),
    ]
    # A change after the window closed opens the next one, whichever process makes it.
    worker2.mark(7, 3)
    wait_for(counted, 3)
    assert counted[2:] == [(7, frozenset({3}))]


def test_without_redis_each_process_counts_its_own_changes(
    counted: list[tuple[int, frozenset[int] | None]],
) -> None:
    # Nothing listens on port 9: the shared window fails at once and is not tried again
    # for a while, so a confirmation never waits on Redis.
    with override_settings(KAIRAN_LEDGER_COUNTS_SECONDS=WINDOW):
        worker1 = events._CountsCoalescer(redis_url="redis://127.0.0.1:9/0")
        worker2 = events._CountsCoalescer(redis_url="redis://127.0.0.1:9/0")
        started = time.monotonic()
        worker1.mark(7, 1)
        worker1.mark(7, 2)
        worker2.mark(7, 3)
        assert time.monotonic() - started < 1.0
        wait_for(counted, 2)
    assert sorted(counted, key=lambda call: sorted(call[1] or ())) == [
        (7, frozenset({1, 2})),
        (7, frozenset({3})),
    ]


def test_a_window_whose_keys_redis_lost_counts_every_block(
    private_keys: str, counted: list[tuple[int, frozenset[int] | None]]
) -> None:
    import redis

    worker = events._CountsCoalescer(redis_url=private_keys)
    worker.mark(7, 1)
    client = redis.Redis.from_url(private_keys)
    client.delete(*events._CountsCoalescer._keys(7))  # as a Redis restart would
    wait_for(counted, 1)
    assert counted == [(7, None)]
