"""A Redis cache that degrades to "no cache" while Redis is unreachable.

Everything Kairan caches (sessions, whose truth stays in the database; furigana, rendered
print pages, allauth's rate-limit counters) can be recomputed; an outage must cost speed,
never a 500. Two rules make that hold for sessions too:

- A write or delete that failed may leave an old value behind for when Redis is back (a
  session logged out during the outage would come back to life). Such keys are remembered
  and deleted before this process reads anything from Redis again.
- After a failure Redis is left alone for ``RETRY_SECONDS``: calls answer at once as a
  miss would, so an unreachable server costs one time-out per process now and then, not
  one per call.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
# Keys to delete once Redis answers again; sessions live 180 days, so they are not left
# to expire. Past this many (a long outage under heavy writing) the rest are only logged.
STALE_KEYS_MAX = 100_000


@dataclass
class _Outage:
    """What one process knows about one Redis server's outages. Django makes a cache
    object per thread; a logout in one thread must not be undone in another."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stale: set[str] = field(default_factory=set)
    resume_at: float = 0.0


_outages: dict[str, _Outage] = {}
_outages_lock = threading.Lock()


class _OneClientPerPool(RedisCacheClient):
    """Django makes a ``redis.Redis`` for every call, and redis-py fills a table of some
    170 reply handlers in each: half the CPU of a cache read. One per pool does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)  # type: ignore[attr-defined]
        return client


class ResilientRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _OneClientPerPool
        with _outages_lock:
            self._outage = _outages.setdefault(str(server), _Outage())

    def _quietly(self, name: str, default: Any, *args: Any, written: tuple[str, ...] = ()) -> Any:
        """Call ``RedisCache.<name>``; on failure log, remember ``written`` and answer
        ``default``."""
        outage = self._outage
        if time.monotonic() < outage.resume_at:
            self._remember(written)
            return default
        try:
            if outage.stale:
                self._purge()
            return getattr(super(), name)(*args)
        except (RedisError, OSError):
            logger.warning("cache %s failed; carrying on without the cache", name, exc_info=True)
            outage.resume_at = time.monotonic() + RETRY_SECONDS
            self._remember(written)
            return default

    def _remember(self, keys: tuple[str, ...]) -> None:
        if not keys:
            return
        outage = self._outage
        with outage.lock:
            room = max(STALE_KEYS_MAX - len(outage.stale), 0)
            if len(keys) > room:
                logger.error(
                    "cache: %d failed writes not remembered; their old values may be read "
                    "until they expire",
                    len(keys) - room,
                )
            outage.stale.update(keys[:room])

    def _purge(self) -> None:
        outage = self._outage
        with outage.lock:
            keys = list(outage.stale)
        self._cache.delete_many(keys)  # raises while Redis is still away: kept for later
        with outage.lock:
            outage.stale.difference_update(keys)
        logger.info("cache: deleted %d values written during the outage", len(keys))

    def _key(self, key: Any, version: Any) -> str:
        return str(self.make_and_validate_key(key, version=version))

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._quietly("get", default, key, default, version)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        written = (self._key(key, version),)
        self._quietly("set", None, key, value, timeout, version, written=written)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        written = (self._key(key, version),)
        return bool(self._quietly("add", False, key, value, timeout, version, written=written))

    def delete(self, key: Any, version: Any = None) -> bool:
        written = (self._key(key, version),)
        return bool(self._quietly("delete", False, key, version, written=written))

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        return dict(self._quietly("get_many", {}, keys, version))

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> list[Any]:
        written = tuple(self._key(key, version) for key in data)
        return list(self._quietly("set_many", [], data, timeout, version, written=written))

    def delete_many(self, keys: Any, version: Any = None) -> None:
        keys = list(keys)
        written = tuple(self._key(key, version) for key in keys)
        self._quietly("delete_many", None, keys, version, written=written)

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        return int(self._quietly("incr", delta, key, delta, version))

    def has_key(self, key: Any, version: Any = None) -> bool:
        return bool(self._quietly("has_key", False, key, version))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return bool(self._quietly("touch", False, key, timeout, version))
