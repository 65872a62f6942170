"""Writes for circulars and receipts. Each state change emits its events after commit."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from circulars import events
from circulars.models import (
    Circular,
    CircularStatus,
    Priority,
    Receipt,
    ReceiptMethod,
)
from circulars.search import search_normalise
from communities.models import Block, Community, Household, Member, PaperDistribution


@dataclass(frozen=True)
class CircularData:
    title: str
    body: str = ""
    priority: str = Priority.NORMAL
    all_blocks: bool = True
    blocks: list[Block] = field(default_factory=list)
    due_date: date | None = None
    paper_distribution: str = ""


def _validate(*, community: Community, data: CircularData, current_due: date | None = None) -> None:
    errors: dict[str, str] = {}
    if data.due_date and data.due_date != current_due and data.due_date < timezone.localdate():
        errors["due_date"] = _("The due date is already past. Choose today or a later day.")
    if not data.title.strip():
        errors["title"] = _("Enter a title.")
    if data.priority not in Priority.values:
        errors["priority"] = _("Choose a priority.")
    if not data.all_blocks and not data.blocks:
        errors["blocks"] = _("Choose at least one block, or send it to all blocks.")
    if data.paper_distribution not in ("", *PaperDistribution.values):
        errors["paper_distribution"] = _("Choose how paper copies go round.")
    if any(block.community_id != community.pk for block in data.blocks):
        errors["blocks"] = _("Choose one of this association's blocks.")
    if errors:
        raise ValidationError(errors)


def _apply(circular: Circular, data: CircularData) -> None:
    circular.title = data.title.strip()
    circular.body = data.body.replace("\r\n", "\n").strip()
    circular.priority = data.priority
    circular.all_blocks = data.all_blocks
    circular.due_date = data.due_date
    circular.search_text = search_normalise(circular.title + "\n" + circular.body)
    circular.paper_distribution = data.paper_distribution


@transaction.atomic
def circular_create(*, community: Community, author: User, data: CircularData) -> Circular:
    """A new draft."""
    _validate(community=community, data=data)
    circular = Circular(community=community, author=author)
    _apply(circular, data)
    circular.save()
    circular.blocks.set([] if data.all_blocks else data.blocks)
    return circular


@transaction.atomic
def circular_update(*, circular: Circular, data: CircularData) -> Circular:
    """Edit a circular. After publishing the edit is visible (訂正) and receipts are kept;
    blocks added to the audience get their receipts, blocks removed keep theirs."""
    _validate(community=circular.community, data=data, current_due=circular.due_date)
    circular = Circular.objects.select_for_update().get(pk=circular.pk)
    _apply(circular, data)
    if circular.status == CircularStatus.PUBLISHED:
        circular.corrected_at = timezone.now()
        circular.revision += 1
    circular.save()
    circular.blocks.set([] if data.all_blocks else data.blocks)
    if circular.status == CircularStatus.PUBLISHED:
        new_households = _create_receipts(circular)
        events.circular_changed(circular=circular, household_ids=_audience_ids(circular))
        if new_households:
            events.ledger_reset(circular=circular)
    return circular


@transaction.atomic
def circular_mark_corrected(*, circular: Circular) -> Circular:
    """A published circular's files changed: show 「訂正」 and tell the open inboxes."""
    circular = Circular.objects.select_for_update().get(pk=circular.pk)
    if circular.status == CircularStatus.PUBLISHED:
        circular.corrected_at = timezone.now()
        circular.revision += 1
        circular.save(update_fields=["corrected_at", "revision", "updated_at"])
        events.circular_changed(circular=circular, household_ids=_audience_ids(circular))
    return circular


