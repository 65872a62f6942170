"""Reads for circulars, the inbox and the delivery ledger, with visibility enforced here.

Who sees what: chair, officers and the author see every block of a circular; a block
leader or helper sees the blocks they look after; a resident sees only their own
household's receipt. Anything else is a 404.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.http import Http404

from circulars.models import (
    Circular,
    CircularKind,
    CircularStatus,
    Priority,
    Question,
    Receipt,
    ReceiptMethod,
)
from circulars.search import search_normalise
from communities.models import Block, DeliveryMode, Member
from communities.selectors import Access, block_chosen, block_get_visible, rows_folded


def _is_author(access: Access, circular: Circular) -> bool:
    return circular.author_id == access.user_id


def circular_staff_block_ids(*, access: Access, circular: Circular) -> frozenset[int] | None:
    """The blocks of this circular the user may follow as staff; None means all blocks."""
    if access.is_officer or (access.is_block_staff and _is_author(access, circular)):
        return None
    return access.block_ids


def circular_get_for_staff(*, access: Access, circular_id: int) -> Circular:
    """A circular as its staff see it: officers and author always, block staff when it
    was sent to one of their blocks. Drafts only to officers and the author."""
    if not (access.is_officer or access.is_block_staff):
        # Authorship alone opens nothing: a former 班長 who is now only a resident sees
        # their old circulars as a resident does.
        raise Http404
    circular = (
        Circular.objects.filter(community=access.community, pk=circular_id)
        .select_related("author", "community")
        # Staff pages offer answer entry when it asks something: read with the circular.
        .annotate(has_questions=Exists(Question.objects.filter(circular=OuterRef("pk"))))
        .first()
    )
    if circular is None:
        raise Http404
    if access.is_officer or _is_author(access, circular):
        return circular
    if circular.status != CircularStatus.PUBLISHED or not access.block_ids:
        raise Http404
    if circular.all_blocks or circular.blocks.filter(pk__in=access.block_ids).exists():
        return circular
    raise Http404


def circular_block_get(*, access: Access, circular: Circular, block_id: int) -> Block:
    """A block this circular went to, for its 班長 and helpers, officers and the chair (the
    sign-off and safety recording screens); 404 for anyone else."""
    block = block_get_visible(access=access, block_id=block_id)
    if not circular.receipts.filter(block=block).exists():
        raise Http404
    return block


def can_staff_view(*, access: Access, circular_id: int) -> bool:
    try:
        circular_get_for_staff(access=access, circular_id=circular_id)
    except Http404:
        return False
    return True


def circular_get_for_member(*, access: Access, circular_id: int) -> tuple[Circular, Receipt]:
    """A published circular and the receipt of the member's household, or 404."""
    receipt = (
        Receipt.objects.filter(
            circular_id=circular_id,
            circular__community=access.community,
            circular__status=CircularStatus.PUBLISHED,
            household_id__in=access.household_ids,
        )
        .select_related("circular", "circular__community", "household")
        .order_by("household_id")
        .first()
    )
    if receipt is None:
        raise Http404
    return receipt.circular, receipt


def circulars_for_staff(*, access: Access) -> QuerySet[Circular]:
    circulars = Circular.objects.filter(community=access.community)
    if not access.is_officer:
        circulars = circulars.filter(
            Q(author_id=access.user_id)
            | Q(status=CircularStatus.PUBLISHED)
            & (Q(all_blocks=True) | Q(blocks__in=access.block_ids))
        ).distinct()
    return circulars.select_related("author").order_by("-published_at", "-created_at", "-id")


PRIORITY_RANK = {Priority.URGENT: 0, Priority.IMPORTANT: 1, Priority.NORMAL: 2}


@dataclass(frozen=True)
class InboxItem:
    circular: Circular
    receipt: Receipt

    @property
    def confirmed(self) -> bool:
        return self.receipt.confirmed_at is not None


# A safety check stays at the top of the inbox this long (so the answer can be changed).
SAFETY_ON_TOP = timedelta(days=3)


