"""Shared pieces for tests of the real-time layer: session cookies for sockets, driving an
async scenario, and listening on channel-layer groups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client


def session_cookie(user: User) -> bytes:
    """A logged-in session, as the Cookie header a browser would send on the socket."""
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={value}".encode()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Drive one async scenario; the Redis layer's connections are closed on its loop."""

    async def wrapped() -> None:
        try:
            await scenario()
        finally:
            layer = get_channel_layer()
            if type(layer).__name__ == "RedisPubSubChannelLayer":
                await layer.flush()

    async_to_sync(wrapped)()


def listen(groups: dict[str, str], action: Callable[[], None]) -> dict[str, list[dict[str, Any]]]:
    """Subscribe one test channel per named group, run ``action`` (sync, on this thread, so
    it shares the test's database connection), and return what each channel received."""

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        layer = get_channel_layer()
        assert layer is not None
        channels = {}
        for name, group in groups.items():
            channels[name] = await layer.new_channel()
            await layer.group_add(group, channels[name])
        await sync_to_async(action)()
        received: dict[str, list[dict[str, Any]]] = {name: [] for name in groups}
        for name, channel in channels.items():
            while True:
                try:
                    message = await asyncio.wait_for(layer.receive(channel), 0.2)
                except TimeoutError:
                    break
                received[name].append(message)
        return received

    return async_to_sync(scenario)()
