"""When the database cannot be reached, say so plainly instead of showing a crash.

PostgreSQL restarting, the pool timing out or SQLite staying locked all surface as
``OperationalError`` or ``InterfaceError``. A resident who pressed 「確認しました」 at that
moment must learn that nothing was recorded and that trying again shortly will work: a
503 with ``Retry-After``, rendered without touching the database (no session, no user, no
context processors).

Two entry points, because Django turns an exception into a response inside each
middleware layer: ``process_exception`` catches what views raise, and ``server_error``
(``handler500``) catches what middleware raises before the view, such as loading the
session (only when ``DEBUG`` is off, as in production; in development Django's debug page
shows those).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import defaults

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 120


def is_database_outage(error: BaseException | None) -> bool:
    return isinstance(error, OperationalError | InterfaceError)


def unavailable_response(
    request: HttpRequest, *, retry_after: int = RETRY_AFTER_SECONDS, redirect: bool = True
) -> HttpResponse:
    # No request context: context processors would read the session and the user.
    response = HttpResponse(
        render_to_string("503.html", {"retry_minutes": max(1, retry_after // 60)}),
        status=503,
    )
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    if redirect and request.headers.get("HX-Request"):
        # htmx does not swap an error response, so a 「確認しました」 pressed through htmx
        # would seem to do nothing. It does follow HX-Redirect, whatever the status: reload
        # the page the person is on, which explains the outage (or, if the database is
        # back, shows the circular still unconfirmed).
        current = request.headers.get("HX-Current-URL", "")
        same_site = url_has_allowed_host_and_scheme(
            current, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        response["HX-Redirect"] = current if current and same_site else "/"
    return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_outage(exception):
            return None
        logger.warning(
            "database unavailable for %s %s: %s", request.method, request.path, exception
        )
        return unavailable_response(request)


def server_error(request: HttpRequest, template_name: str = "500.html") -> HttpResponse:
    """``handler500``: Django calls it while handling the exception, so it is at hand."""
    if is_database_outage(sys.exc_info()[1]):
        logger.warning("database unavailable for %s %s", request.method, request.path)
        return unavailable_response(request)
    return defaults.server_error(request, template_name=template_name)