def inbox(*, access: Access, query: str = "", limit: int | None = 50) -> list[InboxItem]:
    """The household's circulars: safety checks (unanswered, or from the last days) first,
    then urgent unconfirmed, then unconfirmed, then the rest.

    ``query`` is a plain substring match on title and text, which is what Japanese needs
    (「ごみ」 finds 「ごみ収集日の変更」: no word boundaries to tokenise on).
    """
    from django.utils import timezone

    recent = timezone.now() - SAFETY_ON_TOP
    safety_on_top = Q(circular__kind=CircularKind.SAFETY) & (
        Q(confirmed_at__isnull=True) | Q(circular__published_at__gte=recent)
    )
    receipts = (
        Receipt.objects.filter(
            household_id__in=access.household_ids,
            circular__community=access.community,
            circular__status=CircularStatus.PUBLISHED,
        )
        .select_related("circular")
        # Ranked in SQL, so a limit never cuts an older urgent or unconfirmed circular.
        .annotate(
            rank=Case(
                When(safety_on_top, then=Value(0)),
                When(confirmed_at__isnull=False, then=Value(3)),
                When(circular__priority=Priority.URGENT, then=Value(1)),
                default=Value(2),
            )
        )
        .order_by("rank", "-circular__published_at", "-circular_id")
    )
    for word in search_normalise(query).split():
        receipts = receipts.filter(circular__search_text__contains=word)
    seen: set[int] = set()
    items = []
    for receipt in receipts[: (limit * 2) if limit else None]:
        if receipt.circular_id in seen:  # a person in two households of one community
            continue
        seen.add(receipt.circular_id)
        items.append(InboxItem(circular=receipt.circular, receipt=receipt))

    def rank(item: InboxItem) -> tuple[int, int]:
        if item.circular.kind == CircularKind.SAFETY and (
            not item.confirmed
            or (item.circular.published_at and item.circular.published_at >= recent)
        ):
            return (0, 0)
        if item.confirmed:
            return (3, 0)
        return (1 if item.circular.priority == Priority.URGENT else 2, 0)

    items.sort(key=rank)  # stable: newest first inside each group
    return items[:limit] if limit else items


# --- The delivery ledger ----------------------------------------------------------------


@dataclass
class Counts:
    total: int = 0
    confirmed: int = 0
    opened: int = 0  # opened but not confirmed
    not_yet: int = 0
    paper: int = 0  # households on paper, confirmed or not
    paper_out: int = 0  # paper households not yet confirmed
    paper_collected: int = 0  # paper sign-offs recorded (「回収」)
    # Grows with every change to the counted rows (sum of their versions plus their
    # number): of two counts of the same rows, the one with the higher seq is the newer.
    seq: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Counts:
        total = row.get("total") or 0
        confirmed = row.get("confirmed") or 0
        opened = row.get("opened") or 0
        return cls(
            total=total,
            confirmed=confirmed,
            opened=opened,
            not_yet=total - confirmed - opened,
            paper=row.get("paper") or 0,
            paper_out=row.get("paper_out") or 0,
            paper_collected=row.get("paper_collected") or 0,
            seq=(row.get("versions") or 0) + total,
        )

    @classmethod
    def added(cls, parts: Iterable[Counts]) -> Counts:
        """The counts of several blocks together."""
        total = cls()
        for part in parts:
            for name, value in part.as_dict().items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def paper_q() -> Q:
    """Receipt rows whose household gets paper (mode paper/both, or no working login)."""
    working = Member.objects.filter(household=OuterRef("household_id"), user__is_active=True)
    return (
        Q(household__delivery_mode__in=[DeliveryMode.PAPER, DeliveryMode.BOTH])
        | Q(~Exists(working))
        | Q(household__dead_contact_since__isnull=False)
    )


def _count_aggregates() -> dict[str, Count | Sum]:
    return {
        "versions": Sum("version"),
        "total": Count("pk"),
        "confirmed": Count("pk", filter=Q(confirmed_at__isnull=False)),
        "opened": Count("pk", filter=Q(confirmed_at__isnull=True, opened_at__isnull=False)),
        "paper": Count("pk", filter=paper_q()),
        "paper_out": Count("pk", filter=Q(confirmed_at__isnull=True) & paper_q()),
        "paper_collected": Count("pk", filter=Q(method=ReceiptMethod.PAPER)),
    }


