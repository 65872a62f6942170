"""Real-time events of circulars and the ledger: built in services, sent after commit.

Payloads are small frozen dataclasses with a namespaced ``type``: ids, counts, labels and
a version. Groups follow visibility (see ``notifications.groups``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.formats import date_format
from redis.exceptions import RedisError

from circulars.models import Circular, Receipt
from circulars.selectors import ledger_block_counts, ledger_counts, receipt_status
from config.resilient_cache import RETRY_SECONDS
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


def _counts_send(circular_id: int, block_ids: frozenset[int] | None) -> None:
    """The counts of the changed blocks (None: every block) and the circular's totals,
    counted now: two aggregates for every change in the window, instead of two per change."""
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


# Shared windows (see _CountsCoalescer): atomic, so a change is either in the set the
# window's owner takes, or opens the next window itself.
_MARK = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_TAKE = """
local blocks = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return blocks
"""


class _CountsCoalescer:
    """Changes of one circular within ``KAIRAN_LEDGER_COUNTS_SECONDS`` share one count,
    sent from a timer thread once the window closes. A change marked after the window
    closed opens the next one, so the last change is always counted.

    With Redis the window is shared by every page process: the first change opens it (and
    counts it when it closes), the others only add their block. Per process, the four
    workers of a busy server each recounted a busy circular four times a second, a fifth
    of the CPU a confirmation cost. Without Redis, or while it fails, each process keeps
    its own windows.
    """

    def __init__(self, redis_url: str | None = None) -> None:
        self._lock = threading.Lock()
        self._dirty: dict[int, set[int]] = {}
        self._redis_url = redis_url
        self._client: Any = None
        self._client_pid = 0
        self._down_until = 0.0

    def mark(self, circular_id: int, block_id: int) -> None:
        client = self._shared()
        if client is not None:
            try:
                opened = client.eval(_MARK, 2, *self._keys(circular_id), block_id, self._ttl_ms())
            except RedisError:
                logger.warning("shared counts window unavailable; counting in this process")
                self._down()
            else:
                if opened:
                    self._start(self._due_shared, circular_id)
                return
        with self._lock:
            blocks = self._dirty.get(circular_id)
            if blocks is not None:
                blocks.add(block_id)
                return
            self._dirty[circular_id] = {block_id}
        self._start(self._due, circular_id)

    def _start(self, due: Callable[[int], None], circular_id: int) -> None:
        timer = threading.Timer(settings.KAIRAN_LEDGER_COUNTS_SECONDS, due, args=(circular_id,))
        timer.daemon = True
        timer.start()

    def _due(self, circular_id: int) -> None:
        with self._lock:
            blocks = frozenset(self._dirty.pop(circular_id, ()))
        _counts_send(circular_id, blocks)

    def _due_shared(self, circular_id: int) -> None:
        client = self._shared()
        try:
            taken = client.eval(_TAKE, 2, *self._keys(circular_id)) if client else None
        except RedisError:
            self._down()
            taken = None
        if not taken:  # Redis failed, or lost the window's keys: count every block
            _counts_send(circular_id, None)
        else:
            _counts_send(circular_id, frozenset(int(block) for block in taken))

    def _shared(self) -> Any:
        """This process's Redis client for the shared windows, or None."""
        url = self._redis_url if self._redis_url is not None else settings.REDIS_URL
        if not url or time.monotonic() < self._down_until:
            return None
        if self._client is None or self._client_pid != os.getpid():
            self._client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
            self._client_pid = os.getpid()
        return self._client

    def _down(self) -> None:
        """Leave Redis alone for a while, as the cache does: a confirm must not wait on its
        time-out."""
        self._down_until = time.monotonic() + RETRY_SECONDS

    @staticmethod
    def _keys(circular_id: int) -> tuple[str, str]:
        layer: Any = settings.CHANNEL_LAYERS["default"]
        prefix = layer.get("CONFIG", {}).get("prefix", "asgi")
        return f"{prefix}:counts:{circular_id}:blocks", f"{prefix}:counts:{circular_id}:window"

    @staticmethod
    def _ttl_ms() -> int:
        # Outlives the window many times over; only matters if its owner dies before
        # closing it (the next change after that opens a fresh one).
        return max(5000, int(settings.KAIRAN_LEDGER_COUNTS_SECONDS * 20_000))


_coalescer = _CountsCoalescer()
