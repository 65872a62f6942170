"""Sending events to channel-layer groups: after commit, small payloads, never fatal.

The database is the truth. A broadcast that fails (Redis down, layer full) is logged and
dropped; clients re-sync from a snapshot when they reconnect or poll.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

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


def send_now(*, groups: Iterable[str], event: Event, handler: str = "event.forward") -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": handler, "payload": event.as_message()}
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            logger.warning("broadcast to %s failed; clients will re-sync", group, exc_info=True)


def send_on_commit(*, groups: Iterable[str], event: Event) -> None:
    """Queue the event to go out once the surrounding transaction has committed."""
    targets = list(groups)
    transaction.on_commit(lambda: send_now(groups=targets, event=event), robust=True)
