"""Fixed-window rate limits in the cache, for the doors people could hammer.

A cache outage fails open (the resilient cache answers as if empty): a rate limit is a
brake, never the reason a resident cannot confirm.
"""

from __future__ import annotations

import hashlib
import time

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

# scope: (hits allowed, window in seconds)
LIMITS: dict[str, tuple[int, int]] = {
    "join": (20, 600),  # invite-card redemption and typed codes, per address
    "join-miss": (10, 600),  # wrong typed codes, per address: slows down guessing
    "confirm": (60, 60),  # 確認しました, per person
    "answer": (30, 60),  # 回答して確認する, per person
}


def client_address(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def rate_limited(*, scope: str, key: str, now: float | None = None) -> bool:
    """Count one hit for ``key`` in ``scope``; True once the window's limit is passed."""
    limit, window = LIMITS[scope]
    bucket = int((now or time.time()) // window)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_key = f"rl:{scope}:{digest}:{bucket}"
    cache.add(cache_key, 0, timeout=window + 5)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=window + 5)
        count = 1
    return count > limit


def too_many(request: HttpRequest) -> HttpResponse:
    response = render(request, "communities/too_many.html", status=429)
    response["Retry-After"] = "60"
    return response
