from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.cache import patch_vary_headers

LONG_SESSION_KEY = "kairan_long_session"
RENEWED_KEY = "kairan_renewed_on"


class VaryOnHtmxMiddleware:
    """Pages answer htmx requests with a fragment: caches must keep the two apart."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        patch_vary_headers(response, ["HX-Request"])
        return response


class ResidentSessionRenewalMiddleware:
    """Keep a resident's phone logged in while it is used: renew the 180 days once a day.

    Renewing on every request would write the session row on every page view.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and session.get(LONG_SESSION_KEY):
            today = timezone.localdate().isoformat()
            if session.get(RENEWED_KEY) != today:
                session.set_expiry(timedelta(days=settings.KAIRAN_RESIDENT_SESSION_DAYS))
                session[RENEWED_KEY] = today
        return self.get_response(request)
