"""The paper path's services: who gets paper, paper sign-offs, undo, 全員確認, the print log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from circulars import paper, services
from circulars.models import Circular, PrintRecord, Receipt, ReceiptMethod
from circulars.selectors import ledger_block_counts, ledger_counts
from circulars.services import CircularData
from communities import services as community_services
from communities.models import Block, DeliveryMode, Household, MemberKind, PaperDistribution
from notifications.groups import ledger_block_group
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory, UserFactory, give_role
from tests.realtime import listen

type Capture = Callable[..., Any]


def publish(
    town: Town, *, title: str = "ごみ収集日の変更について", blocks: list[Block] | None = None
) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(
            title=title,
            body="4月から燃えるごみは火曜と金曜です。",
            all_blocks=blocks is None,
            blocks=blocks or [],
        ),
    )
    return services.circular_publish(circular=circular)


def paper_ids(circular: Circular, block: Block) -> list[int | None]:
    return [
        receipt.household_id for receipt in paper.paper_receipts(circular=circular, block=block)
    ]


def with_member(household: Household, *, active: bool = True) -> Household:
    member = MemberFactory.create(household=household)
    if not active:
        User.objects.filter(pk=member.user_id).update(is_active=False)
    return household


@pytest.fixture
def helper1(town: Town) -> User:
    helper = UserFactory.create()
    give_role(user=helper, community=town.community, role="helper", block=town.block1)
    return helper


# --- Who gets paper ---------------------------------------------------------------------


def test_paper_rule_mode_and_working_login(town: Town) -> None:
    # town.household1 is mode app with a working member: not on paper.
    no_member = HouseholdFactory.create(block=town.block1, label="青木", circulation_order=5)
    inactive = with_member(
        HouseholdFactory.create(block=town.block1, label="石井", circulation_order=3),
        active=False,
    )
    paper_mode = with_member(
        HouseholdFactory.create(
            block=town.block1, label="上田", circulation_order=4, delivery_mode=DeliveryMode.PAPER
        )
    )
    both_mode = with_member(
        HouseholdFactory.create(
            block=town.block1, label="江藤", circulation_order=1, delivery_mode=DeliveryMode.BOTH
        )
    )
    circular = publish(town)

    # Circulation order, whatever the creation order; the app household is left out.
    assert paper_ids(circular, town.block1) == [
        both_mode.pk,
        inactive.pk,
        paper_mode.pk,
        no_member.pk,
    ]
    assert paper.paper_households(circular=circular, block=town.block1) == [
        both_mode,
        inactive,
        paper_mode,
        no_member,
    ]
    # block2's only household has a working member.
    assert paper_ids(circular, town.block2) == []

    # The ledger counts with the same rule.
    counts = ledger_block_counts(circular_id=circular.pk)
    assert counts[town.block1.pk].total == 5
    assert counts[town.block1.pk].paper_out == 4
    assert counts[town.block2.pk].paper_out == 0
    assert ledger_counts(circular_id=circular.pk).paper_out == 4
    status = paper.paper_status(circular=circular)
    assert status[town.block1.pk].paper_households == 4
    assert status[town.block2.pk].paper_households == 0

    # A paper household that confirms is no longer "out", but stays on the sheet.
    paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=no_member.pk, recorded_by=town.leader1
    )
    assert ledger_counts(circular_id=circular.pk).paper_out == 3
    assert no_member.pk in paper_ids(circular, town.block1)


def test_paper_distribution_circular_overrides_community(town: Town) -> None:
    circular = publish(town)
    assert paper.paper_distribution(circular=circular) == PaperDistribution.CIRCULATE
    town.community.paper_distribution = PaperDistribution.EACH
    town.community.save()
    circular.refresh_from_db()
    assert paper.paper_distribution(circular=circular) == PaperDistribution.EACH
    circular.paper_distribution = PaperDistribution.BOTH
    circular.save()
    assert paper.paper_distribution(circular=circular) == PaperDistribution.BOTH


def test_household_that_joins_leaves_the_paper_round(town: Town, client: Client) -> None:
    joining = HouseholdFactory.create(block=town.block1, label="小川", circulation_order=7)
    before = publish(town, title="四月の回覧")
    assert paper_ids(before, town.block1) == [joining.pk]

    issued = community_services.household_invite_issue(household=joining, created_by=town.leader1)
    community_services.household_invite_redeem(
        token=issued.token, display_name="小川 花子", kind=MemberKind.RESIDENT, consent=True
    )
    joining.refresh_from_db()
    assert joining.switched_to_app_at is not None

    after = publish(town, title="五月の回覧")
    assert paper_ids(after, town.block1) == []
    assert ledger_counts(circular_id=after.pk).paper_out == 0

    # The household's 班長 sees the switch on the block page.
    client.force_login(town.leader1)
    page = client.get(
        reverse("communities:block_detail", args=[town.community.slug, town.block1.pk])
    )
    assert page.status_code == 200
    assert "スマホに切替" in page.content.decode()

    # A second phone does not move the date.
    first_switch = joining.switched_to_app_at
    second = community_services.household_invite_issue(household=joining, created_by=None)
    community_services.household_invite_redeem(
        token=second.token, display_name="小川 太郎", kind=MemberKind.RESIDENT, consent=True
    )
    joining.refresh_from_db()
    assert joining.switched_to_app_at == first_switch


# --- Sign-offs --------------------------------------------------------------------------


def test_signoff_is_idempotent_and_recorded_by_the_helper(town: Town, helper1: User) -> None:
    household = HouseholdFactory.create(block=town.block1, label="青木")
    circular = publish(town)

    first = paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=household.pk, recorded_by=helper1
    )
    second = paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=household.pk, recorded_by=town.chair
    )

    assert first.recorded is True
    assert second.recorded is False
    receipts = Receipt.objects.filter(circular=circular, household=household)
    assert receipts.count() == 1
    receipt = receipts.get()
    assert receipt.method == ReceiptMethod.PAPER
    assert receipt.recorded_by == helper1
    assert receipt.confirmed_by is None
    assert receipt.confirmed_at == first.receipt.confirmed_at


def test_signoff_refuses_households_off_the_round(town: Town) -> None:
    other_block = HouseholdFactory.create(block=town.block2, label="木村")
    circular = publish(town)

    with pytest.raises(ValidationError):
        # An app household with a working member is not on the paper round.
        paper.paper_signoff_record(
            circular=circular,
            block=town.block1,
            household_id=town.household1.pk,
            recorded_by=town.leader1,
        )
    with pytest.raises(ValidationError):
        # A paper household of another block.
        paper.paper_signoff_record(
            circular=circular,
            block=town.block1,
            household_id=other_block.pk,
            recorded_by=town.leader1,
        )
    foreign = Household.objects.get(community=town.other_community)
    with pytest.raises(ValidationError):
        paper.paper_signoff_record(
            circular=circular, block=town.block1, household_id=foreign.pk, recorded_by=town.chair
        )
    assert not Receipt.objects.filter(circular=circular, confirmed_at__isnull=False).exists()


def test_undo_within_the_window_reopens_the_receipt(town: Town, helper1: User) -> None:
    household = HouseholdFactory.create(block=town.block1, label="青木")
    circular = publish(town)
    recorded = paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=household.pk, recorded_by=helper1
    ).receipt

    receipt = paper.paper_signoff_undo(
        circular=circular,
        block=town.block1,
        household_id=household.pk,
        user=helper1,
        now=timezone.now() + timedelta(minutes=9),
    )

    assert receipt.confirmed_at is None
    # The tap had also marked it opened; the undo takes that back too.
    assert receipt.opened_at is None
    assert receipt.method == ""
    assert receipt.recorded_by is None
    assert receipt.version == recorded.version + 1
    assert ledger_counts(circular_id=circular.pk).confirmed == 0
    # Undoing an open receipt changes nothing; a new tap records again.
    again = paper.paper_signoff_undo(
        circular=circular, block=town.block1, household_id=household.pk, user=helper1
    )
    assert again.version == receipt.version
    assert paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=household.pk, recorded_by=helper1
    ).recorded


def test_undo_keeps_an_earlier_opening(town: Town, helper1: User) -> None:
    # Mode both: the family opened it on the phone, then stamped the paper sheet.
    both = with_member(
        HouseholdFactory.create(block=town.block1, label="江藤", delivery_mode=DeliveryMode.BOTH)
    )
    circular = publish(town)
    opened_at = services.receipt_open(circular=circular, household=both).opened_at
    assert opened_at is not None
    paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=both.pk, recorded_by=helper1
    )

    receipt = paper.paper_signoff_undo(
        circular=circular, block=town.block1, household_id=both.pk, user=helper1
    )

    assert receipt.confirmed_at is None
    assert receipt.opened_at == opened_at


def test_undo_after_the_window_is_refused(town: Town, helper1: User) -> None:
    household = HouseholdFactory.create(block=town.block1, label="青木")
    circular = publish(town)
    paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=household.pk, recorded_by=helper1
    )
    Receipt.objects.filter(circular=circular, household=household).update(
        confirmed_at=timezone.now() - timedelta(minutes=11)
    )

    with pytest.raises(ValidationError) as error:
        paper.paper_signoff_undo(
            circular=circular, block=town.block1, household_id=household.pk, user=helper1
        )

    assert "取り消せなく" in " ".join(error.value.messages) or "undone" in " ".join(
        error.value.messages
    )
    receipt = Receipt.objects.get(circular=circular, household=household)
    assert receipt.confirmed_at is not None
    assert receipt.method == ReceiptMethod.PAPER


def test_undo_of_an_app_confirmation_is_refused(town: Town, helper1: User) -> None:
    # Mode both: on the paper sheet, yet the family confirmed on the phone.
    both = HouseholdFactory.create(block=town.block1, label="江藤", delivery_mode=DeliveryMode.BOTH)
    member = MemberFactory.create(household=both)
    circular = publish(town)
    services.receipt_confirm(
        circular=circular, household=both, method=ReceiptMethod.APP, member=member
    )

    with pytest.raises(ValidationError):
        paper.paper_signoff_undo(
            circular=circular, block=town.block1, household_id=both.pk, user=helper1
        )

    receipt = Receipt.objects.get(circular=circular, household=both)
    assert receipt.method == ReceiptMethod.APP
    assert receipt.confirmed_by == member
    # Tapping the paper toggle for it records nothing new either.
    result = paper.paper_signoff_record(
        circular=circular, block=town.block1, household_id=both.pk, recorded_by=helper1
    )
    assert result.recorded is False
    assert Receipt.objects.get(pk=receipt.pk).method == ReceiptMethod.APP


def test_signoff_all_records_remaining_paper_households_only(town: Town, helper1: User) -> None:
    paper_households = [
        HouseholdFactory.create(block=town.block1, label=f"紙{n}", circulation_order=n)
        for n in range(4)
    ]
    app_household = with_member(HouseholdFactory.create(block=town.block1, label="アプリ"))
    block2_paper = HouseholdFactory.create(block=town.block2, label="別班")
    circular = publish(town)
    paper.paper_signoff_record(
        circular=circular,
        block=town.block1,
        household_id=paper_households[0].pk,
        recorded_by=town.leader1,
    )

    count = paper.paper_signoff_all(circular=circular, block=town.block1, recorded_by=helper1)

    assert count == 3
    rows = {
        r.household_id: r
        for r in Receipt.objects.filter(circular=circular).select_related("recorded_by")
    }
    assert rows[paper_households[0].pk].recorded_by == town.leader1
    for household in paper_households[1:]:
        assert rows[household.pk].method == ReceiptMethod.PAPER
        assert rows[household.pk].recorded_by == helper1
    for untouched in (app_household, town.household1, block2_paper, town.household2):
        assert rows[untouched.pk].confirmed_at is None
    # Nothing left: a second 全員確認 records nobody.
    assert paper.paper_signoff_all(circular=circular, block=town.block1, recorded_by=helper1) == 0


def test_signoff_events_reach_the_block_group_after_commit(
    town: Town, helper1: User, memory_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    first, second = (
        HouseholdFactory.create(block=town.block1, label=f"紙{n}", circulation_order=n)
        for n in range(2)
    )
    circular = publish(town)
    groups = {
        "block1": ledger_block_group(circular.pk, town.block1.pk),
        "block2": ledger_block_group(circular.pk, town.block2.pk),
    }
    pending: list[Any] = []

    def record() -> None:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            paper.paper_signoff_record(
                circular=circular, block=town.block1, household_id=first.pk, recorded_by=helper1
            )
        pending.extend(callbacks)

    # Until the transaction commits, nothing leaves.
    assert listen(groups, record) == {"block1": [], "block2": []}
    assert len(pending) == 1

    def commit_then_undo_and_all() -> None:
        for callback in pending:
            callback()
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            paper.paper_signoff_undo(
                circular=circular, block=town.block1, household_id=first.pk, user=helper1
            )
            paper.paper_signoff_all(circular=circular, block=town.block1, recorded_by=helper1)
        pending.extend(callbacks)

    received = listen(groups, commit_then_undo_and_all)

    assert len(pending) == 4  # record, undo, and 全員確認 of two households
    assert received["block2"] == []
    payloads = [message["payload"] for message in received["block1"]]
    assert [(p["household_id"], p["status"], p["method"]) for p in payloads] == [
        (first.pk, "confirmed", "paper"),
        (first.pk, "not_yet", ""),  # undone: back to not yet, not "opened"
        (first.pk, "confirmed", "paper"),
        (second.pk, "confirmed", "paper"),
    ]
    assert all(p["type"] == "ledger.receipt" for p in payloads)
    assert payloads[-1]["block_counts"]["confirmed"] == 2
    assert payloads[-1]["block_counts"]["paper_out"] == 0
    versions = [p["version"] for p in payloads if p["household_id"] == first.pk]
    assert versions == sorted(versions) and len(set(versions)) == 3


# --- The print log ----------------------------------------------------------------------


def test_paper_status_counts_printed_and_collected(town: Town) -> None:
    block1_paper = [
        HouseholdFactory.create(block=town.block1, label=f"紙{n}", circulation_order=n)
        for n in range(3)
    ]
    block2_paper = HouseholdFactory.create(block=town.block2, label="別班")
    circular = publish(town)
    assert paper.paper_status(circular=circular)[town.block1.pk].printed == 0

    record = paper.print_record_create(
        circular=circular,
        block=town.block1,
        printed_by=town.leader1,
        household_ids=[h.pk for h in block1_paper[:2]],
        pages=4,
        furigana=True,
        large_print=False,
    )
    assert record.households == 2
    assert record.all_blocks is False
    # A reprint of the whole community covers the rest; households are counted once.
    paper.print_record_create(
        circular=circular,
        block=None,
        printed_by=town.chair,
        household_ids=[*(h.pk for h in block1_paper), block2_paper.pk],
        pages=9,
        furigana=False,
        large_print=True,
    )
    assert PrintRecord.objects.get(block=None).all_blocks is True
    for household in block1_paper[:2]:
        paper.paper_signoff_record(
            circular=circular, block=town.block1, household_id=household.pk, recorded_by=town.chair
        )

    status = paper.paper_status(circular=circular)
    assert (status[town.block1.pk].printed, status[town.block1.pk].collected) == (3, 2)
    assert (status[town.block2.pk].printed, status[town.block2.pk].collected) == (1, 0)
    assert status[town.block1.pk].last_printed_at is not None
