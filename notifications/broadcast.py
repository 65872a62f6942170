"""Sending events to channel-layer groups: after commit, small payloads, never fatal.

The database is the truth. A broadcast that fails (Redis down, layer full) is logged and
dropped; clients re-sync from a snapshot when they reconnect or poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
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


async def _send_all(layer: Any, groups: list[str], message: dict[str, Any]) -> None:
    for index, group in enumerate(groups):
        try:
            # Bounded: with Redis down a request must not hang on its broadcast.
            await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT_SECONDS)
        except Exception:
            # The layer is failing: give up on the rest rather than wait once per group.
            logger.warning(
                "broadcast failed at %s; %d groups skipped, clients will re-sync",
                group,
                len(groups) - index - 1,
                exc_info=True,
            )
            return


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
