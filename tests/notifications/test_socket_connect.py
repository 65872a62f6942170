"""What a socket's connect costs, and who it lets in.

A mass reconnect brings thousands of sockets back at once, so a connect is one trip
through the thread pool with two queries: the session row, then the user with their
households. The checks of ``django.contrib.auth.get_user`` still hold. Through the real
ASGI stack, on the in-memory and the Redis pub/sub layer.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import channels.consumer
import pytest
import redis.asyncio
from asgiref.sync import sync_to_async
from channels.db import DatabaseSyncToAsync
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.cached_db import SessionStore
from django.contrib.sessions.models import Session
from django.db.backends.utils import CursorWrapper
from django.test import override_settings

from config.asgi import application
from notifications import consumers
from notifications.broadcast import Event, send_now
from notifications.groups import household_group
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory
from tests.realtime import run, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5


def communicator(cookie: bytes) -> Any:
    headers = [(b"cookie", cookie), (b"origin", b"http://localhost")]
    return WebsocketCommunicator(application, "/ws/inbox/", headers=headers)


@contextmanager
def database_work_in_any_thread() -> Iterator[dict[str, list[Any]]]:
    """Every query, in whatever thread, and every trip through ``database_sync_to_async``.

    The consumer's database work runs in a pool thread on a connection of its own, so
    the test's ``assertNumQueries`` (one connection) would see none of it.
    """
    seen: dict[str, list[Any]] = {"queries": [], "trips": []}
    lock = threading.Lock()
    execute = CursorWrapper._execute_with_wrappers  # type: ignore[attr-defined]
    hop = DatabaseSyncToAsync.thread_handler

    def recorded_execute(self: CursorWrapper, sql: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            seen["queries"].append(sql)
        return execute(self, sql, *args, **kwargs)

    def recorded_hop(self: DatabaseSyncToAsync, *args: Any, **kwargs: Any) -> Any:
        with lock:
            seen["trips"].append(threading.current_thread().name)
        return hop(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CursorWrapper, "_execute_with_wrappers", recorded_execute)
        patch.setattr(DatabaseSyncToAsync, "thread_handler", recorded_hop)
        yield seen


def test_a_connect_is_one_trip_with_two_queries(layer: str, town: Town) -> None:
    # A member of two households (a supporter of a parent's household too) hears both.
    second = HouseholdFactory.create(block=town.block2, label="実家")
    MemberFactory.create(household=second, user=town.resident1)
    cookie = session_cookie(town.resident1)
    mine = [town.household1.pk, second.pk]

    async def scenario() -> None:
        with database_work_in_any_thread() as seen:
            socket = communicator(cookie)
            connected, _ = await socket.connect(timeout=TIMEOUT)
            assert connected is True
            assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "hello"}
        assert len(seen["queries"]) == 2, seen
        assert "django_session" in seen["queries"][0]
        assert len(seen["trips"]) == 1, seen["trips"]
        assert seen["trips"][0].startswith("ws-auth"), seen

        for pk in [town.household2.pk, *mine]:
            await sync_to_async(send_now)(groups=[household_group(pk)], event=Event(f"t.{pk}"))
        for pk in mine:
            assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": f"t.{pk}"}
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    run(scenario)


def test_a_socket_takes_no_trip_to_the_sync_thread(layer: str, town: Town) -> None:
    # Channels closes stale database connections before each handler, through its sync
    # thread; nothing here uses that thread's connection, and the hop cost more than the
    # forwarding (a fan-out to thousands of sockets paid it once per socket).
    cookie = session_cookie(town.resident1)
    hops: list[str] = []

    async def recorded_close() -> None:
        hops.append("close_old_connections")

    async def scenario() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(channels.consumer, "aclose_old_connections", recorded_close)
            socket = communicator(cookie)
            connected, _ = await socket.connect(timeout=TIMEOUT)
            assert connected is True
            assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "hello"}
            for n in range(3):
                await sync_to_async(send_now)(
                    groups=[household_group(town.household1.pk)], event=Event(f"t.{n}")
                )
            for n in range(3):
                assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": f"t.{n}"}
            await socket.disconnect()
        assert hops == []

    run(scenario)


def refused(cookie: bytes) -> int:
    codes = []

    async def scenario() -> None:
        socket = communicator(cookie)
        connected, code = await socket.connect(timeout=TIMEOUT)
        assert connected is False
        codes.append(code)
        await socket.disconnect()

    run(scenario)
    return codes[0]


def test_a_password_change_ends_the_sockets_login(layer: str, town: Town) -> None:
    cookie = session_cookie(town.resident1)
    town.resident1.set_password("a-new-secret-nobody-knows")
    town.resident1.save()
    assert refused(cookie) == 4401


def test_a_deactivated_user_is_refused(layer: str, town: Town) -> None:
    cookie = session_cookie(town.resident1)
    town.resident1.is_active = False
    town.resident1.save()
    assert refused(cookie) == 4401


def test_a_deleted_user_is_refused(layer: str, town: Town) -> None:
    cookie = session_cookie(town.resident1)
    town.resident1.delete()
    assert refused(cookie) == 4401


def test_an_unknown_session_is_refused(layer: str, db: None) -> None:
    assert refused(b"sessionid=nosuchsessionkey0123456789abcdef") == 4401


def test_past_the_admission_limit_a_connect_is_turned_away_busy(
    layer: str, town: Town, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page comes back after a random pause (kairan.js) rather than queue for ever."""
    cookie = session_cookie(town.resident1)
    monkeypatch.setattr(consumers.admission, "queue_limit", 0)
    assert refused(cookie) == consumers.CLOSE_CODE_BUSY
    monkeypatch.setattr(consumers.admission, "queue_limit", 1)
    assert consumers.admission.waiting == 0  # nothing left counted as waiting

    async def admitted() -> None:
        socket = communicator(cookie)
        connected, _ = await socket.connect(timeout=TIMEOUT)
        assert connected is True
        await socket.disconnect()

    run(admitted)


