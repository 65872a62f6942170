"""安否確認: starting a check, households' reports (idempotent, order by tap time), the board."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.http import Http404
from django.utils import timezone

from circulars import safety, services
from circulars.models import (
    CircularKind,
    Priority,
    Receipt,
    ReceiptMethod,
    SafetyReport,
    SafetyStatus,
)
from communities.models import Member
from communities.selectors import community_access_get
from tests.factories import HouseholdFactory
from tests.notifications.test_ladder import DAY, at, give_email, give_push, rows

pytestmark = pytest.mark.django_db


def start(town, *, drill=False, **kwargs):
    return safety.safety_check_start(
        community=town.community, author=town.chair, drill=drill, **kwargs
    )


def labels(rows):
    return [row.household.label if row.household else "" for row in rows]


def member_of(user):
    return Member.objects.get(user=user)


def test_start_publishes_an_urgent_check_to_every_household(town):
    check = start(town, drill=True, message="震度5強の地震がありました。")
    assert check.kind == CircularKind.SAFETY
    assert check.drill is True
    assert check.priority == Priority.URGENT
    assert check.title == "【訓練】安否確認"
    assert check.published_at is not None
    households = set(Receipt.objects.filter(circular=check).values_list("household_id", flat=True))
    assert households == {town.household1.pk, town.household2.pk}


def test_a_real_check_has_no_drill_mark(town):
    assert start(town).title == "安否確認"


def test_start_goes_to_every_channel_at_once_even_in_quiet_hours(town):
    give_push(town.household1)
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 2, 30), tick=False):  # quiet hours
        check = start(town)
    assert rows(check, town.household1) == [
        ("publish", "email", "06/10 02:30"),
        ("publish", "push", "06/10 02:30"),
        ("ladder:2", "leader", "06/10 02:40"),  # the 班長 after minutes
    ]


def test_blocks_of_another_association_are_refused(town):
    from communities.models import Block

    other_block = Block.objects.get(community=town.other_community)
    with pytest.raises(ValidationError):
        start(town, blocks=[other_block])


def test_a_resident_answers_in_one_tap_and_confirms(town):
    check = start(town)
    result = safety.safety_report(
        circular=check,
        household=town.household1,
        status=SafetyStatus.HELP,
        note="  足を 怪我しています ",
        method=ReceiptMethod.APP,
        member=member_of(town.resident1),
        key=uuid.uuid4(),
    )
    assert result.status == SafetyStatus.HELP
    assert result.report.note == "足を 怪我しています"
    receipt = Receipt.objects.get(circular=check, household=town.household1)
    assert receipt.confirmed_at is not None
    assert receipt.method == ReceiptMethod.APP


def test_a_resent_report_changes_nothing(town):
    check = start(town)
    key = uuid.uuid4()
    for _ in range(3):
        result = safety.safety_report(
            circular=check,
            household=town.household1,
            status=SafetyStatus.SAFE,
            method=ReceiptMethod.APP,
            key=key,
        )
    assert result.replay is True
    assert SafetyReport.objects.filter(receipt__circular=check).count() == 1


def test_a_key_cannot_be_reused_for_another_household(town):
    check = start(town)
    key = uuid.uuid4()
    safety.safety_report(
        circular=check,
        household=town.household1,
        status=SafetyStatus.SAFE,
        method=ReceiptMethod.APP,
        key=key,
    )
    with pytest.raises(ValidationError) as error:
        safety.safety_report(
            circular=check,
            household=town.household2,
            status=SafetyStatus.SAFE,
            method=ReceiptMethod.APP,
            key=key,
        )
    assert "key" in error.value.message_dict


def test_an_offline_report_does_not_override_a_newer_visit(town):
    """Tapped 支援が必要 offline at 10:00; the 班長 visited at 10:20 (無事); the phone comes
    back online at 10:30 and sends its queued report: the visit still stands."""
    now = timezone.now()
    check = start(town, now=now - timedelta(hours=1))
    safety.safety_report(
        circular=check,
        household=town.household1,
        status=SafetyStatus.SAFE,
        method=ReceiptMethod.PROXY_VISIT,
        recorded_by=town.leader1,
        now=now - timedelta(minutes=10),
    )
    late = safety.safety_report(
        circular=check,
        household=town.household1,
        status=SafetyStatus.HELP,
        method=ReceiptMethod.APP,
        key=uuid.uuid4(),
        at=now - timedelta(minutes=30),
        now=now,
    )
    assert late.superseded is True
    assert late.status == SafetyStatus.SAFE
    assert SafetyReport.objects.filter(receipt__circular=check).count() == 2


def test_tap_times_are_clamped_to_the_check_and_now(town):
    now = timezone.now()
    check = start(town, now=now - timedelta(minutes=5))
    future = safety.safety_report(
        circular=check,
        household=town.household1,
        status=SafetyStatus.SAFE,
        method=ReceiptMethod.APP,
        at=now + timedelta(days=1),
        now=now,
    )
    assert future.report.reported_at == now
    past = safety.safety_report(
        circular=check,
        household=town.household2,
        status=SafetyStatus.SAFE,
        method=ReceiptMethod.APP,
        at=now - timedelta(days=30),
        now=now,
    )
    assert past.report.reported_at == check.published_at


def test_nobody_at_the_door_is_an_attempt_not_an_answer(town):
    check = start(town)
    result = safety.safety_report(
        circular=check,
        household=town.household1,
        status=SafetyStatus.ABSENT,
        method=ReceiptMethod.PROXY_VISIT,
        recorded_by=town.leader1,
    )
    assert result.status == ""
    assert Receipt.objects.get(circular=check, household=town.household1).confirmed_at is None
    with pytest.raises(ValidationError) as error:
        safety.safety_report(
            circular=check,
            household=town.household1,
            status=SafetyStatus.ABSENT,
            method=ReceiptMethod.APP,
        )
    assert "status" in error.value.message_dict


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"status": "fine"}, "status"),
        ({"status": "", "method": ReceiptMethod.APP}, "status"),
        ({"method": "carrier_pigeon"}, "method"),
        ({"note": "あ" * 201}, "note"),
    ],
)
def test_malformed_reports_name_the_field(town, fields, field):
    check = start(town)
    kwargs = {"status": SafetyStatus.SAFE, "method": ReceiptMethod.APP, "note": ""} | fields
    with pytest.raises(ValidationError) as error:
        safety.safety_report(circular=check, household=town.household1, **kwargs)
    assert field in error.value.message_dict
    assert not SafetyReport.objects.exists()


def test_reports_only_for_published_safety_checks(town):
    notice = services.circular_create(
        community=town.community, author=town.chair, data=services.CircularData(title="清掃")
    )
    services.circular_publish(circular=notice)
    with pytest.raises(Http404):
        safety.safety_report(
            circular=notice,
            household=town.household1,
            status=SafetyStatus.SAFE,
            method=ReceiptMethod.APP,
        )


def test_the_board_puts_needs_help_first_and_counts_unknowns(town):
    check = start(town)
    extra = HouseholdFactory.create(block=town.block1, label="鈴木")
    services.receipts_sync_for_household(household=extra)
    safety.safety_report(
        circular=check,
        household=town.household1,
        status=SafetyStatus.SAFE,
        method=ReceiptMethod.APP,
    )
    safety.safety_report(
        circular=check,
        household=extra,
        status=SafetyStatus.HELP,
        note="連絡がほしい",
        method=ReceiptMethod.PROXY_PHONE,
        recorded_by=town.leader1,
    )
    access = community_access_get(slug=town.community.slug, user=town.chair)
    board = safety.safety_board(access=access, circular=check)
    assert board.totals.as_dict() == {"households": 3, "safe": 1, "help": 1, "unknown": 1}
    assert labels(board.needs_help) == ["鈴木"]
    assert board.needs_help[0].__dict__["safety_note"] == "連絡がほしい"
    first = board.blocks[0]
    assert first.block == town.block1
    assert labels(first.rows) == ["鈴木", "山田"]
    assert board.blocks[1].counts.unknown == 1


def test_block_staff_see_their_own_blocks_only(town):
    check = start(town)
    access = community_access_get(slug=town.community.slug, user=town.leader1)
    board = safety.safety_board(access=access, circular=check)
    assert [item.block for item in board.blocks] == [town.block1]
    assert board.all_blocks_visible is False
    resident = community_access_get(slug=town.community.slug, user=town.resident1)
    with pytest.raises(Http404):
        safety.safety_board_for(access=resident, circular_id=check.pk)
    other = community_access_get(slug=town.other_community.slug, user=town.other_chair)
    with pytest.raises(Http404):
        safety.safety_board_for(access=other, circular_id=check.pk)


def test_the_board_reads_in_a_constant_number_of_queries(town, django_assert_max_num_queries):
    check = start(town)
    for index in range(30):
        household = HouseholdFactory.create(block=town.block2, label=f"世帯{index}")
        services.receipts_sync_for_household(household=household)
        safety.safety_report(
            circular=check, household=household, status=SafetyStatus.SAFE, method=ReceiptMethod.APP
        )
    access = community_access_get(slug=town.community.slug, user=town.chair)
    with django_assert_max_num_queries(3):
        board = safety.safety_board(access=access, circular=check)
    assert board.totals.safe == 30
