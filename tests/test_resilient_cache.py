"""Sessions read from Redis (production): cheaper pages, and still correct when Redis goes.

A private ``redis-server`` per test, frozen with SIGSTOP to play a network partition (the
values stay in Redis but nothing answers), or a port nobody listens on for a Redis that is
simply gone.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.core.cache import cache, caches
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from config import resilient_cache
from tests.circulars.test_detail_cost import logged_in, page, publish
from tests.conftest import Town, service_unavailable
from tests.faults.stack import PrivateRedis

CACHED_DB = "django.contrib.sessions.backends.cached_db"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(root=tmp_path / "redis")
    try:
        server.start()
    except Exception as error:
        service_unavailable(f"redis-server could not start: {error!r}")
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)
    server.kill()


@pytest.fixture(autouse=True)
def _quick_retry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(resilient_cache, "RETRY_SECONDS", 0.3)
    resilient_cache._outages.clear()  # ports come round again from one test to the next
    yield
    resilient_cache._outages.clear()


def redis_sessions(url: str) -> override_settings:
    """The production cache settings (config/settings.py with REDIS_URL) pointed at ``url``."""
    return override_settings(
        CACHES={
            "default": {
                "BACKEND": "config.resilient_cache.ResilientRedisCache",
                "LOCATION": url,
                "KEY_PREFIX": "kairan",
                "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
            }
        },
        SESSION_ENGINE=CACHED_DB,
    )


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # closed again: connections are refused


def session_cookie(client: Client) -> str:
    return client.cookies["sessionid"].value


def with_session(key: str) -> Client:
    client = Client()
    client.cookies["sessionid"] = key
    return client


def frozen(server: PrivateRedis) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)


def thawed(server: PrivateRedis) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGCONT)


def test_the_page_reads_its_session_from_redis(town: Town, private_redis: PrivateRedis) -> None:
    circular = publish(town)
    with redis_sessions(private_redis.url):
        resident = logged_in(town.resident1)
        assert resident.get(page(town, circular)).status_code == 200
        with CaptureQueriesContext(connection) as captured:
            assert resident.get(page(town, circular)).status_code == 200
    assert not [q for q in captured if "django_session" in q["sql"]]
    assert len(captured) == 4  # user, the reader's place, receipt, questions


def test_with_redis_gone_pages_and_logout_still_work(town: Town) -> None:
    circular = publish(town)
    with redis_sessions(dead_url()):
        resident = logged_in(town.resident1)
        assert resident.get(page(town, circular)).status_code == 200
        assert resident.post(reverse("account_logout")).status_code == 302
        after = resident.get(page(town, circular))
        assert after.status_code == 302
        assert reverse("account_login") in after["Location"]


def test_a_logout_during_a_partition_stays_a_logout(
    town: Town, private_redis: PrivateRedis
) -> None:
    circular = publish(town)
    with redis_sessions(private_redis.url):
        resident = logged_in(town.resident1)
        assert resident.get(page(town, circular)).status_code == 200
        key = session_cookie(resident)
        stored = list(redis.Redis.from_url(private_redis.url).scan_iter(f"*{key}"))
        assert stored, "the session was not cached"

        frozen(private_redis)
        try:
            assert resident.post(reverse("account_logout")).status_code == 302
        finally:
            thawed(private_redis)
        # Redis still holds the session; the logout's delete did not reach it.
        assert redis.Redis.from_url(private_redis.url).exists(*stored)
        time.sleep(resilient_cache.RETRY_SECONDS + 0.1)

        again = with_session(key).get(page(town, circular))
        assert again.status_code == 302, "the logged-out session came back with Redis"
        assert not redis.Redis.from_url(private_redis.url).exists(*stored)


def test_an_unreachable_redis_costs_one_time_out_then_is_left_alone(
    private_redis: PrivateRedis,
) -> None:
    with redis_sessions(private_redis.url):
        cache.set("kairan-probe", "here")
        frozen(private_redis)
        try:
            started = time.monotonic()
            assert cache.get("kairan-probe") is None  # times out: a miss
            first = time.monotonic() - started
            started = time.monotonic()
            for _ in range(20):
                assert cache.get("kairan-probe") is None
            rest = time.monotonic() - started
        finally:
            thawed(private_redis)
        assert first >= 0.4
        assert rest < 0.1
        time.sleep(resilient_cache.RETRY_SECONDS + 0.1)
        assert cache.get("kairan-probe") == "here"


def test_a_delete_missed_in_one_thread_is_made_good_in_another(
    private_redis: PrivateRedis,
) -> None:
    """Django makes a cache object per thread (an ASGI server's sockets read sessions in
    other threads than the logout ran in)."""
    with redis_sessions(private_redis.url):
        cache.set("kairan-session", "logged in")
        frozen(private_redis)
        try:
            assert cache.get("kairan-other") is None  # times out: Redis is left alone
            cache.delete("kairan-session")  # not even sent
        finally:
            thawed(private_redis)
        assert redis.Redis.from_url(private_redis.url).exists("kairan:1:kairan-session")
        time.sleep(resilient_cache.RETRY_SECONDS + 0.1)
        here, seen = caches["default"], []

        def read() -> None:
            other = caches["default"]
            seen.extend([other is not here, other.get("kairan-session")])

        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    assert seen == [True, None]


def test_a_value_set_without_a_time_out_gets_the_default_one(
    private_redis: PrivateRedis,
) -> None:
    with redis_sessions(private_redis.url):
        cache.set("kairan-ttl", 1)
    ttl = redis.Redis.from_url(private_redis.url).ttl("kairan:1:kairan-ttl")
    assert 0 < ttl <= 300


def test_one_redis_client_serves_every_call(private_redis: PrivateRedis) -> None:
    with redis_sessions(private_redis.url):
        cache.set("kairan-a", 1)
        backend = caches["default"]
        assert isinstance(backend, resilient_cache.ResilientRedisCache)
        client = backend._cache.get_client()
        assert backend._cache.get_client(write=True) is client
        assert cache.get("kairan-a") == 1
