"""GET /healthz against real failures: an unreachable database, an unreachable Redis."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections
from django.db.utils import load_backend
from django.test import Client, override_settings


def test_healthz_ok(db: None) -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert body["database"] == "ok"
    assert body["channel_layer"] in {"ok", "down"}
    assert body["print_font"] in {"ok", "missing"}
    assert body["tasks_backend"]


@contextmanager
def unreachable_database() -> Iterator[None]:
    """Swap this thread's default connection for one whose database cannot be reached.

    SQLite: a file in a directory that does not exist. PostgreSQL: a closed local port,
    without the pool (which would keep retrying until its timeout).
    """
    original = connections["default"]
    settings_dict = copy.deepcopy(original.settings_dict)
    if original.vendor == "sqlite":
        settings_dict["NAME"] = "/nonexistent-kairan-dir/no.sqlite3"
    else:
        settings_dict["HOST"] = "127.0.0.1"
        settings_dict["PORT"] = "1"
        settings_dict["OPTIONS"] = {"connect_timeout": 2}
    broken = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, "default")
    connections["default"] = broken
    try:
        yield
    finally:
        connections["default"] = original
        broken.close()


def test_healthz_503_when_database_is_unreachable(db: None) -> None:
    with unreachable_database():
        response = Client().get("/healthz")
        assert response.status_code == 503
        assert response.json()["database"] == "down"
    # Back on the real database, the same check is healthy again.
    assert Client().get("/healthz").status_code == 200


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_channel_layer_down_when_redis_is_unreachable(db: None) -> None:
    response = Client().get("/healthz")
    # The database is the truth: Redis down degrades live updates, not the service.
    assert response.status_code == 200
    body = response.json()
    assert body["channel_layer"] == "down"
    assert body["database"] == "ok"


def test_channel_layer_ok_with_real_redis(db: None, redis_url: str) -> None:
    with override_settings(REDIS_URL=redis_url):
        body = Client().get("/healthz").json()
    assert body["channel_layer"] == "ok"


@override_settings(REDIS_URL="")
def test_channel_layer_ok_without_redis(db: None) -> None:
    assert Client().get("/healthz").json()["channel_layer"] == "ok"
