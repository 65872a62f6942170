"""Sending planned notification steps. Runs in the task worker; idempotent.

A row is claimed with a conditional update (pending/queued → sending), so two workers never
send the same step; a row whose household has confirmed meanwhile is skipped; a failure
is retried with back-off a bounded number of times, and the ledger row shows it. Rows are
handed to the worker in batches (one task per ``HAND_OVER_BATCH`` rows); within a batch
each row is still claimed on its own, so overlapping batches send nothing twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from circulars.models import CircularKind, Priority, Receipt
from communities.models import Household, Member, RoleAssignment, RoleKind
from communities.selectors import members_with_working_email
from notifications.ladder import not_before_quiet_end
from notifications.models import Channel, Delivery, DeliveryStatus, PushSubscription

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
BACKOFF = [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15)]


def _circular_url(delivery: Delivery) -> str:
    circular = delivery.circular
    # A safety check opens straight on its one-tap answer page.
    name = "circulars:safety_answer" if circular.kind == CircularKind.SAFETY else "circulars:detail"
    return reverse(name, kwargs={"slug": circular.community.slug, "circular_id": circular.pk})


def _push_payload(delivery: Delivery, kind: str) -> dict[str, object]:
    payload: dict[str, object] = {
        # "safety": the phone shows 「安否確認」, and 【訓練】 first for a drill.
        "type": "safety" if delivery.circular.kind == CircularKind.SAFETY else kind,
        "id": delivery.circular_id,
        "url": _circular_url(delivery),
        "urgent": delivery.circular.priority == Priority.URGENT,
    }
    if delivery.circular.drill:
        payload["drill"] = True
    return payload


def _push_kind(delivery: Delivery) -> str:
    return "reminder" if delivery.step.startswith("reminder:") else "circular"


def _push_to_households(deliveries: list[Delivery]) -> list[tuple[bool, str]]:
    """Push steps for households, sent together: one query for the members, one for the
    subscriptions, the requests in parallel. One (ok, error) per delivery, in order."""
    from notifications.push import PushMessage, push_send_many

    household_ids = set()
    for delivery in deliveries:
        assert delivery.receipt is not None and delivery.receipt.household_id is not None
        household_ids.add(delivery.receipt.household_id)
    users: dict[int, list[int]] = {}
    for household_id, user_id in Member.objects.filter(
        household_id__in=household_ids, user__is_active=True
    ).values_list("household_id", "user_id"):
        users.setdefault(household_id, []).append(user_id)

    def users_of(delivery: Delivery) -> list[int]:
        assert delivery.receipt is not None and delivery.receipt.household_id is not None
        return users.get(delivery.receipt.household_id, [])

    outcomes = push_send_many(
        messages=[
            PushMessage(
                user_ids=users_of(delivery),
                payload=_push_payload(delivery, _push_kind(delivery)),
                # The same step for the same household always has the same topic: a retry
                # replaces an undelivered duplicate at the push service.
                topic=f"c{delivery.circular_id}-{delivery.step.replace(':', '-')}"[:32],
                urgency="high" if delivery.circular.priority == Priority.URGENT else "normal",
            )
            for delivery in deliveries
        ]
    )
    unreached = [d for d, outcome in zip(deliveries, outcomes, strict=True) if not outcome.sent]
    subscribed = set(
        PushSubscription.objects.filter(
            user_id__in={user_id for delivery in unreached for user_id in users_of(delivery)}
        ).values_list("user_id", flat=True)
    )
    results = []
    for delivery, outcome in zip(deliveries, outcomes, strict=True):
        if outcome.sent:
            results.append((True, ""))
            continue
        if not subscribed.intersection(users_of(delivery)):
            assert delivery.receipt is not None and delivery.receipt.household_id is not None
            _contact_check(delivery.receipt.household_id, delivery)
        results.append((False, "; ".join(outcome.errors)[:300] or _("no phone could be reached")))
    return results


def _contact_check(household_id: int, delivery: Delivery) -> None:
    """Its last push subscription gone and no working email: paper, and the 班長 is told."""
    working_email = members_with_working_email().filter(household_id=household_id).exists()
    if working_email:
        return
    updated = Household.objects.filter(pk=household_id, dead_contact_since__isnull=True).update(
        dead_contact_since=timezone.now()
    )
    if updated and delivery.receipt is not None:
        Delivery.objects.get_or_create(
            circular=delivery.circular,
            receipt=delivery.receipt,
            step="dead-contact",
            channel=Channel.LEADER,
            defaults={"due_at": timezone.now()},
        )


def _email_to_household(delivery: Delivery, kind: str) -> tuple[bool, str]:
    from notifications.email import email_send_circular

    receipt = delivery.receipt
    assert receipt is not None
    outcome = email_send_circular(receipt=receipt, kind=kind, occasion=delivery.step)
    if outcome.sent:
        return True, ""
    household_id = receipt.household_id or 0
    has_push = PushSubscription.objects.filter(
        user__memberships__household_id=household_id
    ).exists()
    if (outcome.no_address or outcome.failed) and not has_push:
        _contact_check(household_id, delivery)
    return False, "; ".join(outcome.errors)[:300] or _("no email address")


def _digest(delivery: Delivery) -> tuple[bool, str]:
    """One summary mail for every circular waiting for this household today."""
    from notifications.email import email_send_digest

    receipt = delivery.receipt
    assert receipt is not None and receipt.household_id is not None
    siblings = Delivery.objects.filter(
        receipt__household_id=receipt.household_id,
        step=delivery.step,
        status__in=[DeliveryStatus.PENDING, DeliveryStatus.QUEUED],
    ).exclude(pk=delivery.pk)
    receipts = [receipt] + [
        d.receipt for d in siblings.select_related("receipt__circular") if d.receipt
    ]
    open_receipts = [r for r in receipts if r.confirmed_at is None]
    if not open_receipts:
        return True, ""
    outcome = email_send_digest(household_id=receipt.household_id, receipts=open_receipts)
    if outcome.sent:
        siblings.update(status=DeliveryStatus.SENT, sent_at=timezone.now())
        return True, ""
    return False, "; ".join(outcome.errors)[:300] or _("no email address")


def _staff_users(delivery: Delivery, role: str) -> list[int]:
    roles = RoleAssignment.objects.filter(
        community_id=delivery.circular.community_id, role=role, ended_at__isnull=True
    )
    if role == RoleKind.BLOCK_LEADER and delivery.receipt is not None:
        roles = roles.filter(block_id=delivery.receipt.block_id)
    return sorted(set(roles.values_list("user_id", flat=True)))


def _tell_staff(delivery: Delivery, role: str, subject: str, body: str) -> tuple[bool, str]:
    from notifications.email import email_send_to_user
    from notifications.push import push_send_to_users

    user_ids = _staff_users(delivery, role)
    if not user_ids:
        return False, _("nobody holds this role")
    pushed = push_send_to_users(
        user_ids=user_ids,
        payload={
            "type": "followup",
            "id": delivery.circular_id,
            "url": reverse("circulars:followup", kwargs={"slug": delivery.circular.community.slug}),
        },
        topic=f"f{delivery.circular_id}-{delivery.pk}"[:32],
    )
    mailed = 0
    for user_id in user_ids:
        mailed += email_send_to_user(user_id=user_id, subject=subject, body=body).sent
    return bool(pushed.sent or mailed), ""


def _leader_step(delivery: Delivery) -> tuple[bool, str]:
    """The household goes on the 班長's follow-up list; the 班長 is told once per block."""
    receipt = delivery.receipt
    assert receipt is not None
    note, created = Delivery.objects.get_or_create(
        circular=delivery.circular,
        receipt=None,
        step=f"leader-note:{receipt.block_id}",
        channel=Channel.LEADER,
        defaults={"due_at": timezone.now(), "status": DeliveryStatus.SENDING},
    )
    if created:
        with translation.override("ja"):
            subject = _("Households to follow up: %(title)s") % {"title": delivery.circular.title}
            body = _(
                "Some households in your block have not confirmed the circular yet. "
                "Please open the follow-up list in Kairan."
            )
        ok, error = _tell_staff(delivery, RoleKind.BLOCK_LEADER, subject, body)
        note.status = DeliveryStatus.SENT if ok else DeliveryStatus.FAILED
        note.last_error = error
        note.sent_at = timezone.now()
        note.save(update_fields=["status", "last_error", "sent_at"])
    return True, ""


