"""One event to many groups (a circular published to every household of an association):
each group's subscribers hear it exactly once, and nobody else does.

Sent as the services send, ``send_now`` from sync code; heard by channels subscribed to the
groups through the layer, in memory and on the real Redis pub/sub layer. On Redis the
groups go out in batches of ``BATCH_GROUPS`` per call, so the test sends more than two
batches' worth.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.test import override_settings

from notifications.broadcast import BATCH_GROUPS, Event, _batch_publisher, send_now
from notifications.groups import household_group
from tests.realtime import run

QUIET_S = 0.5


def households(count: int) -> list[int]:
    """Ids no other test uses at the same time (Redis is shared between test runs)."""
    base = uuid.uuid4().int % 10**9 * 10**4
    return [base + n for n in range(count)]


def hear_exactly_once(count: int, prefix: str = "") -> None:
    ids = households(count)
    targets = [household_group(pk) for pk in ids]
    outside = household_group(ids[-1] + 1)  # next door, not sent to

    async def scenario() -> None:
        layer = get_channel_layer()
        assert layer is not None
        if prefix:
            assert layer._get_layer().prefix == prefix
        listeners: list[str] = []
        for group in [*targets, targets[0]]:  # two phones in the first household
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            listeners.append(channel)
        neighbour = await layer.new_channel()
        await layer.group_add(outside, neighbour)

        await sync_to_async(send_now)(groups=targets, event=Event(type="test.many"))

        heard = await asyncio.gather(
            *(asyncio.wait_for(layer.receive(channel), 10) for channel in listeners)
        )
        assert all(
            message == {"type": "event.forward", "payload": {"type": "test.many"}}
            for message in heard
        )
        again = await asyncio.gather(
            *(asyncio.wait_for(layer.receive(c), QUIET_S) for c in [*listeners, neighbour]),
            return_exceptions=True,
        )
        assert all(isinstance(result, TimeoutError) for result in again), [
            result for result in again if not isinstance(result, TimeoutError)
        ][:3]

    run(scenario)


def test_every_group_hears_a_many_group_send_exactly_once(layer: str) -> None:
    # The in-memory layer sweeps every channel on every call: a few hundred groups there.
    hear_exactly_once(2 * BATCH_GROUPS + 500 if layer == "redis" else 300)


def test_on_redis_many_groups_go_out_in_batches(redis_url: str) -> None:
    """The batched path is the one taken on the installed channels-redis (it relies on
    the layer's internals), and it honours the layer's channel prefix."""
    prefix = f"kairan-test-{uuid.uuid4().hex[:8]}."
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends = {}
        try:

            async def batched() -> None:
                assert _batch_publisher(get_channel_layer()) is not None

            run(batched)
            hear_exactly_once(BATCH_GROUPS + 1, prefix)
        finally:
            channel_layers.backends = {}


@pytest.fixture
def dead_redis_layer() -> Iterator[None]:
    dead = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    with override_settings(CHANNEL_LAYERS=dead):
        channel_layers.backends = {}
        yield
    channel_layers.backends = {}


def test_a_dead_layer_gives_up_on_many_groups_at_once(dead_redis_layer: None) -> None:
    """With Redis down the publish of a whole city does not wait once per batch."""
    groups = [household_group(pk) for pk in range(10 * BATCH_GROUPS)]
    start = time.monotonic()
    send_now(groups=groups, event=Event(type="test.many"))  # logged, never raised
    assert time.monotonic() - start < 2.0
