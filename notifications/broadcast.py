"""Sending events to channel-layer groups: after commit, small payloads, never fatal.

The database is the truth. A broadcast that fails (Redis down, layer full) is logged and
dropped; clients re-sync from a snapshot when they reconnect or poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base for event payloads: ids, counts and labels only, never model instances."""

    type: str

    def as_message(self) -> dict[str, object]:
        return asdict(self)


SEND_TIMEOUT_SECONDS = 1.0
# Groups per Redis round trip: a whole association's households in one, instead of one
# round trip each (1,000 groups took ~0.4 s one by one).
BATCH_GROUPS = 1000


async def _send_all(layer: Any, groups: list[str], message: dict[str, Any]) -> None:
    publish = _batch_publisher(layer) if len(groups) > 1 else None
    step = BATCH_GROUPS if publish else 1
    for start in range(0, len(groups), step):
        batch = groups[start : start + step]
        try:
            sending = publish(batch, message) if publish else layer.group_send(batch[0], message)
            # Bounded: with Redis down a request must not hang on its broadcast.
            await asyncio.wait_for(sending, SEND_TIMEOUT_SECONDS)
        except Exception:
            # The layer is failing: give up on the rest rather than wait once per batch.
            logger.warning(
                "broadcast failed at %s; %d groups skipped, clients will re-sync",
                batch[0],
                len(groups) - start - len(batch),
                exc_info=True,
            )
            return


type Publisher = Callable[[list[str], dict[str, Any]], Awaitable[None]]


def _batch_publisher(layer: Any) -> Publisher | None:
    """Many groups in one Redis call on channels-redis's pub/sub layer, else None.

    ``RedisPubSubChannelLayer.group_send`` publishes one group per round trip, under a
    lock. This publishes the same bytes to the same Redis channels (the layer's own group
    channel names, on the shard each belongs to), so every subscriber of every group gets
    the message once, exactly as through ``group_send``: groups stay one per household.
    It uses the layer's internals (channels-redis 4.3, pinned in uv.lock); if they are
    gone, sends fall back to ``group_send`` one group at a time, and
    tests/notifications/test_broadcast_many.py fails against the real Redis layer.
    """
    from channels_redis.pubsub import RedisPubSubChannelLayer

    if not isinstance(layer, RedisPubSubChannelLayer):
        return None
    try:
        loop_layer = layer._get_layer()
        group_channel = loop_layer._get_group_channel_name
        shard_of = loop_layer._get_shard
        serialize = layer.serialize
    except AttributeError:
        return None

    async def publish(groups: list[str], message: dict[str, Any]) -> None:
        data = serialize(message)
        by_shard: dict[Any, list[str]] = {}
        for group in groups:
            channel = group_channel(group)
            by_shard.setdefault(shard_of(channel), []).append(channel)
        await asyncio.gather(
            *(_publish_on(shard, channels, data) for shard, channels in by_shard.items())
        )

    return publish


# One EVALSHA publishes the message to every channel: ten times faster than pipelining
# the PUBLISH commands, whose cost is mostly building a thousand commands in Python.
PUBLISH_MANY = "for i = 2, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[1]) end"


async def _publish_on(shard: Any, channels: list[str], data: bytes) -> None:
    shard._ensure_redis()
    await shard._redis.register_script(PUBLISH_MANY)(args=[data, *channels])


_sender_lock = threading.Lock()
_sender: tuple[int, asyncio.AbstractEventLoop] | None = None


def _sender_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, running in a daemon thread, for sends from sync code.

    ``async_to_sync`` in a thread without a loop (a gunicorn worker, the task worker)
    makes a new loop per call, and channels-redis keeps its connections per loop: every
    broadcast opened and closed a Redis connection. On one long-lived loop the layer
    keeps its connection. Made again after a fork (the pid changes).
    """
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid() or _sender[1].is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="broadcast", daemon=True)
            thread.start()
            _sender = (os.getpid(), loop)
        return _sender[1]


def send_now(*, groups: Iterable[str], event: Event, handler: str = "event.forward") -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message: dict[str, Any] = {"type": handler, "payload": event.as_message()}
    targets = list(groups)
    try:
        if isinstance(layer, InMemoryChannelLayer):
            # In-process queues belong to the server's own loop: send from there.
            async_to_sync(_send_all)(layer, targets, message)
        else:
            future = asyncio.run_coroutine_threadsafe(
                _send_all(layer, targets, message), _sender_loop()
            )
            future.result(timeout=SEND_TIMEOUT_SECONDS * len(targets) + 1)
    except Exception:
        logger.warning("broadcast of %s failed; clients will re-sync", event.type, exc_info=True)


def send_on_commit(*, groups: Iterable[str], event: Event, handler: str = "event.forward") -> None:
    """Queue the event to go out once the surrounding transaction has committed."""
    targets = list(groups)
    transaction.on_commit(
        lambda: send_now(groups=targets, event=event, handler=handler), robust=True
    )
