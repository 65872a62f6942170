"""安否確認 (safety check): starting one, households' reports, and the chair's board.

A safety check is a circular of kind ``safety``: always 緊急, sent to every block at once,
so it travels by the paths residents use every week (push, mail, paper round, 班長). Each
household answers 無事 or 支援が必要 with an optional short note, in one tap on the phone,
or a 班長 / helper records what they heard at the door or on the phone.

Reports are append-only (``SafetyReport``). A household's status is its latest 無事 /
支援が必要 report by the moment it was made; a visit that found nobody (不在) is kept as an
attempt and never overrides an answer. A report carries a client key, so the service
worker may resend a report queued offline as often as it likes: the same key is the same
row. Answers also confirm the circular (so the ledger and reminders treat them alike).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import Http404
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from circulars import services
from circulars.models import (
    Circular,
    CircularKind,
    CircularStatus,
    Priority,
    Receipt,
    ReceiptMethod,
    SafetyReport,
    SafetyStatus,
)
from circulars.selectors import (
    circular_get_for_staff,
    circular_receipts,
    circular_staff_block_ids,
    paper_annotation,
)
from communities.models import Block, Community, Household, Member
from communities.selectors import Access
from notifications.broadcast import Event, send_on_commit
from notifications.groups import household_group, ledger_block_group, ledger_totals_group

MAX_NOTE = 200
# Methods a 班長 or helper records from a visit or a call; 不在 only makes sense for these.
STAFF_METHODS = frozenset({ReceiptMethod.PROXY_VISIT, ReceiptMethod.PROXY_PHONE})
RESIDENT_METHODS = frozenset({ReceiptMethod.APP, ReceiptMethod.EMAIL})
# Paper: the checklist came back from the door-to-door round with a tick.
RECORD_METHODS = frozenset({*STAFF_METHODS, ReceiptMethod.PAPER})
ANSWERS = (SafetyStatus.SAFE, SafetyStatus.HELP)
# A report queued offline carries the moment of the tap; clocks drift, so it is clamped
# between the check's start and now, and to at most this long ago.
MAX_QUEUE_AGE = timedelta(days=3)
# Short notes a resident can add with one tap (free text is allowed too).
NOTE_SUGGESTIONS = ("怪我をしています", "避難しました", "連絡がほしい", "家が壊れました")


# --- Starting a safety check --------------------------------------------------------------


def safety_title(*, drill: bool) -> str:
    """The title residents see, in the association's language (Japanese), not the
    officer's: 「【訓練】安否確認」 for a drill."""
    with translation.override(settings.LANGUAGE_CODE):
        # ja: 安否確認
        title = _("Safety check")
        if drill:
            # ja: 【訓練】%(title)s
            title = _("[Drill] %(title)s") % {"title": title}
    return title


@transaction.atomic
def safety_check_start(
    *,
    community: Community,
    author: User,
    drill: bool,
    message: str = "",
    blocks: Iterable[Block] = (),
    now: datetime | None = None,
) -> Circular:
    """Create and publish a safety check at once: 緊急, every block unless some are
    chosen, no due date (answers are taken as long as the check is open)."""
    chosen = list(blocks)
    if any(block.community_id != community.pk for block in chosen):
        raise ValidationError({"blocks": _("Choose one of this association's blocks.")})
    body = message.replace("\r\n", "\n").strip()
    if len(body) > 1000:
        raise ValidationError({"message": _("Keep the message under 1,000 characters.")})
    circular = services.circular_create(
        community=community,
        author=author,
        data=services.CircularData(
            title=safety_title(drill=drill),
            body=body,
            priority=Priority.URGENT,
            all_blocks=not chosen,
            blocks=chosen,
        ),
    )
    circular.kind = CircularKind.SAFETY
    circular.drill = drill
    circular.save(update_fields=["kind", "drill", "updated_at"])
    return services.circular_publish(circular=circular, now=now)


def is_safety_check(circular: Circular) -> bool:
    return circular.kind == CircularKind.SAFETY


# --- Reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetyChanged(Event):
    circular_id: int = 0
    block_id: int = 0
    household_id: int = 0
    status: str = ""