def test_with_sessions_in_the_cache_the_database_decides(town: Town, redis_url: str) -> None:
    """cached_db (production with Redis): the socket reads the session row itself, so a
    login deleted from the database is refused even while the cache still holds it."""
    cache = {
        "default": {
            "BACKEND": "config.resilient_cache.ResilientRedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"kairan-test-{uuid.uuid4().hex[:8]}",
        }
    }
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.cached_db", CACHES=cache
    ):
        cookie = session_cookie(town.resident1)
        key = cookie.decode().split("=", 1)[1]
        SessionStore(key).load()  # now in the cache as well

        async def accepted() -> None:
            with database_work_in_any_thread() as seen:
                socket = communicator(cookie)
                connected, _ = await socket.connect(timeout=TIMEOUT)
                assert connected is True
                await socket.disconnect()
            assert len(seen["queries"]) == 2

        run(accepted)
        Session.objects.filter(session_key=key).delete()
        assert SessionStore(key).exists(key)  # the cache still has it
        assert refused(cookie) == 4401


def test_a_closed_sockets_groups_are_left_in_the_background(
    town: Town, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Redis a closed socket leaves its groups a moment later (consumers.Leaver): a
    phone of the same household that is back by then keeps the subscription and hears
    events; once the last socket of the household has gone, Redis has no subscriber."""
    monkeypatch.setattr(consumers.Leaver, "DELAY_SECONDS", 0.3)
    prefix = f"kairan-test-{uuid.uuid4().hex[:8]}."
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    }
    cookie = session_cookie(town.resident1)
    group = household_group(town.household1.pk)

    async def scenario() -> None:
        layer = get_channel_layer()
        assert layer is not None
        client = redis.asyncio.Redis.from_url(redis_url)

        async def subscribers() -> int:
            [(_name, count)] = await client.pubsub_numsub(f"{prefix}__group__{group}")
            return int(count)

        try:
            first = communicator(cookie)
            assert (await first.connect(timeout=TIMEOUT))[0] is True
            assert await subscribers() == 1
            await first.disconnect()
            second = communicator(cookie)  # the same phone, back at once
            assert (await second.connect(timeout=TIMEOUT))[0] is True
            await asyncio.sleep(1.0)  # the first socket's groups have been left
            assert await subscribers() == 1
            await layer.group_send(group, {"type": "event.forward", "payload": {"type": "t"}})
            assert await second.receive_json_from(timeout=TIMEOUT) == {"type": "hello"}
            assert await second.receive_json_from(timeout=TIMEOUT) == {"type": "t"}
            await second.disconnect()
            await asyncio.sleep(1.0)
            assert await subscribers() == 0
        finally:
            await client.aclose()

    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends = {}
        try:
            run(scenario)
        finally:
            channel_layers.backends = {}
