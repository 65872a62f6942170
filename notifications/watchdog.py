"""Notice when the channel layer (Redis) stops delivering, and tell the browsers.

If Redis goes away, channels-redis reconnects quietly when it returns, and whatever was
published meanwhile is gone while every socket still looks live. So each server process
probes the layer with a round trip every few seconds; when a probe fails it closes its
sockets with code 4503. The pages then poll over HTTP and keep trying to reconnect, and a
reconnect only succeeds once the layer works again, followed by a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

logger = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 3.0
CLOSE_CODE_LAYER_DOWN = 4503


class LayerWatchdog:
    def __init__(self) -> None:
        self.consumers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.task: asyncio.Task[None] | None = None

    def watch(self, consumer: Any) -> None:
        layer = get_channel_layer()
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return  # in-process: nothing can fail between us and the layer
        self.consumers.add(consumer)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def forget(self, consumer: Any) -> None:
        self.consumers.discard(consumer)

    async def _run(self) -> None:
        while self.consumers:
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            if not self.consumers or await probe():
                continue
            logger.warning("channel layer probe failed: closing %d sockets", len(self.consumers))
            for consumer in list(self.consumers):
                self.consumers.discard(consumer)
                try:
                    await consumer.close(code=CLOSE_CODE_LAYER_DOWN)
                except Exception:
                    logger.debug("closing a socket failed", exc_info=True)
            await reset_layer()


async def probe() -> bool:
    """A message sent to ourselves through the layer comes back in time."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        channel = await asyncio.wait_for(layer.new_channel("probe."), PROBE_TIMEOUT_SECONDS)
        await asyncio.wait_for(layer.send(channel, {"type": "probe"}), PROBE_TIMEOUT_SECONDS)
        await asyncio.wait_for(layer.receive(channel), PROBE_TIMEOUT_SECONDS)
    except Exception:
        return False
    return True


async def reset_layer() -> None:
    """Drop the layer's connections and subscriptions once its sockets are closed.

    After Redis restarts, channels-redis keeps a dead subscriber connection and believes
    it is still subscribed: sockets that reconnect say hello and then never hear a thing.
    Flushed, the layer connects and subscribes afresh for the next socket.
    """
    layer = get_channel_layer()
    flush = getattr(layer, "flush", None)
    if flush is None:
        return
    try:
        await asyncio.wait_for(flush(), PROBE_TIMEOUT_SECONDS)
    except Exception:
        logger.debug("flushing the channel layer failed", exc_info=True)


_watchdogs: dict[asyncio.AbstractEventLoop, LayerWatchdog] = {}


def watchdog() -> LayerWatchdog:
    loop = asyncio.get_running_loop()
    if loop not in _watchdogs:
        _watchdogs[loop] = LayerWatchdog()
    return _watchdogs[loop]
