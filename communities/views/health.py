"""GET /healthz: what a load balancer and an operator need to know, as JSON."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from communities.pdf import print_font_status

logger = logging.getLogger(__name__)


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        logger.warning("healthz: database check failed", exc_info=True)
        return "down"
    return "ok"


def _channel_layer() -> str:
    if not settings.REDIS_URL:
        return "ok"  # the in-memory layer lives in this process
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
        client.ping()
        client.close()
    except Exception:
        logger.warning("healthz: channel layer check failed", exc_info=True)
        return "down"
    return "ok"


def _heartbeats() -> dict[str, float | None]:
    """Seconds since the task worker and the scheduler last beat (None: never seen)."""
    from notifications.models import WorkerHeartbeat

    ages: dict[str, float | None] = {"worker": None, "scheduler": None}
    try:
        for name, beat_at in WorkerHeartbeat.objects.values_list("name", "beat_at"):
            if name in ages:
                ages[name] = round((timezone.now() - beat_at).total_seconds(), 1)
    except Exception:
        logger.warning("healthz: heartbeat check failed", exc_info=True)
    return ages


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the database answers (the database is the truth); 503 when it does not."""
    body: dict[str, object] = {
        "database": _database(),
        "channel_layer": _channel_layer(),
        "print_font": print_font_status(),
        "tasks_backend": str(settings.TASKS["default"]["BACKEND"]).rsplit(".", 1)[-1],
    }
    if body["database"] == "ok":
        beats = _heartbeats()
        body["worker_heartbeat_age_s"] = beats["worker"]
        body["scheduler_heartbeat_age_s"] = beats["scheduler"]
    return JsonResponse(body, status=200 if body["database"] == "ok" else 503)
