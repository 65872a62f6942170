"""Real-time events of circulars and the ledger: built in services, sent after commit.

Payloads are small frozen dataclasses with a namespaced ``type``: ids, counts, labels and
a version. Groups follow visibility (see ``notifications.groups``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone
from django.utils.formats import date_format

from circulars.models import Circular, Receipt
from circulars.selectors import ledger_counts, receipt_status
from notifications.broadcast import Event, send_now, send_on_commit
from notifications.groups import household_group, ledger_block_group, ledger_totals_group


@dataclass(frozen=True)
class InboxCircular(Event):
    circular_id: int = 0
    change: str = "published"


@dataclass(frozen=True)
class LedgerReceipt(Event):
    circular_id: int = 0
    household_id: int = 0
    block_id: int = 0
    status: str = ""
    method: str = ""
    time: str = ""
    version: int = 0
    block_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerTotals(Event):
    circular_id: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerReset(Event):
    circular_id: int = 0


def circular_published(*, circular: Circular, household_ids: list[int]) -> None:
    send_on_commit(
        groups=[household_group(pk) for pk in household_ids],
        event=InboxCircular(type="inbox.circular", circular_id=circular.pk),
    )


def circular_changed(*, circular: Circular, household_ids: list[int]) -> None:
    send_on_commit(
        groups=[household_group(pk) for pk in household_ids],
        event=InboxCircular(type="inbox.circular", circular_id=circular.pk, change="corrected"),
    )


def ledger_reset(*, circular: Circular) -> None:
    send_on_commit(
        groups=[ledger_totals_group(circular.pk)],
        event=LedgerReset(type="ledger.reset", circular_id=circular.pk),
    )


def receipt_changed(*, receipt: Receipt) -> None:
    """After commit: the row to its block's group, fresh totals to the totals group, and a
    nudge to the household's other phones."""
    circular_id, block_id, household_id = (
        receipt.circular_id,
        receipt.block_id,
        receipt.household_id,
    )
    status = receipt_status(receipt)
    moment = receipt.confirmed_at or receipt.opened_at
    label = date_format(timezone.localtime(moment), "n/j H:i") if moment else ""
    method, version = receipt.method, receipt.version

    def send() -> None:
        # Counted after commit, so the numbers include this change and every earlier one.
        block_counts = ledger_counts(circular_id=circular_id, block_ids=frozenset({block_id}))
        send_now(
            groups=[ledger_block_group(circular_id, block_id)],
            event=LedgerReceipt(
                type="ledger.receipt",
                circular_id=circular_id,
                household_id=household_id or 0,
                block_id=block_id,
                status=status,
                method=method,
                time=label,
                version=version,
                block_counts=block_counts.as_dict(),
            ),
        )
        send_now(
            groups=[ledger_totals_group(circular_id)],
            event=LedgerTotals(
                type="ledger.totals",
                circular_id=circular_id,
                counts=ledger_counts(circular_id=circular_id).as_dict(),
            ),
        )
        if household_id:
            send_now(
                groups=[household_group(household_id)],
                event=InboxCircular(type="inbox.circular", circular_id=circular_id, change=status),
            )

    from django.db import transaction

    transaction.on_commit(send, robust=True)