def _chair_step(delivery: Delivery) -> tuple[bool, str]:
    open_count = Receipt.objects.filter(
        circular=delivery.circular, confirmed_at__isnull=True
    ).count()
    if not open_count:
        return True, ""
    with translation.override("ja"):
        subject = _("Still open: %(title)s") % {"title": delivery.circular.title}
        body = _("%(count)s households have not confirmed yet. See the delivery status.") % {
            "count": open_count
        }
    return _tell_staff(delivery, RoleKind.CHAIR, subject, body)


def _dispatch(delivery: Delivery) -> tuple[bool, str]:
    step = delivery.step
    if step.startswith("digest:"):
        return _digest(delivery)
    if delivery.channel == Channel.CHAIR:
        return _chair_step(delivery)
    if delivery.channel == Channel.LEADER:
        if step == "dead-contact":
            with translation.override("ja"):
                subject = _("A household can no longer be reached by phone")
                body = _("It will receive paper copies. Please check with the household.")
            return _tell_staff(delivery, RoleKind.BLOCK_LEADER, subject, body)
        return _leader_step(delivery)
    if delivery.channel == Channel.PUSH:
        return _push_to_households([delivery])[0]
    return _email_to_household(
        delivery, "reminder" if _push_kind(delivery) == "reminder" else "new"
    )


