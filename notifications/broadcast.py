"""Sending events to channel-layer groups: after commit, small payloads, never fatal.

The database is the truth. A broadcast that fails (Redis down, layer full) is logged and
dropped; clients re-sync from a snapshot when they reconnect or poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
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


def send_now(*, groups: Iterable[str], event: Event, handler: str = "event.forward") -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message: dict[str, Any] = {"type": handler, "payload": event.as_message()}
    try:
        async_to_sync(_send_all)(layer, list(groups), message)
    except Exception:
        logger.warning("broadcast of %s failed; clients will re-sync", event.type, exc_info=True)


def send_on_commit(*, groups: Iterable[str], event: Event, handler: str = "event.forward") -> None:
    """Queue the event to go out once the surrounding transaction has committed."""
    targets = list(groups)
    transaction.on_commit(
        lambda: send_now(groups=targets, event=event, handler=handler), robust=True
    )
