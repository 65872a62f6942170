"""Sending one planned notification step. Runs in the task worker; idempotent.

A row is claimed with a conditional update (pending/queued → sending), so two workers never
send the same step; a row whose household has confirmed meanwhile is skipped; a failure
is retried with back-off a bounded number of times, and the ledger row shows it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
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


def _push_to_household(delivery: Delivery, kind: str) -> tuple[bool, str]:
    from notifications.push import push_send_to_users

    receipt = delivery.receipt
    assert receipt is not None and receipt.household_id is not None
    user_ids = list(
        Member.objects.filter(household_id=receipt.household_id, user__is_active=True).values_list(
            "user_id", flat=True
        )
    )
    payload: dict[str, object] = {
        # "safety": the phone shows 「安否確認」, and 【訓練】 first for a drill.
        "type": "safety" if delivery.circular.kind == CircularKind.SAFETY else kind,
        "id": delivery.circular_id,
        "url": _circular_url(delivery),
        "urgent": delivery.circular.priority == Priority.URGENT,
    }
    if delivery.circular.drill:
        payload["drill"] = True
    outcome = push_send_to_users(
        user_ids=user_ids,
        payload=payload,
        # The same step for the same household always has the same topic: a retry
        # replaces an undelivered duplicate at the push service.
        topic=f"c{delivery.circular_id}-{delivery.step.replace(':', '-')}"[:32],
        urgency="high" if delivery.circular.priority == Priority.URGENT else "normal",
    )
    if outcome.sent:
        return True, ""
    if not PushSubscription.objects.filter(user_id__in=user_ids).exists():
        _contact_check(receipt.household_id, delivery)
    return False, "; ".join(outcome.errors)[:300] or _("no phone could be reached")


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
    kind = "reminder" if step.startswith("reminder:") else "circular"
    if delivery.channel == Channel.PUSH:
        return _push_to_household(delivery, kind)
    return _email_to_household(delivery, "reminder" if kind == "reminder" else "new")


def delivery_send(*, delivery_id: int, now: datetime | None = None) -> str:
    """Send one step. Returns what happened: sent, skipped, deferred, retry, failed, taken."""
    now = now or timezone.now()
    claimed = Delivery.objects.filter(
        pk=delivery_id, status__in=[DeliveryStatus.PENDING, DeliveryStatus.QUEUED]
    ).update(status=DeliveryStatus.SENDING, claimed_at=now)
    if not claimed:
        return "taken"  # another worker has it, or it is done
    delivery = Delivery.objects.select_related("circular__community", "receipt").get(pk=delivery_id)
    community = delivery.circular.community
    urgent = delivery.circular.priority == Priority.URGENT
    allowed = not_before_quiet_end(community=community, when=now, urgent=urgent)
    if allowed > now:
        Delivery.objects.filter(pk=delivery_id).update(
            status=DeliveryStatus.PENDING, due_at=allowed
        )
        return "deferred"
    confirmed = delivery.receipt is not None and delivery.receipt.confirmed_at is not None
    if confirmed and delivery.step != "dead-contact":
        Delivery.objects.filter(pk=delivery_id).update(status=DeliveryStatus.SKIPPED)
        return "skipped"
    try:
        ok, error = _dispatch(delivery)
    except Exception as exc:  # a channel must never take the worker down
        logger.exception("delivery %s failed", delivery_id)
        ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
    attempts = delivery.attempts + 1
    if ok:
        Delivery.objects.filter(pk=delivery_id).update(
            status=DeliveryStatus.SENT, sent_at=timezone.now(), attempts=attempts, last_error=""
        )
        return "sent"
    if attempts < MAX_ATTEMPTS:
        Delivery.objects.filter(pk=delivery_id).update(
            status=DeliveryStatus.PENDING,
            attempts=attempts,
            last_error=error,
            due_at=now + BACKOFF[attempts - 1],
        )
        return "retry"
    Delivery.objects.filter(pk=delivery_id).update(
        status=DeliveryStatus.FAILED, attempts=attempts, last_error=error
    )
    return "failed"


def deliveries_hand_over(*, delivery_ids: list[int]) -> None:
    """Give claimed (queued) rows to the task worker."""
    from notifications.tasks import send_delivery

    for pk in delivery_ids:
        try:
            send_delivery.enqueue(delivery_id=pk)
        except Exception:
            # Left queued: deliveries_recover() hands it back to the scheduler.
            logger.warning("could not enqueue delivery %s", pk, exc_info=True)


def deliveries_enqueue(*, delivery_ids: list[int]) -> None:
    """Hand rows to the task worker once the transaction that planned them has committed."""
    transaction.on_commit(lambda: deliveries_hand_over(delivery_ids=delivery_ids), robust=True)
