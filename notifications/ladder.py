"""Planning notifications: who is told what, when, and by which channel.

Planning writes ``Delivery`` rows (unique per household, step and channel), so planning
twice plans nothing new; the scheduler hands due rows to the task worker.

- On publishing: phones get a push (or an email when the household has no push), at once
  for 緊急, else after quiet hours; households that chose a daily summary get it then.
- Reminders (per community, e.g. 2 days before the due date and on the day) go to the
  digital households that have not confirmed. Paper households are skipped: they are the
  班長's and helpers' work.
- For 重要 and 緊急 an escalation ladder with per-community timings: push → email → the
  household goes on its 班長's follow-up list and the 班長 is told → the chair is told
  what is still open. Each step is a row the ledger shows.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from circulars.models import Circular, CircularStatus, Priority, Receipt
from circulars.selectors import circular_receipts, paper_q
from communities.models import Community
from communities.selectors import members_with_working_email
from notifications.models import Channel, Delivery, DeliveryStatus, PushSubscription

REMINDER_HOUR = 9


def _parse_numbers(value: str, *, fallback: list[int]) -> list[int]:
    try:
        numbers = [int(part) for part in value.replace("、", ",").split(",") if part.strip()]
    except ValueError:
        return fallback
    return [n for n in numbers if 0 <= n <= 10_000] or fallback


def ladder_minutes(*, community: Community, priority: str) -> list[int]:
    """Minutes after publishing for email, 班長 and chair (重要 and 緊急 only)."""
    if priority == Priority.URGENT:
        return _parse_numbers(community.ladder_urgent, fallback=[5, 10, 20])[:3]
    return _parse_numbers(community.ladder_important, fallback=[30, 60, 120])[:3]


def reminder_days(*, community: Community) -> list[int]:
    return sorted(set(_parse_numbers(community.reminder_days, fallback=[2, 0])), reverse=True)


def in_quiet_hours(*, community: Community, when: datetime) -> bool:
    local = timezone.localtime(when).time()
    start, end = community.quiet_start, community.quiet_end
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end  # across midnight, e.g. 21:00–7:00


def not_before_quiet_end(*, community: Community, when: datetime, urgent: bool) -> datetime:
    """``when``, or the end of quiet hours if it falls inside them. 緊急 never waits."""
    if urgent or not in_quiet_hours(community=community, when=when):
        return when
    local = timezone.localtime(when)
    end = local.replace(
        hour=community.quiet_end.hour,
        minute=community.quiet_end.minute,
        second=0,
        microsecond=0,
    )
    if end <= local:
        end += timedelta(days=1)
    return end


def _at_local(day: date, hour: int) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(hour, 0)))


def _digital_receipts(circular: Circular) -> QuerySet[Receipt]:
    """Open receipts of households that are not on paper (the paper rule, one place) and
    can be reached: a push subscription or a working email address. The others get
    nothing planned, so they are not read (most of a 2,000-household publish, otherwise)."""
    has_push = PushSubscription.objects.filter(user__memberships__household=OuterRef("household"))
    has_email = members_with_working_email().filter(household=OuterRef("household"))
    return (
        circular_receipts(circular)
        .filter(household__isnull=False, confirmed_at__isnull=True)
        .exclude(paper_q())
        .annotate(has_push=Exists(has_push), has_email=Exists(has_email))
        .filter(Q(has_push=True) | Q(has_email=True))
        .select_related("household")
    )


def _plan_rows(rows: list[Delivery]) -> int:
    """Create the rows not planned yet, in bulk; returns how many are new.

    An existing row for the same (circular, household, step, channel) means: already
    planned. The unique constraints settle a race with another planner (the insert skips
    the conflicting row), so planning stays idempotent without a query per row.
    """
    if not rows:
        return 0
    existing = set(
        Delivery.objects.filter(
            circular_id__in={row.circular_id for row in rows},
            step__in={row.step for row in rows},
        ).values_list("circular_id", "receipt_id", "step", "channel")
    )
    fresh: dict[tuple[int, int | None, str, str], Delivery] = {}
    for row in rows:
        key = (row.circular_id, row.receipt_id, row.step, row.channel)
        if key not in existing:
            fresh.setdefault(key, row)
    Delivery.objects.bulk_create(fresh.values(), ignore_conflicts=True, batch_size=1000)
    return len(fresh)


def deliveries_plan_on_publish(*, circular: Circular, now: datetime | None = None) -> int:
    """Plan the first notification and, for 重要/緊急, the escalation ladder."""
    now = now or timezone.now()
    community = circular.community
    urgent = circular.priority == Priority.URGENT
    laddered = circular.priority in (Priority.IMPORTANT, Priority.URGENT)
    rows: list[Delivery] = []
    first_due = not_before_quiet_end(community=community, when=now, urgent=urgent)
    for receipt in _digital_receipts(circular):
        household = receipt.household
        assert household is not None
        channels = []
        if receipt.has_push:  # type: ignore[attr-defined]
            channels.append(Channel.PUSH)
        if receipt.has_email and (urgent or not receipt.has_push):  # type: ignore[attr-defined]
            channels.append(Channel.EMAIL)  # 緊急 goes to every channel at once
        if not channels:
            continue
        digest = household.notify_mode == "digest" and not urgent
        for channel in channels:
            if digest:
                day = timezone.localtime(first_due).date()
                due = _at_local(day, community.digest_hour)
                if due < now:
                    due = _at_local(day + timedelta(days=1), community.digest_hour)
                rows.append(
                    Delivery(
                        circular=circular,
                        receipt=receipt,
                        step=f"digest:{due.date().isoformat()}",
                        channel=Channel.EMAIL,
                        due_at=due,
                    )
                )
            else:
                rows.append(
                    Delivery(
                        circular=circular,
                        receipt=receipt,
                        step="publish",
                        channel=channel,
                        due_at=first_due,
                    )
                )
        if laddered:
            minutes = ladder_minutes(community=community, priority=circular.priority)
            for index, (channel, after) in enumerate(
                zip([Channel.EMAIL, Channel.LEADER], minutes[:2], strict=False)
            ):
                if channel == Channel.EMAIL and (
                    not receipt.has_email or Channel.EMAIL in channels  # type: ignore[attr-defined]
                ):
                    continue
                due = not_before_quiet_end(
                    community=community, when=now + timedelta(minutes=after), urgent=urgent
                )
                rows.append(
                    Delivery(
                        circular=circular,
                        receipt=receipt,
                        step=f"ladder:{index + 1}",
                        channel=channel,
                        due_at=due,
                    )
                )
    if laddered:
        minutes = ladder_minutes(community=community, priority=circular.priority)
        if len(minutes) >= 3:
            due = not_before_quiet_end(
                community=community, when=now + timedelta(minutes=minutes[2]), urgent=urgent
            )
            rows.append(
                Delivery(
                    circular=circular,
                    receipt=None,
                    step="ladder:3",
                    channel=Channel.CHAIR,
                    due_at=due,
                )
            )
    return _plan_rows(rows)


def deliveries_plan_reminders(*, now: datetime | None = None) -> int:
    """Reminders due today for circulars with a due date. Safe to call every minute."""
    now = now or timezone.now()
    today = timezone.localtime(now).date()
    planned = 0
    circulars = Circular.objects.filter(
        status=CircularStatus.PUBLISHED, due_date__gte=today
    ).select_related("community")
    for circular in circulars:
        assert circular.due_date is not None
        days_left = (circular.due_date - today).days
        if days_left not in reminder_days(community=circular.community):
            continue
        if circular.published_at and timezone.localtime(circular.published_at).date() == today:
            continue  # published today: the first notice is today's reminder
        due = max(_at_local(today, REMINDER_HOUR), circular.published_at or now)
        if due > now:
            continue  # not yet time today
        due = not_before_quiet_end(
            community=circular.community, when=due, urgent=circular.priority == Priority.URGENT
        )
        rows = []
        for receipt in _digital_receipts(circular):
            channel = Channel.PUSH if receipt.has_push else Channel.EMAIL  # type: ignore[attr-defined]
            if channel == Channel.EMAIL and not receipt.has_email:  # type: ignore[attr-defined]
                continue
            rows.append(
                Delivery(
                    circular=circular,
                    receipt=receipt,
                    step=f"reminder:{today.isoformat()}",
                    channel=channel,
                    due_at=due,
                )
            )
        planned += _plan_rows(rows)
    return planned


def deliveries_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Claim due rows for the worker (pending → queued), safely from several schedulers."""
    now = now or timezone.now()
    with transaction.atomic():
        # Rows another scheduler is claiming are skipped, not waited for.
        claimed = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.PENDING, due_at__lte=now)
            .order_by("due_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        Delivery.objects.filter(pk__in=claimed).update(status=DeliveryStatus.QUEUED, claimed_at=now)
    return claimed


STUCK_AFTER = timedelta(minutes=5)


def deliveries_recover(*, now: datetime | None = None) -> int:
    """Rows a killed worker left queued or sending go back to pending.

    Sending again is harmless: pushes carry a Topic, so the push service replaces an
    undelivered duplicate, and mails keep their Message-ID.
    """
    now = now or timezone.now()
    return Delivery.objects.filter(
        status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING],
        claimed_at__lt=now - STUCK_AFTER,
    ).update(status=DeliveryStatus.PENDING)
