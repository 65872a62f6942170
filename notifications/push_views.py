"""Web push pages: the settings page, subscribe/unsubscribe, the service worker, the manifest.

The service worker is served from the site root: a worker's scope cannot reach above the
path it was loaded from, and it must control every page to open circulars from a tap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST, require_safe

from communities.decorators import request_user
from notifications import push

# A subscription is a few hundred bytes; refuse anything far larger before parsing it.
MAX_BODY_BYTES = 4096


def _login_required_json(
    view: Callable[[HttpRequest], HttpResponse],
) -> Callable[..., HttpResponse]:
    """For fetch() callers: a JSON 403, not a redirect to an HTML login page."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": "login required"}, status=403)
        return view(request)

    return wrapper


def _json_body(request: HttpRequest) -> object:
    if len(request.body) > MAX_BODY_BYTES:
        raise ValueError("body too large")
    return json.loads(request.body)


@login_required
@require_safe
def settings_page(request: HttpRequest) -> HttpResponse:
    user = request_user(request)
    return render(
        request,
        "notifications/push_settings.html",
        {
            "vapid_public_key": push.vapid_public_key(),
            "device_count": push.push_subscription_count(user=user),
        },
    )


@require_POST
@_login_required_json
def subscribe(request: HttpRequest) -> HttpResponse:
    try:
        data = push.push_subscription_parse(data=_json_body(request))
    except push.PushSubscriptionInvalid as error:
        return JsonResponse({"error": error.message, "field": error.field}, status=400)
    except ValueError:
        return JsonResponse({"error": "expected a JSON body", "field": "body"}, status=400)
    _, created = push.push_subscription_save(user=request_user(request), data=data)
    return JsonResponse({"subscribed": True, "created": created}, status=201 if created else 200)


@require_POST
@_login_required_json
def unsubscribe(request: HttpRequest) -> HttpResponse:
    try:
        body = _json_body(request)
    except ValueError:
        return JsonResponse({"error": "expected a JSON body", "field": "body"}, status=400)
    endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        return JsonResponse({"error": "required", "field": "endpoint"}, status=400)
    removed = push.push_subscription_delete(user=request_user(request), endpoint=endpoint)
    return JsonResponse({"removed": removed})


@require_safe
def service_worker(request: HttpRequest) -> HttpResponse:
    path = finders.find("js/sw.js")
    if not isinstance(path, str):
        raise Http404
    with open(path, "rb") as handle:
        response = HttpResponse(handle.read(), content_type="application/javascript; charset=utf-8")
    response["Service-Worker-Allowed"] = "/"
    # Browsers check for a new worker on navigation; a cached copy would pin an old one.
    response["Cache-Control"] = "no-cache"
    return response


@require_safe
def manifest(request: HttpRequest) -> HttpResponse:
    """The web app manifest: on iPhone, push works only for an app added to the home screen,
    and only one with a standalone manifest counts as an app."""
    name = _("Kairan")
    return JsonResponse(
        {
            "name": name,
            "short_name": name,
            "lang": get_language() or "ja",
            "start_url": "/",
            "scope": "/",
            "display": "standalone",
            "background_color": "#fffdf7",
            "theme_color": "#0b4f8a",
        },
        content_type="application/manifest+json",
        json_dumps_params={"ensure_ascii": False},
    )
