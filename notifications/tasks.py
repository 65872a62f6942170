"""Tasks for Django's task framework: run in-process in tests, by db_worker in production."""

from __future__ import annotations

from collections import Counter

from django.tasks import task
from django.utils import timezone

from notifications.delivery import deliveries_send, delivery_send
from notifications.models import WorkerHeartbeat


@task()
def send_deliveries(delivery_ids: list[int]) -> dict[str, int]:
    """What happened to the batch, counted: {"sent": 48, "taken": 2}."""
    return dict(Counter(deliveries_send(delivery_ids=delivery_ids).values()))


@task()
def send_delivery(delivery_id: int) -> str:
    """One row per task, as before batches: tasks already queued in a database still run."""
    return delivery_send(delivery_id=delivery_id)


@task()
def heartbeat() -> None:
    """Enqueued by the scheduler; running it proves a worker is taking tasks."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"beat_at": timezone.now()})
