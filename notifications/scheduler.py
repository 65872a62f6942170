"""The scheduler: one tick enqueues whatever time has made due. Safe in several copies:
every step claims its rows with conditional updates or unique constraints."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from circulars.services import circulars_publish_due
from notifications.delivery import deliveries_hand_over
from notifications.ladder import deliveries_due, deliveries_plan_reminders, deliveries_recover
from notifications.models import WorkerHeartbeat

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tick:
    published: int
    reminders: int
    recovered: int
    enqueued: int


def scheduler_tick(*, now: datetime | None = None) -> Tick:
    from notifications.tasks import heartbeat

    now = now or timezone.now()
    published = circulars_publish_due(now=now)
    reminders = deliveries_plan_reminders(now=now)
    recovered = deliveries_recover(now=now)
    due = deliveries_due(now=now)
    deliveries_hand_over(delivery_ids=due)
    WorkerHeartbeat.objects.update_or_create(name="scheduler", defaults={"beat_at": now})
    try:
        heartbeat.enqueue()
    except Exception:
        logger.warning("could not enqueue the worker heartbeat", exc_info=True)
    return Tick(published=published, reminders=reminders, recovered=recovered, enqueued=len(due))
