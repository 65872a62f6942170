"""Sockets do not outlive the login or the membership behind them."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from communities import services
from tests.conftest import Town
from tests.notifications.test_consumers import communicator
from tests.realtime import run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Both channel layers (the conftest's fixture).
    pytest.mark.usefixtures("layer"),
]

TIMEOUT = 5


def logged_in(user: User) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return client, f"{settings.SESSION_COOKIE_NAME}={value}".encode()


def test_logging_out_closes_that_phone_and_not_the_other(town: Town) -> None:
    phone_a, cookie_a = logged_in(town.resident1)
    _phone_b, cookie_b = logged_in(town.resident1)

    async def scenario() -> None:
        socket_a = communicator(cookie=cookie_a)
        socket_b = communicator(cookie=cookie_b)
        assert (await socket_a.connect(timeout=TIMEOUT))[0]
        assert (await socket_b.connect(timeout=TIMEOUT))[0]
        assert (await socket_a.receive_json_from(TIMEOUT))["type"] == "hello"
        assert (await socket_b.receive_json_from(TIMEOUT))["type"] == "hello"
        response = await sync_to_async(phone_a.post)("/accounts/logout/")
        assert response.status_code == 302
        closed = await socket_a.receive_output(TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 4403}
        assert await socket_b.receive_nothing(0.5)
        await socket_b.disconnect()

    run(scenario)


def test_removing_the_household_closes_its_members_sockets(town: Town) -> None:
    _client, cookie = logged_in(town.resident1)

    async def scenario() -> None:
        socket = communicator(cookie=cookie)
        assert (await socket.connect(timeout=TIMEOUT))[0]
        assert (await socket.receive_json_from(TIMEOUT))["type"] == "hello"
        await sync_to_async(services.household_remove)(household=town.household1)
        closed = await socket.receive_output(TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 4403}

    run(scenario)