@transaction.atomic
def circular_copy(
    *, circular: Circular, author: User, allowed_block_ids: frozenset[int] | None = None
) -> Circular:
    """A new draft with the same text and audience (attachments are not copied).

    ``allowed_block_ids``: a 班長's own blocks; the copy's audience is narrowed to them.
    """
    blocks = list(circular.blocks.all())
    all_blocks = circular.all_blocks
    if allowed_block_ids is not None:
        blocks = [b for b in blocks if b.pk in allowed_block_ids] if not all_blocks else []
        if not blocks:
            blocks = list(Block.objects.filter(pk__in=allowed_block_ids))
        all_blocks = False
    copy = Circular.objects.create(
        community=circular.community,
        author=author,
        title=circular.title,
        body=circular.body,
        search_text=circular.search_text,
        priority=circular.priority,
        all_blocks=all_blocks,
        paper_distribution=circular.paper_distribution,
        furigana_overrides=circular.furigana_overrides,
    )
    copy.blocks.set(blocks)
    return copy


@transaction.atomic
def circular_delete_draft(*, circular: Circular) -> None:
    from circulars.attachments import attachment_remove

    if circular.status == CircularStatus.PUBLISHED:
        raise ValidationError(_("A published circular cannot be deleted."))
    for attachment in circular.attachments.all():
        attachment_remove(attachment=attachment)  # files go after commit
    circular.delete()