@dataclass(frozen=True)
class SafetyResult:
    report: SafetyReport
    status: str  # the household's status after this report ("" while unknown)
    replay: bool = False  # the same key again: nothing changed
    superseded: bool = False  # stored, but a newer answer already stands
    current: SafetyReport | None = None  # the household's current answer (``status``'s)


def _reported_at(circular: Circular, at: datetime | None, now: datetime) -> datetime:
    if at is None:
        return now
    start = circular.published_at or now
    return min(now, max(at, start, now - MAX_QUEUE_AGE))


def _clean_note(note: str) -> str:
    note = " ".join(note.split())
    if len(note) > MAX_NOTE:
        raise ValidationError({"note": _("Keep the note under 200 characters.")})
    return note


def _answers(receipt: Receipt) -> QuerySet[SafetyReport]:
    """The household's answers, the current one first."""
    return SafetyReport.objects.filter(receipt=receipt, status__in=ANSWERS).order_by(
        "-reported_at", "-id"
    )


def _current(receipt: Receipt) -> SafetyReport | None:
    return _answers(receipt).first()


def _latest(reports: Iterable[SafetyReport]) -> SafetyReport | None:
    """The current answer among these reports, in ``_answers``'s order."""
    answers = [report for report in reports if report.status in ANSWERS]
    return max(answers, key=lambda report: (report.reported_at, report.pk), default=None)


def _stored_and_current(
    receipt: Receipt, key: uuid.UUID | None
) -> tuple[SafetyReport | None, SafetyReport | None]:
    """The report already stored under ``key`` (a resend) and the household's current
    answer, in one query. Read under the receipt's lock: no report of this household can
    come in between this read and the caller's insert."""
    current = Q(pk=Subquery(_answers(receipt).values("pk")[:1]))
    rows = list(SafetyReport.objects.filter(current if key is None else current | Q(key=key)))
    stored = next((row for row in rows if key is not None and row.key == key), None)
    return stored, _latest(row for row in rows if row.receipt_id == receipt.pk)


def safety_report(
    *,
    circular: Circular,
    household: Household,
    status: str,
    method: str,
    note: str = "",
    member: Member | None = None,
    recorded_by: User | None = None,
    key: uuid.UUID | None = None,
    at: datetime | None = None,
    now: datetime | None = None,
) -> SafetyResult:
    """Record one report. Raises ValidationError keyed by field for bad input.

    ``at``: when the resident tapped (a report queued offline arrives later than it was
    made). ``key``: the client's idempotency key; the same key again returns the stored
    report unchanged, and a key already used by another household is refused.
    """
    now = now or timezone.now()
    if circular.kind != CircularKind.SAFETY or circular.status != CircularStatus.PUBLISHED:
        raise Http404
    if status not in SafetyStatus.values:
        raise ValidationError({"status": _("Choose 「Safe」 or 「Needs help」.")})
    if method not in RESIDENT_METHODS | RECORD_METHODS:
        raise ValidationError({"method": _("Choose visit or phone.")})
    if status == SafetyStatus.ABSENT and method not in STAFF_METHODS:
        raise ValidationError({"status": _("Choose 「Safe」 or 「Needs help」.")})
    report = SafetyReport(
        circular=circular,
        status=status,
        note=_clean_note(note),
        method=method,
        reported_at=_reported_at(circular, at, now),
        member=member,
        recorded_by=recorded_by,
        key=key,
    )
    try:
        return _report_record(circular=circular, household=household, report=report, now=now)
    except IntegrityError:
        if key is None:
            raise
        # The same key came in from a second request after this one looked for it.
        # _report_record's atomic block (a savepoint when called inside a transaction) is
        # rolled back, since on PostgreSQL nothing can go on after the failed insert: look
        # again, the other request's report is stored now.
        report.pk = None
        return _report_record(circular=circular, household=household, report=report, now=now)


