"""The benchmark's WSGI entry: Kairan's own ``config.wsgi`` plus one trivial page.

gunicorn runs ``bench.wsgi:application`` with exactly the production settings, so the
trivial page (the "ceiling" the confirm and page figures are compared with) is served by
the same processes, middleware and database pool as the real pages:

- ``GET /bench/trivial/`` answers ``ok`` through Django's full middleware stack (sessions,
  CSRF, CSP, locale…) without touching the database. Nothing else is added.
- ``KAIRAN_BENCH_CONFIRM_LIMIT`` (hits per 60 s and person) raises the confirm rate limit
  of ``communities.ratelimit`` for the benchmark only: a load test confirms far more often
  per person than any phone. The harness reports the value it used.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.http import HttpRequest, HttpResponse
from django.urls import get_resolver, path

from communities import ratelimit
from config.wsgi import application as _django

_limit = os.environ.get("KAIRAN_BENCH_CONFIRM_LIMIT", "")
if _limit:
    ratelimit.LIMITS["confirm"] = (int(_limit), 60)


def trivial(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


# Appended to the project's own URL patterns at start-up, in this process only.
get_resolver().url_patterns.append(path("bench/trivial/", trivial))

application = _django