def circular_receipts(circular: Circular | int) -> QuerySet[Receipt]:
    """A circular's receipts: where every query over a whole circular starts.

    The filter on the blocks' community removes no row (a circular's blocks are its
    community's) but tells PostgreSQL that few of the city's receipts come out. Without
    it the planner expects thousands and answers ``paper_q`` and the other per-household
    subqueries by hashing *every* member, user and household of the city: counting a
    2,000-household circular took 210 ms in a city of 100,000 households, 9 ms with it,
    whatever the city's size. ``circular`` may be an id (the community is then looked up
    in the same query)."""
    if isinstance(circular, Circular):
        return Receipt.objects.filter(circular=circular, block__community_id=circular.community_id)
    community = Circular.objects.filter(pk=circular).order_by().values("community_id")[:1]
    return Receipt.objects.filter(circular_id=circular, block__community_id=Subquery(community))


def _receipts_counted(circular_id: int, block_ids: frozenset[int] | None) -> QuerySet[Receipt]:
    receipts = circular_receipts(circular_id)
    if block_ids is not None:
        receipts = receipts.filter(block_id__in=block_ids)
    return receipts


def ledger_counts(*, circular_id: int, block_ids: frozenset[int] | None = None) -> Counts:
    receipts = _receipts_counted(circular_id, block_ids)
    return Counts.from_row(receipts.aggregate(**_count_aggregates()))


def ledger_block_counts(
    *, circular_id: int, block_ids: frozenset[int] | None = None
) -> dict[int, Counts]:
    return {block.pk: counts for block, counts in _blocks_counted(circular_id, block_ids)}


def receipts_by_block(receipts: QuerySet[Receipt]) -> QuerySet[Receipt, Mapping[str, Any]]:
    """Receipts grouped by block, in the blocks' order, for ``.annotate(<counts>)``; each
    row names its block for ``block_of``."""
    return receipts.values(
        "block_id", "block__name", "block__position", "block__community_id"
    ).order_by("block__position", "block_id")


def block_of(row: Mapping[str, Any]) -> Block:
    """The block of a ``receipts_by_block`` row, without reading it again."""
    return Block(
        pk=row["block_id"],
        name=row["block__name"],
        position=row["block__position"],
        community_id=row["block__community_id"],
    )


def _blocks_counted(
    circular_id: int, block_ids: frozenset[int] | None
) -> list[tuple[Block, Counts]]:
    """Each block of the circular (in its order) with its counts, in one query."""
    rows = receipts_by_block(_receipts_counted(circular_id, block_ids)).annotate(
        **_count_aggregates()
    )
    return [(block_of(row), Counts.from_row(row)) for row in rows]


STATUS_CONFIRMED = "confirmed"
STATUS_OPENED = "opened"
STATUS_NOT_YET = "not_yet"


def receipt_status(receipt: Receipt) -> str:
    if receipt.confirmed_at is not None:
        return STATUS_CONFIRMED
    if receipt.opened_at is not None:
        return STATUS_OPENED
    return STATUS_NOT_YET


@dataclass
class LedgerBlock:
    block: Block
    counts: Counts
    rows: list[Receipt] = field(default_factory=list)
    paper: Any = None  # circulars.paper.PaperStatus, filled in by the view


@dataclass
class Ledger:
    circular: Circular
    counts: Counts
    blocks: list[LedgerBlock]
    all_blocks_visible: bool
    filter_status: str
    filter_block: int | None
    filter_method: str
    generated_at: datetime | None = None
    # Large associations: rows only for one chosen block (block totals for all).
    rows_folded: bool = False

    @property
    def chosen(self) -> LedgerBlock | None:
        """The block whose rows are shown, when one was chosen (as ``AnswerSheet.chosen``)."""
        return next((item for item in self.blocks if item.block.pk == self.filter_block), None)


