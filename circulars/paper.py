"""The paper path: who gets paper, paper sign-offs, and the print log.

Paper is a channel, not a fallback: a household on paper confirms by a stamp on the
回覧表 or a signed copy, and the helper's tap turns that into the same receipt an app tap
makes, so the ledger counts every household whatever its channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _

from circulars import events
from circulars.models import Answer, Circular, PrintRecord, Receipt, ReceiptMethod
from circulars.selectors import Counts, ledger_block_counts, paper_annotation
from circulars.services import ConfirmResult, receipt_confirm
from communities.models import Block, Household

UNDO_WINDOW = timedelta(minutes=10)


def paper_distribution(*, circular: Circular) -> str:
    """回覧, 各戸配布 or both: the circular's own choice, else its community's."""
    return circular.paper_distribution or circular.community.paper_distribution


def _block_receipts(circular: Circular, block: Block) -> QuerySet[Receipt]:
    """The block's receipts in circulation order, each marked ``on_paper``."""
    return (
        Receipt.objects.filter(circular=circular, block=block, household__isnull=False)
        .annotate(on_paper=paper_annotation())
        .select_related("household", "recorded_by")
        .order_by("household__circulation_order", "household_id")
    )


def paper_receipts(*, circular: Circular, block: Block) -> QuerySet[Receipt]:
    """The block's paper households for this circular, in circulation order (the 回覧表)."""
    return _block_receipts(circular, block).filter(Q(on_paper=True))


def signoff_receipts(*, circular: Circular, block: Block) -> QuerySet[Receipt]:
    """The households a returned 回覧表 can list: today's paper round, plus any household
    that was on a printed sheet and has joined by phone since (its stamp still counts)."""
    printed: set[int] = set()
    for ids in PrintRecord.objects.filter(circular=circular).values_list(
        "household_ids", flat=True
    ):
        printed.update(ids)
    return _block_receipts(circular, block).filter(Q(on_paper=True) | Q(household_id__in=printed))


def paper_households(*, circular: Circular, block: Block) -> list[Household]:
    return [
        receipt.household
        for receipt in paper_receipts(circular=circular, block=block)
        if receipt.household
    ]


def paper_receipt_get(*, circular: Circular, block: Block, household_id: int) -> Receipt:
    """A household of the block's sign-off screen (its returned slip can be entered), or
    404 for any other household."""
    receipt = (
        signoff_receipts(circular=circular, block=block).filter(household_id=household_id).first()
    )
    if receipt is None or receipt.household is None:
        raise Http404
    return receipt


def _paper_receipt(circular: Circular, block: Block, household_id: int) -> Receipt:
    receipt = (
        signoff_receipts(circular=circular, block=block).filter(household_id=household_id).first()
    )
    if receipt is None or receipt.household is None:
        raise ValidationError(_("This household is not on this block's paper round."))
    return receipt


def paper_signoff_record(
    *, circular: Circular, block: Block, household_id: int, recorded_by: User
) -> ConfirmResult:
    """A stamp on the returned sheet: record a paper receipt (idempotent)."""
    receipt = _paper_receipt(circular, block, household_id)
    assert receipt.household is not None
    return receipt_confirm(
        circular=circular,
        household=receipt.household,
        method=ReceiptMethod.PAPER,
        recorded_by=recorded_by,
    )