@transaction.atomic
def _report_record(
    *, circular: Circular, household: Household, report: SafetyReport, now: datetime
) -> SafetyResult:
    # One household at a time: its reports and its confirmation are decided in order.
    receipt = services._receipt_for(circular, household, lock=True)
    stored, current = _stored_and_current(receipt, report.key)
    if stored is not None:
        if stored.receipt_id != receipt.pk:
            raise ValidationError({"key": _("This answer was already sent for another household.")})
        return SafetyResult(
            report=stored, status=current.status if current else "", replay=True, current=current
        )
    report.receipt = receipt
    report.save(force_insert=True)
    if report.status in ANSWERS:
        services.receipt_confirm_row(
            receipt=receipt,
            method=report.method,
            member=report.member,
            recorded_by=report.recorded_by,
            now=now,
        )
        current = _latest([report, *([current] if current else [])])
    current_status = current.status if current else ""
    send_on_commit(
        groups=[
            ledger_totals_group(circular.pk),
            ledger_block_group(circular.pk, receipt.block_id),
            household_group(household.pk),
        ],
        event=SafetyChanged(
            type="safety.changed",
            circular_id=circular.pk,
            block_id=receipt.block_id,
            household_id=household.pk,
            status=current_status,
        ),
    )
    superseded = report.status in ANSWERS and current is not None and current.pk != report.pk
    return SafetyResult(
        report=report, status=current_status, superseded=superseded, current=current
    )


# --- Reading: the board -------------------------------------------------------------------


@dataclass
class SafetyCounts:
    households: int = 0
    safe: int = 0
    help: int = 0
    unknown: int = 0

    def add(self, status: str) -> None:
        self.households += 1
        if status == SafetyStatus.SAFE:
            self.safe += 1
        elif status == SafetyStatus.HELP:
            self.help += 1
        else:
            self.unknown += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "households": self.households,
            "safe": self.safe,
            "help": self.help,
            "unknown": self.unknown,
        }


def _annotated(receipts: QuerySet[Receipt]) -> QuerySet[Receipt]:
    """Receipts with the household's current answer and the last attempt, one query."""
    answers = SafetyReport.objects.filter(receipt=OuterRef("pk"), status__in=ANSWERS).order_by(
        "-reported_at", "-id"
    )
    attempts = SafetyReport.objects.filter(
        receipt=OuterRef("pk"), status=SafetyStatus.ABSENT
    ).order_by("-reported_at", "-id")
    return receipts.annotate(
        safety_status=Subquery(answers.values("status")[:1]),
        safety_note=Subquery(answers.values("note")[:1]),
        safety_method=Subquery(answers.values("method")[:1]),
        safety_at=Subquery(answers.values("reported_at")[:1]),
        attempt_method=Subquery(attempts.values("method")[:1]),
        attempt_at=Subquery(attempts.values("reported_at")[:1]),
        paper=paper_annotation(),
    )


STATUS_ORDER = {SafetyStatus.HELP: 0, "": 1, SafetyStatus.SAFE: 2}


@dataclass
class SafetyBlock:
    block: Block
    counts: SafetyCounts
    rows: list[Receipt]  # needs help first, then unknown, then safe; round order within


@dataclass
class SafetyBoard:
    circular: Circular
    totals: SafetyCounts
    blocks: list[SafetyBlock]
    needs_help: list[Receipt]  # across the visible blocks, the newest first
    all_blocks_visible: bool


def safety_rows(*, circular: Circular, block_ids: frozenset[int] | None) -> list[Receipt]:
    receipts = circular_receipts(circular).filter(household__isnull=False)
    if block_ids is not None:
        receipts = receipts.filter(block_id__in=block_ids)
    return list(
        _annotated(receipts)
        .select_related("household", "block")
        .order_by("block__position", "block_id", "household__circulation_order", "household_id")
    )


def safety_board(*, access: Access, circular: Circular) -> SafetyBoard:
    """The chair's view: per block, unknown / safe / needs help, needs help first. The
    ledger's visibility: officers every block, 班長 and helpers their own. One query."""
    if circular.kind != CircularKind.SAFETY or circular.status != CircularStatus.PUBLISHED:
        raise Http404
    visible = circular_staff_block_ids(access=access, circular=circular)
    blocks: dict[int, SafetyBlock] = {}
    totals = SafetyCounts()
    for row in safety_rows(circular=circular, block_ids=visible):
        status = row.safety_status or ""  # type: ignore[attr-defined]
        item = blocks.setdefault(row.block_id, SafetyBlock(row.block, SafetyCounts(), []))
        item.counts.add(status)
        totals.add(status)
        item.rows.append(row)
    for item in blocks.values():
        item.rows.sort(key=lambda row: STATUS_ORDER.get(row.safety_status or "", 1))  # type: ignore[attr-defined]
    # Blocks keep their usual order, so nothing jumps around while the chair reads.
    ordered = list(blocks.values())
    needs_help = sorted(
        (row for item in ordered for row in item.rows if row.safety_status == SafetyStatus.HELP),  # type: ignore[attr-defined]
        key=lambda row: row.safety_at,  # type: ignore[attr-defined]
        reverse=True,
    )
    return SafetyBoard(
        circular=circular,
        totals=totals,
        blocks=ordered,
        needs_help=needs_help,
        all_blocks_visible=visible is None,
    )


