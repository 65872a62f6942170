"""Real-time events of circulars and the ledger: built in services, sent after commit.

Payloads are small frozen dataclasses with a namespaced ``type``: ids, counts, labels and
a version. Groups follow visibility (see ``notifications.groups``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.formats import date_format

from circulars.models import Circular, Receipt
from circulars.selectors import ledger_block_counts, ledger_counts, receipt_status
from notifications.broadcast import Event, send_now, send_on_commit
from notifications.groups import household_group, ledger_block_group, ledger_totals_group

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class LedgerCounts(Event):
    """A block's counts, sent apart from its rows when counts are coalesced."""

    circular_id: int = 0
    block_id: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def receipt_changed(*, receipt: Receipt) -> None:
    """After commit: the row to its block's group at once, a nudge to the household's other
    phones, and fresh counts to the block's and the totals group (see ``counts_changed``)."""
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
        coalesced = _counts_coalesced()
        # Counted after commit, so the numbers include this change and every earlier one.
        block_counts = (
            {}
            if coalesced
            else ledger_counts(circular_id=circular_id, block_ids=frozenset({block_id})).as_dict()
        )
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
                block_counts=block_counts,
            ),
        )
        if household_id:
            send_now(
                groups=[household_group(household_id)],
                event=InboxCircular(type="inbox.circular", circular_id=circular_id, change=status),
            )
        if coalesced:
            _coalescer.mark(circular_id, block_id)
        else:
            _totals_send(circular_id)

    transaction.on_commit(send, robust=True)


def _totals_send(circular_id: int) -> None:
    send_now(
        groups=[ledger_totals_group(circular_id)],
        event=LedgerTotals(
            type="ledger.totals",
            circular_id=circular_id,
            counts=ledger_counts(circular_id=circular_id).as_dict(),
        ),
    )


def _counts_coalesced() -> bool:
    """Counts are coalesced where changes come fast: on a shared channel layer (the
    production shape). The in-memory layer of the embedded default counts every change
    at once, on the server's own loop, as its in-process queues need."""
    return settings.KAIRAN_LEDGER_COUNTS_SECONDS > 0 and not isinstance(
        get_channel_layer(), InMemoryChannelLayer
    )


def _counts_send(circular_id: int, block_ids: frozenset[int]) -> None:
    """The counts of the changed blocks and the circular's totals, counted now: two
    aggregates for every change in the window, instead of two per change."""
    try:
        for block_id, counts in ledger_block_counts(
            circular_id=circular_id, block_ids=block_ids
        ).items():
            send_now(
                groups=[ledger_block_group(circular_id, block_id)],
                event=LedgerCounts(
                    type="ledger.counts",
                    circular_id=circular_id,
                    block_id=block_id,
                    counts=counts.as_dict(),
                ),
            )
        _totals_send(circular_id)
    except Exception:
        # The database is the truth: pages re-sync from a snapshot when they reconnect.
        logger.warning("ledger counts of circular %s not sent", circular_id, exc_info=True)
    finally:
        connection.close()  # this thread's own connection, back to the pool


class _CountsCoalescer:
    """Per process: changes of one circular within ``KAIRAN_LEDGER_COUNTS_SECONDS`` share
    one count, sent from a timer thread once the window closes. A change marked after the
    window closed opens the next one, so the last change is always counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: dict[int, set[int]] = {}

    def mark(self, circular_id: int, block_id: int) -> None:
        with self._lock:
            blocks = self._dirty.get(circular_id)
            if blocks is not None:
                blocks.add(block_id)
                return
            self._dirty[circular_id] = {block_id}
        timer = threading.Timer(
            settings.KAIRAN_LEDGER_COUNTS_SECONDS, self._due, args=(circular_id,)
        )
        timer.daemon = True
        timer.start()

    def _due(self, circular_id: int) -> None:
        with self._lock:
            blocks = frozenset(self._dirty.pop(circular_id, ()))
        _counts_send(circular_id, blocks)


_coalescer = _CountsCoalescer()
