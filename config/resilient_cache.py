"""A Redis cache that degrades to "no cache" while Redis is unreachable.

Everything Kairan caches (furigana, rendered print pages, allauth's rate-limit counters)
can be recomputed; an outage must cost speed, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class ResilientRedisCache(RedisCache):
    def _quietly(self, name: str, default: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(super(), name)(*args, **kwargs)
        except (RedisError, OSError):
            logger.warning("cache %s failed; carrying on without the cache", name, exc_info=True)
            return default

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._quietly("get", default, key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> None:
        self._quietly("set", None, key, value, timeout, version)

    def add(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> bool:
        return bool(self._quietly("add", False, key, value, timeout, version))

    def delete(self, key: Any, version: Any = None) -> bool:
        return bool(self._quietly("delete", False, key, version))

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        return dict(self._quietly("get_many", {}, keys, version))

    def set_many(self, data: Any, timeout: Any = None, version: Any = None) -> list[Any]:
        return list(self._quietly("set_many", [], data, timeout, version))

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        return int(self._quietly("incr", delta, key, delta, version))

    def has_key(self, key: Any, version: Any = None) -> bool:
        return bool(self._quietly("has_key", False, key, version))

    def touch(self, key: Any, timeout: Any = None, version: Any = None) -> bool:
        return bool(self._quietly("touch", False, key, timeout, version))