def safety_board_for(*, access: Access, circular_id: int) -> SafetyBoard:
    return safety_board(
        access=access, circular=circular_get_for_staff(access=access, circular_id=circular_id)
    )


def household_safety(*, receipt: Receipt) -> SafetyReport | None:
    """The household's current answer (for the resident's page), or None."""
    return _current(receipt)


# --- The 班長's recording screen and follow-up list ---------------------------------------

# A check stays on the 班長's follow-up list this long after it started (as long as a queued
# offline answer is still taken at its tap time).
FOLLOWUP_FOR = MAX_QUEUE_AGE
# The recording screen: who still needs a knock first, then needs help, then safe.
RECORD_ORDER = {"": 0, SafetyStatus.HELP: 1, SafetyStatus.SAFE: 2}


def safety_record_rows(*, circular: Circular, block: Block) -> list[Receipt]:
    """The block's households for the recording screen: unknown first, then needs help,
    then safe; round order within each."""
    rows = safety_rows(circular=circular, block_ids=frozenset({block.pk}))
    rows.sort(key=lambda row: RECORD_ORDER.get(row.safety_status or "", 0))  # type: ignore[attr-defined]
    return rows


def safety_record_row(*, circular: Circular, block: Block, household_id: int) -> Receipt:
    """One household of the block's round, or 404 (another block, another association)."""
    receipts = Receipt.objects.filter(
        circular=circular, block=block, household_id=household_id, household__isnull=False
    )
    row = _annotated(receipts).select_related("household", "block").first()
    if row is None:
        raise Http404
    return row


def safety_history(*, receipt_ids: Iterable[int]) -> dict[int, list[SafetyReport]]:
    """Every report of these households, the newest first (the screen shows who recorded
    what, when). One query."""
    history: dict[int, list[SafetyReport]] = {}
    reports = (
        SafetyReport.objects.filter(receipt_id__in=list(receipt_ids))
        .select_related("recorded_by")
        .order_by("-reported_at", "-id")
    )
    for report in reports:
        history.setdefault(report.receipt_id, []).append(report)
    return history


@dataclass
class SafetyFollowup:
    circular: Circular
    block: Block
    counts: SafetyCounts
    unknown: list[Receipt]  # paper households first, then round order


def safety_followup(*, access: Access, now: datetime | None = None) -> list[SafetyFollowup]:
    """Open safety checks on the 班長's follow-up list: per block of theirs, the households
    nobody has heard from, at once (no waiting for the notification ladder), paper
    households first since only a knock or a call reaches them."""
    now = now or timezone.now()
    checks = Circular.objects.filter(
        community=access.community,
        kind=CircularKind.SAFETY,
        status=CircularStatus.PUBLISHED,
        published_at__gte=now - FOLLOWUP_FOR,
    ).order_by("-published_at", "-id")
    items: list[SafetyFollowup] = []
    for check in checks:
        blocks: dict[int, SafetyFollowup] = {}
        visible = circular_staff_block_ids(access=access, circular=check)  # the ledger's rule
        for row in safety_rows(circular=check, block_ids=visible):
            status = row.safety_status or ""  # type: ignore[attr-defined]
            item = blocks.setdefault(
                row.block_id, SafetyFollowup(check, row.block, SafetyCounts(), [])
            )
            item.counts.add(status)
            if not status:
                item.unknown.append(row)
        for item in blocks.values():
            item.unknown.sort(key=lambda row: not row.paper)  # type: ignore[attr-defined]
        items.extend(blocks.values())
    return items
