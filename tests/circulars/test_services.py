"""Writes of circulars and receipts: publishing, scheduling, corrections, the 確認印."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.utils import timezone

from circulars import services
from circulars.models import Circular, CircularStatus, Priority, Receipt, ReceiptMethod
from circulars.selectors import ledger_counts
from circulars.services import CircularData, ConfirmResult
from communities import services as community_services
from communities.models import Block
from tests.conftest import Town
from tests.factories import HouseholdFactory


def draft(
    town: Town,
    *,
    title: str = "ごみ収集日の変更について",
    blocks: list[Block] | None = None,
    author: User | None = None,
) -> Circular:
    return services.circular_create(
        community=town.community,
        author=author or town.chair,
        data=CircularData(
            title=title,
            body="4月から燃えるごみは火曜と金曜です。",
            all_blocks=blocks is None,
            blocks=blocks or [],
        ),
    )


def published(town: Town, *, blocks: list[Block] | None = None) -> Circular:
    return services.circular_publish(circular=draft(town, blocks=blocks))


def receipt_households(circular: Circular) -> list[int | None]:
    return sorted(
        Receipt.objects.filter(circular=circular).values_list("household_id", flat=True),
        key=lambda pk: pk or 0,
    )


# --- Publishing -------------------------------------------------------------------------


def test_publish_to_all_blocks_makes_one_receipt_per_household(town: Town) -> None:
    extra = HouseholdFactory.create(block=town.block1, label="鈴木")
    circular = published(town)

    assert circular.status == CircularStatus.PUBLISHED
    assert circular.published_at is not None
    assert receipt_households(circular) == sorted(
        [town.household1.pk, town.household2.pk, extra.pk]
    )
    blocks = dict(Receipt.objects.filter(circular=circular).values_list("household_id", "block_id"))
    assert blocks == {
        town.household1.pk: town.block1.pk,
        extra.pk: town.block1.pk,
        town.household2.pk: town.block2.pk,
    }
    # The other association's households are never part of the round.
    assert not Receipt.objects.filter(
        circular=circular, household__community=town.other_community
    ).exists()
    assert not Receipt.objects.filter(confirmed_at__isnull=False).exists()
    assert not Receipt.objects.filter(opened_at__isnull=False).exists()


def test_publish_to_chosen_blocks_reaches_only_those(town: Town) -> None:
    circular = published(town, blocks=[town.block2])
    assert receipt_households(circular) == [town.household2.pk]


def test_publishing_twice_changes_nothing(town: Town) -> None:
    circular = published(town)
    first_published_at = circular.published_at
    receipts = list(Receipt.objects.filter(circular=circular).values_list("pk", flat=True))

    again = services.circular_publish(circular=circular, now=timezone.now() + timedelta(hours=1))

    assert again.published_at == first_published_at
    assert list(Receipt.objects.filter(circular=circular).values_list("pk", flat=True)) == receipts


def test_publish_needs_a_title(town: Town) -> None:
    circular = draft(town)
    Circular.objects.filter(pk=circular.pk).update(title="  ")
    with pytest.raises(ValidationError):
        services.circular_publish(circular=circular)
    circular.refresh_from_db()
    assert circular.status == CircularStatus.DRAFT
    assert not Receipt.objects.filter(circular=circular).exists()


def test_create_validates_blocks_of_another_association(town: Town) -> None:
    foreign_block = Block.objects.get(community=town.other_community)
    with pytest.raises(ValidationError) as error:
        draft(town, blocks=[foreign_block])
    assert "blocks" in error.value.message_dict
    with pytest.raises(ValidationError):
        services.circular_create(
            community=town.community,
            author=town.chair,
            data=CircularData(title="宛先なし", all_blocks=False, blocks=[]),
        )


def test_scheduled_circular_is_published_once_when_due(town: Town) -> None:
    now = timezone.now()
    circular = services.circular_publish(circular=draft(town), publish_at=now + timedelta(hours=2))
    assert circular.status == CircularStatus.SCHEDULED
    assert circular.published_at is None
    assert not Receipt.objects.filter(circular=circular).exists()

    # Not yet due.
    assert services.circulars_publish_due(now=now + timedelta(hours=1)) == 0
    circular.refresh_from_db()
    assert circular.status == CircularStatus.SCHEDULED

    due = now + timedelta(hours=2, minutes=1)
    assert services.circulars_publish_due(now=due) == 1
    assert services.circulars_publish_due(now=due + timedelta(minutes=1)) == 0
    circular.refresh_from_db()
    assert circular.status == CircularStatus.PUBLISHED
    assert circular.published_at == due
    assert receipt_households(circular) == sorted([town.household1.pk, town.household2.pk])


def test_unscheduled_circular_is_not_published(town: Town) -> None:
    now = timezone.now()
    circular = services.circular_publish(circular=draft(town), publish_at=now + timedelta(hours=1))
    services.circular_unschedule(circular=circular)
    assert services.circulars_publish_due(now=now + timedelta(days=1)) == 0
    circular.refresh_from_db()
    assert circular.status == CircularStatus.DRAFT


def test_publish_at_in_the_past_publishes_now(town: Town) -> None:
    now = timezone.now()
    circular = services.circular_publish(
        circular=draft(town), publish_at=now - timedelta(minutes=5), now=now
    )
    assert circular.status == CircularStatus.PUBLISHED
    assert circular.published_at == now


def test_editing_a_draft_is_not_a_correction(town: Town) -> None:
    circular = draft(town)
    circular = services.circular_update(
        circular=circular, data=CircularData(title="新しい題", body="本文")
    )
    assert circular.corrected_at is None
    assert circular.revision == 1
    assert circular.title == "新しい題"


def test_editing_after_publishing_is_visible_and_keeps_receipts(town: Town) -> None:
    circular = published(town)
    services.receipt_confirm(circular=circular, household=town.household1, method=ReceiptMethod.APP)
    before = {r.pk: r.confirmed_at for r in Receipt.objects.filter(circular=circular)}

    circular = services.circular_update(
        circular=circular,
        data=CircularData(title="ごみ収集日の変更について（訂正）", body="火曜と土曜です。"),
    )

    assert circular.corrected_at is not None
    assert circular.revision == 2
    assert circular.status == CircularStatus.PUBLISHED
    assert {r.pk: r.confirmed_at for r in Receipt.objects.filter(circular=circular)} == before
    counts = ledger_counts(circular_id=circular.pk)
    assert (counts.total, counts.confirmed) == (2, 1)

    circular = services.circular_update(circular=circular, data=CircularData(title="再訂正"))
    assert circular.revision == 3


def test_adding_a_block_after_publishing_adds_its_receipts(town: Town) -> None:
    circular = published(town, blocks=[town.block1])
    assert receipt_households(circular) == [town.household1.pk]

    circular = services.circular_update(
        circular=circular,
        data=CircularData(
            title=circular.title, all_blocks=False, blocks=[town.block1, town.block2]
        ),
    )
    assert receipt_households(circular) == sorted([town.household1.pk, town.household2.pk])

    # Taking the block out again keeps the receipts it already has.
    circular = services.circular_update(
        circular=circular,
        data=CircularData(title=circular.title, all_blocks=False, blocks=[town.block1]),
    )
    assert receipt_households(circular) == sorted([town.household1.pk, town.household2.pk])


def test_copy_is_a_new_draft_with_the_same_text(town: Town) -> None:
    original = published(town, blocks=[town.block2])
    copy = services.circular_copy(circular=original, author=town.officer)
    assert copy.pk != original.pk
    assert copy.status == CircularStatus.DRAFT
    assert (copy.title, copy.body, copy.all_blocks) == (
        original.title,
        original.body,
        original.all_blocks,
    )
    assert list(copy.blocks.all()) == [town.block2]
    assert copy.author == town.officer
    assert not Receipt.objects.filter(circular=copy).exists()


# --- Opening and confirming -------------------------------------------------------------


def test_receipt_open_sets_opened_once_and_never_confirms(town: Town) -> None:
    circular = published(town)
    first = timezone.now()
    receipt = services.receipt_open(circular=circular, household=town.household1, now=first)
    assert receipt.opened_at == first
    assert receipt.confirmed_at is None
    assert receipt.method == ""

    services.receipt_open(
        circular=circular, household=town.household1, now=first + timedelta(hours=1)
    )
    receipt.refresh_from_db()
    assert receipt.opened_at == first
    assert receipt.confirmed_at is None
    assert receipt.version == 1
    counts = ledger_counts(circular_id=circular.pk)
    assert (counts.opened, counts.confirmed, counts.not_yet) == (1, 0, 1)


def test_receipt_confirm_is_idempotent(town: Town) -> None:
    circular = published(town)
    member = town.household1.members.get()
    key = uuid.uuid4()

    first = services.receipt_confirm(
        circular=circular,
        household=town.household1,
        method=ReceiptMethod.APP,
        member=member,
        recorded_by=town.resident1,
        key=key,
    )
    assert first == ConfirmResult(receipt=first.receipt, recorded=True, replay=False)
    assert first.receipt.confirmed_at is not None
    assert first.receipt.opened_at == first.receipt.confirmed_at
    assert first.receipt.method == ReceiptMethod.APP
    assert first.receipt.confirmed_by == member
    confirmed_at = first.receipt.confirmed_at

    # The same client retrying the same tap: a replay, nothing new.
    replay = services.receipt_confirm(
        circular=circular,
        household=town.household1,
        method=ReceiptMethod.APP,
        member=member,
        key=key,
    )
    assert (replay.recorded, replay.replay) == (False, True)

    # Another tap (new key): already recorded, not a replay.
    second = services.receipt_confirm(
        circular=circular,
        household=town.household1,
        method=ReceiptMethod.APP,
        member=member,
        key=uuid.uuid4(),
    )
    assert (second.recorded, second.replay) == (False, False)

    # A 班長's proxy after the app confirmation records nothing.
    proxy = services.receipt_confirm(
        circular=circular,
        household=town.household1,
        method=ReceiptMethod.PROXY_VISIT,
        recorded_by=town.leader1,
    )
    assert (proxy.recorded, proxy.replay) == (False, False)
    assert proxy.receipt.method == ReceiptMethod.APP
    assert proxy.receipt.recorded_by == town.resident1
    assert proxy.receipt.confirmed_at == confirmed_at
    assert Receipt.objects.filter(circular=circular, household=town.household1).count() == 1
    assert ledger_counts(circular_id=circular.pk).confirmed == 1


def test_confirm_after_open_keeps_the_opening_time(town: Town) -> None:
    circular = published(town)
    opened = timezone.now() - timedelta(hours=3)
    services.receipt_open(circular=circular, household=town.household2, now=opened)
    result = services.receipt_confirm(
        circular=circular, household=town.household2, method=ReceiptMethod.PAPER
    )
    assert result.receipt.opened_at == opened
    assert result.receipt.confirmed_at is not None
    assert result.receipt.confirmed_at > opened
    assert result.receipt.version == 2


@pytest.mark.parametrize("status", ["draft", "scheduled"])
def test_confirm_on_an_unpublished_circular_is_refused(town: Town, status: str) -> None:
    circular = draft(town)
    if status == "scheduled":
        circular = services.circular_publish(
            circular=circular, publish_at=timezone.now() + timedelta(days=1)
        )
    with pytest.raises(ValidationError):
        services.receipt_confirm(
            circular=circular, household=town.household1, method=ReceiptMethod.APP
        )
    assert not Receipt.objects.filter(circular=circular).exists()


def test_confirm_for_a_household_not_sent_to_is_refused(town: Town) -> None:
    circular = published(town, blocks=[town.block2])
    with pytest.raises(ValidationError):
        services.receipt_confirm(
            circular=circular, household=town.household1, method=ReceiptMethod.APP
        )
    with pytest.raises(ValidationError):
        services.receipt_open(circular=circular, household=town.household1)
    assert receipt_households(circular) == [town.household2.pk]


def test_confirm_with_an_unknown_method_is_refused(town: Town) -> None:
    circular = published(town)
    with pytest.raises(ValidationError):
        services.receipt_confirm(circular=circular, household=town.household1, method="fax")
    assert not Receipt.objects.filter(confirmed_at__isnull=False).exists()


def test_a_household_that_joins_later_can_still_confirm(town: Town) -> None:
    circular = published(town)
    newcomer = HouseholdFactory.create(block=town.block2, label="新井")
    result = services.receipt_confirm(
        circular=circular, household=newcomer, method=ReceiptMethod.PROXY_HAND
    )
    assert result.recorded
    assert result.receipt.block_id == town.block2.pk
    assert ledger_counts(circular_id=circular.pk).total == 3


def test_removed_household_keeps_an_anonymous_receipt(town: Town) -> None:
    circular = published(town)
    services.receipt_confirm(
        circular=circular, household=town.household1, method=ReceiptMethod.PAPER
    )
    before = ledger_counts(circular_id=circular.pk)
    receipt_pk = Receipt.objects.get(circular=circular, household=town.household1).pk

    community_services.household_remove(household=town.household1)

    receipt = Receipt.objects.get(pk=receipt_pk)
    assert receipt.household_id is None
    assert receipt.block_id == town.block1.pk
    assert receipt.confirmed_at is not None
    after = ledger_counts(circular_id=circular.pk)
    # The same counts; only "on paper" may change: nobody can log in for it any more.
    assert {**after.as_dict(), "paper": 0} == {**before.as_dict(), "paper": 0}
    assert (after.total, after.confirmed) == (2, 1)
    block1 = ledger_counts(circular_id=circular.pk, block_ids=frozenset({town.block1.pk}))
    assert (block1.total, block1.confirmed) == (1, 1)


def test_confirming_a_receipt_read_before_it_changed_keeps_the_true_version(town: Town) -> None:
    """The page read the receipt; another phone opened it before the tap arrived. The
    confirmation still lands, with the version the database holds (the ledger orders
    events by it), without losing the first opening time."""
    circular = published(town)
    stale = Receipt.objects.get(circular=circular, household=town.household1)
    opened = services.receipt_open(circular=circular, household=town.household1)
    assert opened.version == stale.version + 1

    result = services.receipt_confirm(
        circular=circular, household=town.household1, method="app", receipt=stale
    )

    stored = Receipt.objects.get(pk=stale.pk)
    assert result.recorded
    assert stored.version == opened.version + 1 == result.receipt.version
    assert stored.opened_at == opened.opened_at == result.receipt.opened_at
    assert stored.confirmed_at == result.receipt.confirmed_at
    again = services.receipt_confirm(
        circular=circular, household=town.household1, method="app", receipt=stale
    )
    assert not again.recorded and Receipt.objects.get(pk=stale.pk).version == stored.version


# --- Races (PostgreSQL) -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_phones_confirming_at_once_record_one_confirmation(town: Town) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs concurrent writers and row locks (PostgreSQL)")
    circular = services.circular_publish(
        circular=draft(town, title="同時確認", blocks=[town.block1])
    )
    household = town.household1

    for round_ in range(20):
        if round_ % 2:
            # Odd rounds: the receipt does not exist yet, so both also race to create it.
            Receipt.objects.filter(circular=circular, household=household).delete()
        else:
            Receipt.objects.filter(circular=circular, household=household).update(
                confirmed_at=None, opened_at=None, method="", confirm_key=None, version=0
            )
        barrier = threading.Barrier(2, timeout=10)
        results: list[ConfirmResult] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def confirm(
            method: str,
            barrier: threading.Barrier = barrier,
            results: list[ConfirmResult] = results,
            errors: list[BaseException] = errors,
            lock: threading.Lock = lock,
        ) -> None:
            try:
                barrier.wait()
                result = services.receipt_confirm(
                    circular=circular, household=household, method=method, key=uuid.uuid4()
                )
                with lock:
                    results.append(result)
            except BaseException as error:  # reported below
                with lock:
                    errors.append(error)
            finally:
                connections.close_all()

        threads = [
            threading.Thread(target=confirm, args=(ReceiptMethod.APP,)),
            threading.Thread(target=confirm, args=(ReceiptMethod.PROXY_PHONE,)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        assert errors == [], f"round {round_}: {errors!r}"
        assert len(results) == 2
        assert sum(result.recorded for result in results) == 1, f"round {round_}"
        receipts = Receipt.objects.filter(circular=circular, household=household)
        assert receipts.count() == 1
        receipt = receipts.get()
        assert receipt.confirmed_at is not None
        winner = next(result for result in results if result.recorded)
        assert receipt.method == winner.receipt.method
        assert ledger_counts(circular_id=circular.pk).confirmed == 1


def test_priority_and_due_date_are_kept(town: Town) -> None:
    due = (timezone.now() + timedelta(days=7)).date()
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(
            title="  断水のお知らせ  ",
            body="明日\r\n午前中は断水します。",
            priority=Priority.URGENT,
            due_date=due,
        ),
    )
    assert circular.title == "断水のお知らせ"
    assert circular.body == "明日\n午前中は断水します。"
    assert circular.priority == Priority.URGENT
    assert circular.due_date == due
    with pytest.raises(ValidationError):
        services.circular_create(
            community=town.community,
            author=town.chair,
            data=CircularData(title="題", priority="shouting"),
        )
