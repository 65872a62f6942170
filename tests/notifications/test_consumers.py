"""The live inbox socket through the real ASGI stack: origin check, session auth, groups.

Every check runs twice: with the in-memory channel layer, and with the Redis pub/sub layer
that production uses (needs a Redis; skips locally without one, fails in CI).
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from config.asgi import application
from notifications.broadcast import Event, send_now
from notifications.groups import household_group, user_group
from tests.conftest import Town
from tests.realtime import run, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
GOOD_ORIGIN = b"http://localhost"


def communicator(*, cookie: bytes | None = None, origin: bytes | None = GOOD_ORIGIN) -> Any:
    headers = []
    if cookie is not None:
        headers.append((b"cookie", cookie))
    if origin is not None:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(application, "/ws/inbox/", headers=headers)


async def send(group: str, event_type: str) -> None:
    """Broadcast as the services do: ``send_now`` from sync code, here on the test thread."""
    await sync_to_async(send_now)(groups=[group], event=Event(type=event_type))


def test_anonymous_is_refused(layer: str, db: None) -> None:
    async def scenario() -> None:
        socket = communicator()
        connected, code = await socket.connect(timeout=TIMEOUT)
        assert connected is False
        assert code == 4401
        await socket.disconnect()

    run(scenario)


def test_member_is_accepted_and_greeted(layer: str, town: Town) -> None:
    cookie = session_cookie(town.resident1)
    user_id = town.resident1.pk
    household_id = town.household1.pk
    other_household_id = town.household2.pk

    async def scenario() -> None:
        socket = communicator(cookie=cookie)
        connected, _subprotocol = await socket.connect(timeout=TIMEOUT)
        assert connected is True
        assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
        backend = type(get_channel_layer()).__name__
        assert (
            backend == {"memory": "InMemoryChannelLayer", "redis": "RedisPubSubChannelLayer"}[layer]
        )

        # Events for the member's household and for the member reach the socket through
        # the app's own broadcast and the layer; another household's do not.
        await send(household_group(other_household_id), "test.other")
        await send(household_group(household_id), "test.household")
        await send(user_group(user_id), "test.user")
        assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "test.household"}
        assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "test.user"}
        assert await socket.receive_nothing(timeout=0.3)

        # A forced close (member removed, logged out) closes the socket.
        channel_layer = get_channel_layer()
        assert channel_layer is not None
        await channel_layer.group_send(user_group(user_id), {"type": "session.close"})
        output = await socket.receive_output(timeout=TIMEOUT)
        assert output == {"type": "websocket.close", "code": 4403}
        await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"https://localhost.evil.example", b"null", None]
)
def test_bad_or_missing_origin_is_refused(layer: str, town: Town, origin: bytes | None) -> None:
    cookie = session_cookie(town.resident1)

    async def scenario() -> None:
        socket = communicator(cookie=cookie, origin=origin)
        connected, _code = await socket.connect(timeout=TIMEOUT)
        assert connected is False
        await socket.disconnect()

    run(scenario)


def test_allowed_host_origins_are_accepted(layer: str, town: Town) -> None:
    cookie = session_cookie(town.resident2)
    hosts = [host for host in settings.ALLOWED_HOSTS if host not in {"*", "testserver"}]
    assert hosts

    async def scenario() -> None:
        for host in hosts:
            socket = communicator(cookie=cookie, origin=f"http://{host}:8000".encode())
            connected, _code = await socket.connect(timeout=TIMEOUT)
            assert connected is True, host
            assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
            await socket.disconnect()

    run(scenario)


def test_logged_out_session_is_refused(layer: str, town: Town) -> None:
    client = Client()
    client.force_login(town.resident1)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.logout()

    async def scenario() -> None:
        socket = communicator(cookie=f"{settings.SESSION_COOKIE_NAME}={value}".encode())
        connected, code = await socket.connect(timeout=TIMEOUT)
        assert connected is False
        assert code == 4401
        await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize("message", [{"text_data": "hello?"}, {"bytes_data": b"\x00\x01"}])
def test_a_client_that_talks_is_closed(layer: str, town: Town, message: dict[str, Any]) -> None:
    cookie = session_cookie(town.resident1)

    async def scenario() -> None:
        socket = communicator(cookie=cookie)
        connected, _subprotocol = await socket.connect(timeout=TIMEOUT)
        assert connected is True
        assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
        await socket.send_to(**message)
        output = await socket.receive_output(timeout=TIMEOUT)
        assert output == {"type": "websocket.close", "code": 4400}
        await socket.disconnect()

    run(scenario)