def _create_receipts(circular: Circular) -> int:
    """One receipt per targeted household; existing receipts are left as they are.

    One INSERT … SELECT in the database: building 2,000 model instances for
    ``bulk_create`` took most of a publish's time (≈ 0.4 s of CPU for one association).
    The unique (circular, household) constraint settles a race with another publisher.
    """
    receipts, households = Receipt._meta.db_table, Household._meta.db_table
    chosen = Circular.blocks.through._meta.db_table
    # Table names come from the models; every value is a parameter.
    sql = f"""
        INSERT INTO {receipts} (circular_id, household_id, block_id, method, version)
        SELECT %s, h.id, h.block_id, '', 0 FROM {households} h
        WHERE h.community_id = %s AND (
            %s OR h.block_id IN (SELECT block_id FROM {chosen} WHERE circular_id = %s)
        )
        ON CONFLICT DO NOTHING
    """  # noqa: S608
    params = [circular.pk, circular.community_id, circular.all_blocks, circular.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return max(0, cursor.rowcount)


def _audience_ids(circular: Circular) -> list[int]:
    return list(
        Receipt.objects.filter(circular=circular, household__isnull=False).values_list(
            "household_id", flat=True
        )
    )


def _publish_now(circular: Circular, now: datetime) -> Circular:
    circular.status = CircularStatus.PUBLISHED
    circular.published_at = now
    circular.publish_at = circular.publish_at or now
    circular.save(update_fields=["status", "published_at", "publish_at", "updated_at"])
    _create_receipts(circular)
    # After commit, in this order: pushes and mails go to the worker first, then open
    # inboxes hear of it (one message per household; they re-sync anyway).
    _notifications_plan(circular, now)
    events.circular_published(circular=circular, household_ids=_audience_ids(circular))
    return circular


def _notifications_plan(circular: Circular, now: datetime) -> None:
    """Plan pushes, mails and the ladder; what is due now goes to the worker after commit."""
    from notifications.delivery import deliveries_enqueue
    from notifications.ladder import deliveries_plan_on_publish
    from notifications.models import Delivery, DeliveryStatus

    deliveries_plan_on_publish(circular=circular, now=now)
    due = Delivery.objects.filter(circular=circular, status=DeliveryStatus.PENDING, due_at__lte=now)
    ids = list(due.values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids).update(status=DeliveryStatus.QUEUED, claimed_at=now)
    deliveries_enqueue(delivery_ids=ids)


@transaction.atomic
def circular_publish(
    *,
    circular: Circular,
    publish_at: datetime | None = None,
    now: datetime | None = None,
    allowed_block_ids: frozenset[int] | None = None,
) -> Circular:
    """Publish now, or schedule for ``publish_at``. Publishing twice changes nothing.

    ``allowed_block_ids``: the blocks a 班長 may write for; the audience must lie inside.
    """
    now = now or timezone.now()
    circular = Circular.objects.select_for_update().get(pk=circular.pk)
    if circular.status == CircularStatus.PUBLISHED:
        return circular
    if not circular.title.strip():
        raise ValidationError(_("Enter a title."))
    if allowed_block_ids is not None and (
        circular.all_blocks
        or not circular.blocks.exists()
        or circular.blocks.exclude(pk__in=allowed_block_ids).exists()
    ):
        raise ValidationError(_("Choose among your own blocks."))
    if publish_at is not None and publish_at > now:
        circular.status = CircularStatus.SCHEDULED
        circular.publish_at = publish_at
        circular.save(update_fields=["status", "publish_at", "updated_at"])
        return circular
    return _publish_now(circular, now)


def circulars_publish_due(*, now: datetime | None = None) -> int:
    """Publish every scheduled circular whose time has come. Safe to run in several copies:
    each circular is locked and re-checked inside its own transaction."""
    now = now or timezone.now()
    count = 0
    due = Circular.objects.filter(status=CircularStatus.SCHEDULED, publish_at__lte=now)
    for circular_id in list(due.values_list("pk", flat=True)):
        with transaction.atomic():
            circular = (
                Circular.objects.select_for_update()
                .filter(pk=circular_id, status=CircularStatus.SCHEDULED, publish_at__lte=now)
                .first()
            )
            if circular is not None:
                _publish_now(circular, now)
                count += 1
    return count


@transaction.atomic
def circular_unschedule(*, circular: Circular) -> Circular:
    if circular.status == CircularStatus.SCHEDULED:
        circular.status = CircularStatus.DRAFT
        circular.save(update_fields=["status", "updated_at"])
    return circular


# --- Receipts ---------------------------------------------------------------------------


def _receipt_for(circular: Circular, household: Household, *, lock: bool = False) -> Receipt:
    """The household's receipt, created if the household joined after publishing.

    ``lock``: read it ``FOR UPDATE`` (one query, where the row exists, as it nearly always
    does), so the caller decides this household's changes in order."""
    receipts = Receipt.objects.filter(circular=circular, household=household)
    receipt = (receipts.select_for_update() if lock else receipts).first()
    if receipt is not None:
        return receipt
    if not (circular.all_blocks or circular.blocks.filter(pk=household.block_id).exists()):
        raise ValidationError(_("This circular was not sent to this household."))
    try:
        with transaction.atomic():
            return Receipt.objects.create(
                circular=circular, household=household, block_id=household.block_id
            )
    except IntegrityError:  # created meanwhile by a second request: theirs, not yet locked
        return (receipts.select_for_update() if lock else receipts).get()


@transaction.atomic
def receipt_open(
    *, circular: Circular, household: Household, now: datetime | None = None
) -> Receipt:
    """Record that the household opened the circular (first time only). Not a confirmation."""
    receipt = _receipt_for(circular, household)
    if receipt.opened_at is None and receipt.confirmed_at is None:
        now = now or timezone.now()
        updated = Receipt.objects.filter(pk=receipt.pk, opened_at__isnull=True).update(
            opened_at=now, version=F("version") + 1
        )
        if updated:
            receipt.refresh_from_db()
            events.receipt_changed(receipt=receipt)
    return receipt


@dataclass(frozen=True)
class ConfirmResult:
    receipt: Receipt
    recorded: bool  # False: it was already confirmed before this request
    replay: bool = False  # True: the same client retried the same confirmation


@transaction.atomic
def receipt_confirm(
    *,
    circular: Circular,
    household: Household,
    method: str,
    member: Member | None = None,
    recorded_by: User | None = None,
    key: uuid.UUID | None = None,
    now: datetime | None = None,
    receipt: Receipt | None = None,
) -> ConfirmResult:
    """The digital 確認印. Idempotent: one receipt per household, the first confirmation wins.

    A conditional UPDATE (``confirmed_at IS NULL``) decides the race between two phones of
    one household or a phone and a 班長, on SQLite and PostgreSQL alike. It also names the
    version it read, so when it succeeds the row is known without reading it again (its
    version is the one the live ledger orders events by); when the row changed meanwhile
    it is read afresh and tried again. ``receipt``: the row the caller already read (the
    resident's page), to save looking it up again.
    """
    if method not in ReceiptMethod.values:
        raise ValidationError(_("Unknown way of confirming."))
    if circular.status != CircularStatus.PUBLISHED:
        raise ValidationError(_("This circular has not been published."))
    if receipt is None or receipt.household_id != household.pk:
        receipt = _receipt_for(circular, household)
    return receipt_confirm_row(
        receipt=receipt,
        method=method,
        member=member,
        recorded_by=recorded_by,
        key=key,
        now=now or timezone.now(),
    )


def receipt_confirm_row(
    *,
    receipt: Receipt,
    method: str,
    member: Member | None,
    recorded_by: User | None,
    key: uuid.UUID | None = None,
    now: datetime,
) -> ConfirmResult:
    """``receipt_confirm`` for a caller already inside its transaction with the receipt of
    a published circular in hand and the method checked (a 安否確認 answer, which holds
    the row's lock): no second read of the row, no savepoint of its own."""
    while receipt.confirmed_at is None:
        updated = Receipt.objects.filter(
            pk=receipt.pk, confirmed_at__isnull=True, version=receipt.version
        ).update(
            confirmed_at=now,
            opened_at=Coalesce("opened_at", Value(now)),
            method=method,
            confirmed_by=member,
            recorded_by=recorded_by,
            confirm_key=key,
            version=F("version") + 1,
        )
        if updated:
            receipt.confirmed_at, receipt.opened_at = now, receipt.opened_at or now
            receipt.method, receipt.confirmed_by, receipt.recorded_by = method, member, recorded_by
            receipt.confirm_key, receipt.version = key, receipt.version + 1
            events.receipt_changed(receipt=receipt)
            return ConfirmResult(receipt=receipt, recorded=True)
        receipt.refresh_from_db()  # opened, or confirmed, by someone else meanwhile
    return ConfirmResult(
        receipt=receipt, recorded=False, replay=key is not None and receipt.confirm_key == key
    )


FURIGANA_READING = re.compile(r"[\u3041-\u309f\u30a0-\u30ffー]*")


@transaction.atomic
def circular_furigana_set(*, circular: Circular, readings: dict[str, str]) -> Circular:
    """Save an officer's corrected readings (word → kana; empty means no furigana)."""
    cleaned: dict[str, str] = {}
    for word, reading in list(readings.items())[:300]:
        word, reading = word.strip()[:30], reading.strip().replace(" ", "")[:60]
        if not word:
            continue
        if not FURIGANA_READING.fullmatch(reading):
            raise ValidationError(_("Write the reading of %(word)s in kana.") % {"word": word})
        cleaned[word] = reading
    circular = Circular.objects.select_for_update().get(pk=circular.pk)
    circular.furigana_overrides = cleaned
    circular.save(update_fields=["furigana_overrides", "updated_at"])
    return circular


CURRENT_WITHOUT_DUE_DATE_DAYS = 30


def _current_circulars(community_id: int) -> QuerySet[Circular]:
    """Published circulars still going round: due today or later, or recent if undated."""
    today = timezone.localdate()
    recent = timezone.now() - timedelta(days=CURRENT_WITHOUT_DUE_DATE_DAYS)
    return Circular.objects.filter(
        community_id=community_id, status=CircularStatus.PUBLISHED
    ).filter(Q(due_date__gte=today) | Q(due_date__isnull=True, published_at__gte=recent))


@transaction.atomic
def receipts_sync_for_household(*, household: Household) -> int:
    """A household that was added or moved after publishing joins the circulars still
    going round in its block; its open receipts follow it to its new block (and 班長).
    Returns how many receipts were created or moved."""
    changed = 0
    for circular in _current_circulars(household.community_id).prefetch_related("blocks"):
        targeted = circular.all_blocks or any(
            block.pk == household.block_id for block in circular.blocks.all()
        )
        receipt = Receipt.objects.filter(circular=circular, household=household).first()
        if receipt is None and targeted:
            Receipt.objects.create(
                circular=circular, household=household, block_id=household.block_id
            )
        elif receipt is not None and receipt.block_id != household.block_id and targeted:
            Receipt.objects.filter(pk=receipt.pk).update(
                block_id=household.block_id, version=F("version") + 1
            )
        else:
            continue
        changed += 1
        events.ledger_reset(circular=circular)
        events.circular_changed(circular=circular, household_ids=[household.pk])
    return changed