def ledger_snapshot(
    *,
    access: Access,
    circular: Circular,
    status: str = "",
    block_id: int | None = None,
    method: str = "",
) -> Ledger:
    """The ledger the user may see, in a constant number of queries whatever its size."""
    from django.utils import timezone

    visible = circular_staff_block_ids(access=access, circular=circular)
    receipts = circular_receipts(circular)
    if visible is not None:
        receipts = receipts.filter(block_id__in=visible)
    blocks_counted = _blocks_counted(circular.pk, visible)
    block_id = block_chosen(block_id, (block.pk for block, _ in blocks_counted))
    totals = Counts.added(counts for _, counts in blocks_counted)
    rows = (
        receipts.select_related("household", "confirmed_by", "recorded_by")
        .annotate(on_paper=paper_annotation())
        .prefetch_related(_notification_steps())
    )
    if status == STATUS_CONFIRMED:
        rows = rows.filter(confirmed_at__isnull=False)
    elif status == STATUS_OPENED:
        rows = rows.filter(confirmed_at__isnull=True, opened_at__isnull=False)
    elif status == STATUS_NOT_YET:
        rows = rows.filter(confirmed_at__isnull=True)
    if block_id is not None:
        rows = rows.filter(block_id=block_id)
    if method:
        rows = rows.filter(method=method)
    rows = rows.order_by("household__circulation_order", "household_id")
    by_block = {
        block.pk: LedgerBlock(block=block, counts=counts) for block, counts in blocks_counted
    }
    # The ledger was the first: 2,000 rows were a 5 MB page that took seconds to render.
    folded = rows_folded(total=totals.total, block_id=block_id)
    for row in () if folded else rows:
        if row.block_id in by_block:
            by_block[row.block_id].rows.append(row)
    return Ledger(
        circular=circular,
        counts=totals,
        blocks=list(by_block.values()),
        all_blocks_visible=visible is None,
        filter_status=status,
        filter_block=block_id,
        filter_method=method,
        generated_at=timezone.now(),
        rows_folded=folded,
    )


def _notification_steps() -> Prefetch:
    """The steps already taken for each row: 「通知: プッシュ 10:02, メール 10:32」."""
    from notifications.models import Delivery, DeliveryStatus

    return Prefetch(
        "deliveries",
        queryset=Delivery.objects.filter(
            # A failed attempt waiting for its retry shows too: the ledger says what failed.
            Q(status__in=[DeliveryStatus.SENT, DeliveryStatus.FAILED])
            | Q(status=DeliveryStatus.PENDING, attempts__gt=0)
        ).order_by("due_at", "pk"),
        to_attr="notification_steps",
    )


def paper_annotation() -> ExpressionWrapper:
    """``paper_q()`` as a boolean column, for ``.annotate(on_paper=...)``."""
    return ExpressionWrapper(paper_q(), output_field=BooleanField())


def ledger_row(*, access: Access, circular: Circular, household_id: int) -> Receipt:
    visible = circular_staff_block_ids(access=access, circular=circular)
    rows = Receipt.objects.filter(circular=circular, household_id=household_id)
    if visible is not None:
        rows = rows.filter(block_id__in=visible)
    row = (
        rows.select_related("household", "confirmed_by", "recorded_by")
        .annotate(on_paper=paper_annotation())
        .prefetch_related(_notification_steps())
        .first()
    )
    if row is None:
        raise Http404
    return row


def followup_receipts(*, access: Access, today: date | None = None) -> list[Receipt]:
    """The 班長's follow-up list: open receipts in their blocks that need a person — paper
    households, households the ladder escalated to the 班長, and unreachable households —
    for circulars still going round."""
    from django.utils import timezone

    from notifications.models import Channel, Delivery, DeliveryStatus

    today = today or timezone.localdate()
    recent = timezone.now() - timedelta(days=30)
    escalated = Delivery.objects.filter(
        receipt=OuterRef("pk"),
        channel=Channel.LEADER,
        status__in=[DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.QUEUED],
    )
    receipts = (
        Receipt.objects.filter(
            circular__community=access.community,
            block__community=access.community,  # no row less: see circular_receipts
            circular__status=CircularStatus.PUBLISHED,
            confirmed_at__isnull=True,
            household__isnull=False,
        )
        # Safety checks have their own part of the list (safety.safety_followup): a
        # confirmation without an answer would say nothing about the household.
        .exclude(circular__kind=CircularKind.SAFETY)
        .filter(
            Q(circular__due_date__gte=today)
            | Q(circular__due_date__isnull=True, circular__published_at__gte=recent)
        )
    )
    if not access.is_officer:
        receipts = receipts.filter(block_id__in=access.block_ids)
    return list(
        receipts.annotate(on_paper=paper_annotation(), escalated=Exists(escalated))
        .filter(Q(on_paper=True) | Q(escalated=True))
        .select_related("household", "household__block", "circular")
        .order_by(
            "household__block__position",
            "household__circulation_order",
            "household_id",
            "circular__due_date",
        )
    )