@transaction.atomic
def paper_signoff_undo(
    *, circular: Circular, block: Block, household_id: int, user: User, now: datetime | None = None
) -> Receipt:
    """Take back a paper sign-off tapped by mistake, within a few minutes."""
    now = now or timezone.now()
    receipt = _paper_receipt(circular, block, household_id)
    if receipt.confirmed_at is None:
        return receipt
    if receipt.method != ReceiptMethod.PAPER or now - receipt.confirmed_at > UNDO_WINDOW:
        raise ValidationError(_("This confirmation can no longer be undone here."))
    if Answer.objects.filter(receipt=receipt).exists():
        # Answering confirms: a household whose reply slip was entered stays confirmed.
        raise ValidationError(
            _(
                "This household's answers are recorded, so its confirmation stays. "
                "Use “Change the answers” to correct them."
            )
        )
    updated = Receipt.objects.filter(
        pk=receipt.pk, confirmed_at=receipt.confirmed_at, method=ReceiptMethod.PAPER
    ).update(
        confirmed_at=None,
        # The tap also set opened_at when nobody had opened it: take that back too, or the
        # ledger would show a paper household as "opened" after a mistaken tap.
        opened_at=None if receipt.opened_at == receipt.confirmed_at else receipt.opened_at,
        method="",
        recorded_by=None,
        confirmed_by=None,
        confirm_key=None,
        version=F("version") + 1,
    )
    receipt.refresh_from_db()
    if updated:
        events.receipt_changed(receipt=receipt)
    return receipt


@transaction.atomic
def paper_signoff_all(*, circular: Circular, block: Block, recorded_by: User) -> int:
    """「全員確認」: every paper household of the block still open. Returns how many."""
    count = 0
    for receipt in signoff_receipts(circular=circular, block=block).filter(
        confirmed_at__isnull=True
    ):
        assert receipt.household is not None
        result = receipt_confirm(
            circular=circular,
            household=receipt.household,
            method=ReceiptMethod.PAPER,
            recorded_by=recorded_by,
        )
        count += int(result.recorded)
    return count


def print_record_create(
    *,
    circular: Circular,
    block: Block | None,
    printed_by: User | None,
    household_ids: list[int],
    pages: int,
    furigana: bool,
    large_print: bool,
) -> PrintRecord:
    return PrintRecord.objects.create(
        circular=circular,
        block=block,
        all_blocks=block is None,
        printed_by=printed_by,
        household_ids=household_ids,
        households=len(household_ids),
        pages=pages,
        furigana=furigana,
        large_print=large_print,
    )


@dataclass(frozen=True)
class PaperStatus:
    """「紙: 印刷済 12 / 回収 9」 for one block."""

    printed: int
    collected: int
    paper_households: int
    last_printed_at: datetime | None


def paper_status(
    *, circular: Circular, counts: Mapping[int, Counts] | None = None
) -> dict[int, PaperStatus]:
    """Per block: households covered by the latest print, and paper sign-offs collected.
    ``counts``: the ledger's block counts when the caller has them (saves a query)."""
    if counts is None:
        counts = ledger_block_counts(circular_id=circular.pk)
    records = list(PrintRecord.objects.filter(circular=circular).order_by("printed_at", "pk"))
    printed_ids = {pk for record in records for pk in record.household_ids}
    block_of = (
        dict(
            Receipt.objects.filter(circular=circular, household_id__in=printed_ids).values_list(
                "household_id", "block_id"
            )
        )
        if printed_ids
        else {}
    )
    printed: dict[int, set[int]] = {}
    last: dict[int, datetime] = {}
    for record in records:
        for household_id in record.household_ids:
            block_id = block_of.get(household_id)
            if block_id is None:
                continue
            printed.setdefault(block_id, set()).add(household_id)
            last[block_id] = record.printed_at
    return {
        block_id: PaperStatus(
            printed=len(printed.get(block_id, set())),
            collected=block.paper_collected,
            paper_households=block.paper,
            last_printed_at=last.get(block_id),
        )
        for block_id, block in counts.items()
    }


def print_history(
    *, circular: Circular, block_ids: frozenset[int] | None = None, limit: int = 20
) -> list[PrintRecord]:
    """Who printed which pack when (all-blocks packs only for those who see every block)."""
    records = PrintRecord.objects.filter(circular=circular).select_related("printed_by", "block")
    if block_ids is not None:
        records = records.filter(block_id__in=block_ids)
    return list(records.order_by("-printed_at", "-pk")[:limit])
