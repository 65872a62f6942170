"""Tasks for Django's task framework: run in-process in tests, by db_worker in production."""

from __future__ import annotations

from django.tasks import task
from django.utils import timezone

from notifications.delivery import delivery_send
from notifications.models import WorkerHeartbeat


@task()
def send_delivery(delivery_id: int) -> str:
    return delivery_send(delivery_id=delivery_id)


@task()
def heartbeat() -> None:
    """Enqueued by the scheduler; running it proves a worker is taking tasks."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})