def _hold(delivery: Delivery, now: datetime) -> str:
    """'deferred' (quiet hours) or 'skipped' (already confirmed) for a claimed row that
    must not go out now, written back; '' when it should be sent."""
    urgent = delivery.circular.priority == Priority.URGENT
    allowed = not_before_quiet_end(community=delivery.circular.community, when=now, urgent=urgent)
    if allowed > now:
        Delivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.PENDING, due_at=allowed
        )
        return "deferred"
    confirmed = delivery.receipt is not None and delivery.receipt.confirmed_at is not None
    if confirmed and delivery.step != "dead-contact":
        Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SKIPPED)
        return "skipped"
    return ""


def _finish(delivery: Delivery, *, ok: bool, error: str, now: datetime) -> str:
    attempts = delivery.attempts + 1
    if ok:
        Delivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.SENT, sent_at=timezone.now(), attempts=attempts, last_error=""
        )
        return "sent"
    if attempts < MAX_ATTEMPTS:
        Delivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.PENDING,
            attempts=attempts,
            last_error=error,
            due_at=now + BACKOFF[attempts - 1],
        )
        return "retry"
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.FAILED, attempts=attempts, last_error=error
    )
    return "failed"


def delivery_send(*, delivery_id: int, now: datetime | None = None) -> str:
    """Send one step. Returns what happened: sent, skipped, deferred, retry, failed, taken."""
    now = now or timezone.now()
    claimed = Delivery.objects.filter(
        pk=delivery_id, status__in=[DeliveryStatus.PENDING, DeliveryStatus.QUEUED]
    ).update(status=DeliveryStatus.SENDING, claimed_at=now)
    if not claimed:
        return "taken"  # another worker has it, or it is done
    delivery = Delivery.objects.select_related("circular__community", "receipt").get(pk=delivery_id)
    held = _hold(delivery, now)
    if held:
        return held
    try:
        ok, error = _dispatch(delivery)
    except Exception as exc:  # a channel must never take the worker down
        logger.exception("delivery %s failed", delivery_id)
        ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
    return _finish(delivery, ok=ok, error=error, now=now)


