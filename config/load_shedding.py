"""Under overload, answer late requests at once with a 503 instead of serving them late.

When taps arrive faster than the servers can record them, requests wait in nginx's and
gunicorn's queues. Served in turn, each one would cost the full price after the person
has given up, and the backlog would keep the servers behind long after the burst (the
ledger took a minute to catch up after 30 s at twice the knee). Instead, a request that
waited in the queue longer than ``KAIRAN_QUEUE_TIMEOUT_SECONDS`` is turned away before
any work is done (no session, no database): a 503 with ``Retry-After`` that says plainly
that nothing was saved. The backlog drains in seconds and fresh taps are served on time.

The wait is measured from ``X-Request-Start: t=<seconds since the epoch>`` (nginx:
``proxy_set_header X-Request-Start "t=${msec}";``). Without that header, or with the
setting at 0 (the embedded default), nothing is ever turned away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from config.database_outage import unavailable_response

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 60
EXEMPT_PATHS = ("/healthz",)


def queued_seconds(request: HttpRequest, now: float | None = None) -> float | None:
    """How long the request waited before reaching Django, if the proxy said when it came."""
    stamp = request.headers.get("X-Request-Start", "")
    try:
        started = float(stamp.removeprefix("t="))
    except ValueError:
        return None
    return (now or time.time()) - started


class LoadSheddingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.shed = 0

    def __call__(self, request: HttpRequest) -> HttpResponse:
        timeout = settings.KAIRAN_QUEUE_TIMEOUT_SECONDS
        if timeout > 0 and not request.path.startswith(EXEMPT_PATHS):
            waited = queued_seconds(request)
            if waited is not None and waited > timeout:
                return self.turn_away(request, waited)
        return self.get_response(request)

    def turn_away(self, request: HttpRequest, waited: float) -> HttpResponse:
        self.shed += 1
        if self.shed == 1 or self.shed % 100 == 0:
            logger.warning(
                "overloaded: turned away %s %s after %.1f s in the queue (%d so far)",
                request.method,
                request.path,
                waited,
                self.shed,
            )
        # htmx shows its alert line for a 503 (kairan.js); reloading the page, as for a
        # database outage, would only add load while the servers are behind.
        response = unavailable_response(request, retry_after=RETRY_AFTER_SECONDS, redirect=False)
        # Counted above: django.request would log every one as an error, thousands a
        # minute while the servers are behind, and writing them costs what shedding saves.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