def _claim(delivery_ids: list[int], now: datetime) -> list[int]:
    """Claim each of these rows that is still waiting (pending/queued → sending).

    Rows another worker is claiming right now are skipped, not waited for; rows it has
    claimed are no longer waiting. Either way a row is claimed by one worker only.
    """
    with transaction.atomic():
        claimable = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(pk__in=delivery_ids, status__in=[DeliveryStatus.PENDING, DeliveryStatus.QUEUED])
            .values_list("pk", flat=True)
        )
        if claimable:
            Delivery.objects.filter(pk__in=claimable).update(
                status=DeliveryStatus.SENDING, claimed_at=now
            )
    return claimable


def _send_pushes(delivery_ids: list[int], now: datetime) -> dict[int, str]:
    outcomes = dict.fromkeys(delivery_ids, "taken")
    claimed = _claim(delivery_ids, now)
    if not claimed:
        return outcomes
    ready = []
    for delivery in (
        Delivery.objects.select_related("circular__community", "receipt")
        .filter(pk__in=claimed)
        .order_by("pk")
    ):
        held = _hold(delivery, now)
        if held:
            outcomes[delivery.pk] = held
        else:
            ready.append(delivery)
    if not ready:
        return outcomes
    try:
        results = _push_to_households(ready)
    except Exception as exc:  # a channel must never take the worker down
        logger.exception("push deliveries %s failed", [d.pk for d in ready])
        results = [(False, f"{type(exc).__name__}: {exc}"[:300])] * len(ready)
    sent = [delivery.pk for delivery, (ok, _error) in zip(ready, results, strict=True) if ok]
    if sent:
        Delivery.objects.filter(pk__in=sent).update(
            status=DeliveryStatus.SENT,
            sent_at=timezone.now(),
            attempts=F("attempts") + 1,
            last_error="",
        )
    for delivery, (ok, error) in zip(ready, results, strict=True):
        outcomes[delivery.pk] = "sent" if ok else _finish(delivery, ok=False, error=error, now=now)
    return outcomes


def deliveries_send(*, delivery_ids: list[int], now: datetime | None = None) -> dict[int, str]:
    """Send a batch of steps; returns what happened to each id (as ``delivery_send``).

    Push steps, the bulk of a city-wide 緊急, are claimed row by row in one statement and
    sent together. Every other step (mail, digest, 班長, chair) goes through
    ``delivery_send`` one at a time, exactly as a single task would.
    """
    now = now or timezone.now()
    push_ids = set(
        Delivery.objects.filter(pk__in=delivery_ids, channel=Channel.PUSH).values_list(
            "pk", flat=True
        )
    )
    outcomes = _send_pushes(sorted(push_ids), now) if push_ids else {}
    for pk in delivery_ids:
        if pk not in push_ids:
            outcomes[pk] = delivery_send(delivery_id=pk, now=now)
    return {pk: outcomes[pk] for pk in delivery_ids}


# Rows per task: enough to amortise the task and its queries, few enough that several
# workers share one association's rows.
HAND_OVER_BATCH = 50


def deliveries_hand_over(*, delivery_ids: list[int]) -> None:
    """Give claimed (queued) rows to the task worker, ``HAND_OVER_BATCH`` per task."""
    from notifications.tasks import send_deliveries

    for start in range(0, len(delivery_ids), HAND_OVER_BATCH):
        batch = list(delivery_ids[start : start + HAND_OVER_BATCH])
        try:
            send_deliveries.enqueue(delivery_ids=batch)
        except Exception:
            # Left queued: deliveries_recover() hands them back to the scheduler.
            logger.warning("could not enqueue deliveries %s", batch, exc_info=True)


def deliveries_enqueue(*, delivery_ids: list[int]) -> None:
    """Hand rows to the task worker once the transaction that planned them has committed."""
    transaction.on_commit(lambda: deliveries_hand_over(delivery_ids=delivery_ids), robust=True)
