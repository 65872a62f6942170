"""Planning notifications with frozen time: who is told what, when, by which channel.

Times are Asia/Tokyo. Publishing calls ``deliveries_plan_on_publish``; these tests read the
``Delivery`` rows it writes (and, for quiet hours, what ``delivery_send`` does with them).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.core.mail import EmailMessage
from django.test import override_settings

from circulars import services
from circulars.models import Circular, Priority
from circulars.services import CircularData
from communities.models import Block, DeliveryMode, Household, Member
from notifications.delivery import delivery_send
from notifications.ladder import deliveries_plan_on_publish, in_quiet_hours, not_before_quiet_end
from notifications.models import Delivery, DeliveryStatus, PushSubscription
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory
from tests.fakes.push_service import BrowserSubscription

TOKYO = ZoneInfo("Asia/Tokyo")
PUBLIC_URL = "https://kairan.example.jp"


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TOKYO)


DAY = date(2031, 6, 10)  # a Tuesday


@pytest.fixture(autouse=True)
def public_url() -> Iterator[None]:
    with override_settings(KAIRAN_PUBLIC_URL=PUBLIC_URL):
        yield


@pytest.fixture
def outbox(db: None) -> list[EmailMessage]:
    mail.outbox = []
    return mail.outbox


def publish_circular(
    town: Town,
    *,
    title: str = "ごみ収集日の変更について",
    priority: str = Priority.NORMAL,
    due_date: date | None = None,
    blocks: list[Block] | None = None,
) -> Circular:
    """Create and publish now (the frozen now): the real services, planning included."""
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(
            title=title,
            body="4月から燃えるごみは火曜と金曜です。",
            priority=priority,
            due_date=due_date,
            all_blocks=blocks is None,
            blocks=blocks or [],
        ),
    )
    return services.circular_publish(circular=circular)


def give_email(household: Household, address: str) -> Member:
    member = Member.objects.filter(household=household).order_by("pk").first()
    if member is None:
        member = MemberFactory.create(household=household)
    member.email = address
    member.save(update_fields=["email"])
    return member


def give_push(household: Household, browser: BrowserSubscription | None = None) -> PushSubscription:
    """A push subscription for the household's first member: the fake push service's
    ``browser``, else an endpoint nobody answers (enough for planning)."""
    member = Member.objects.filter(household=household).order_by("pk").first()
    assert member is not None and member.user_id is not None
    if browser is not None:
        return PushSubscription.objects.create(
            user_id=member.user_id,
            endpoint=browser.endpoint,
            p256dh=browser.p256dh,
            auth=browser.auth,
        )
    return PushSubscription.objects.create(
        user_id=member.user_id,
        endpoint=f"http://127.0.0.1:9/push/{secrets.token_hex(8)}",
        p256dh="BPlaceholderKeyOnlyPlanningReadsIt",
        auth="placeholder",
    )


def rows(circular: Circular, household: Household | None = None) -> list[tuple[str, str, str]]:
    """(step, channel, due at HH:MM on M/D) of the circular's rows, in due order."""
    deliveries = Delivery.objects.filter(circular=circular)
    if household is not None:
        deliveries = deliveries.filter(receipt__household=household)
    return [
        (d.step, d.channel, d.due_at.astimezone(TOKYO).strftime("%m/%d %H:%M"))
        for d in deliveries.order_by("due_at", "step", "channel")
    ]


# --- Who gets what --------------------------------------------------------------------


def test_a_household_with_push_gets_one_push(town: Town) -> None:
    give_push(town.household1)
    # household2 has a member but neither push nor an email: nothing to send through.
    with time_machine.travel(at(DAY, 10, 2), tick=False):
        circular = publish_circular(town)

    assert rows(circular) == [("publish", "push", "06/10 10:02")]
    [row] = Delivery.objects.filter(circular=circular)
    assert row.receipt is not None and row.receipt.household_id == town.household1.pk
    # Due at once: publishing hands it to the worker after commit.
    assert row.status == DeliveryStatus.QUEUED


def test_without_push_an_email_address_gets_an_email(town: Town) -> None:
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 10, 2), tick=False):
        circular = publish_circular(town)

    assert rows(circular, town.household1) == [("publish", "email", "06/10 10:02")]
    assert rows(circular) == rows(circular, town.household1)


def test_push_and_email_a_normal_circular_goes_by_push_only(town: Town) -> None:
    give_push(town.household1)
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 10, 2), tick=False):
        circular = publish_circular(town)

    assert rows(circular) == [("publish", "push", "06/10 10:02")]


def test_paper_households_get_nothing(town: Town) -> None:
    on_paper = HouseholdFactory.create(
        block=town.block1, label="上田", delivery_mode=DeliveryMode.PAPER
    )
    give_email(on_paper, "ueda@example.jp")
    both = HouseholdFactory.create(block=town.block1, label="石井", delivery_mode=DeliveryMode.BOTH)
    give_email(both, "ishii@example.jp")
    HouseholdFactory.create(block=town.block1, label="青木")  # no members at all
    dead = HouseholdFactory.create(block=town.block2, label="木村")
    give_email(dead, "kimura@example.jp")
    give_push(dead)
    Household.objects.filter(pk=dead.pk).update(dead_contact_since=at(DAY, 8))
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town, priority=Priority.URGENT)

    # Only the chair's circular-level ladder row: no household row at all.
    assert Delivery.objects.filter(circular=circular, receipt__isnull=False).count() == 0
    assert rows(circular) == [("ladder:3", "chair", "06/10 10:20")]


def test_a_digest_household_gets_todays_summary_at_the_digest_hour(town: Town) -> None:
    give_email(town.household1, "yamada@example.jp")
    Household.objects.filter(pk=town.household1.pk).update(notify_mode="digest")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)

    assert rows(circular) == [("digest:2031-06-10", "email", "06/10 18:00")]
    assert Delivery.objects.get(circular=circular).status == DeliveryStatus.PENDING


def test_after_the_digest_hour_the_summary_is_tomorrows(town: Town) -> None:
    give_push(town.household1)
    Household.objects.filter(pk=town.household1.pk).update(notify_mode="digest")
    with time_machine.travel(at(DAY, 19, 30), tick=False):
        circular = publish_circular(town)

    assert rows(circular) == [("digest:2031-06-11", "email", "06/11 18:00")]


def test_urgent_goes_to_push_and_email_at_once_even_at_night(town: Town) -> None:
    give_push(town.household1)
    give_email(town.household1, "yamada@example.jp")
    Household.objects.filter(pk=town.household1.pk).update(notify_mode="digest")  # 緊急 ignores
    with time_machine.travel(at(DAY, 23), tick=False):
        assert in_quiet_hours(community=town.community, when=at(DAY, 23))
        circular = publish_circular(town, priority=Priority.URGENT)

    assert rows(circular) == [
        ("publish", "email", "06/10 23:00"),
        ("publish", "push", "06/10 23:00"),
        # No ladder:1 email: it went out already. 班長 and chair at the urgent timings.
        ("ladder:2", "leader", "06/10 23:10"),
        ("ladder:3", "chair", "06/10 23:20"),
    ]
    first = Delivery.objects.filter(circular=circular, step="publish")
    assert {d.status for d in first} == {DeliveryStatus.QUEUED}


def test_important_gets_the_ladder_at_the_community_timings(town: Town) -> None:
    give_push(town.household1)
    give_email(town.household1, "yamada@example.jp")
    give_email(town.household2, "tanaka@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town, priority=Priority.IMPORTANT)

    assert rows(circular, town.household1) == [
        ("publish", "push", "06/10 10:00"),
        ("ladder:1", "email", "06/10 10:30"),
        ("ladder:2", "leader", "06/10 11:00"),
    ]
    # household2 was emailed first, so its ladder has no second email.
    assert rows(circular, town.household2) == [
        ("publish", "email", "06/10 10:00"),
        ("ladder:2", "leader", "06/10 11:00"),
    ]
    chair = Delivery.objects.get(circular=circular, receipt__isnull=True)
    assert (chair.step, chair.channel) == ("ladder:3", "chair")
    assert chair.due_at == at(DAY, 12)


def test_the_ladder_follows_the_communitys_own_timings(town: Town) -> None:
    town.community.ladder_important = "15、45,90"
    town.community.save(update_fields=["ladder_important"])
    give_push(town.household1)
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town, priority=Priority.IMPORTANT)

    assert [due for _step, _channel, due in rows(circular)] == [
        "06/10 10:00",
        "06/10 10:15",
        "06/10 10:45",
        "06/10 11:30",
    ]


def test_ladder_steps_that_fall_in_quiet_hours_wait_for_the_morning(town: Town) -> None:
    give_push(town.household1)
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 20), tick=False):
        circular = publish_circular(town, priority=Priority.IMPORTANT)

    assert rows(circular, town.household1) == [
        ("publish", "push", "06/10 20:00"),
        ("ladder:1", "email", "06/10 20:30"),
        ("ladder:2", "leader", "06/11 07:00"),  # 21:00 is quiet
    ]


def test_planning_twice_plans_nothing_new(town: Town) -> None:
    give_push(town.household1)
    give_email(town.household1, "yamada@example.jp")
    give_email(town.household2, "tanaka@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town, priority=Priority.URGENT)
        before = rows(circular)
        assert len(before) == 6
        assert deliveries_plan_on_publish(circular=circular) == 0
        # Publishing again is a no-op as well.
        services.circular_publish(circular=circular)

    assert rows(circular) == before


# --- Quiet hours ----------------------------------------------------------------------


def test_quiet_hours_boundaries(town: Town) -> None:
    community = town.community
    assert not in_quiet_hours(community=community, when=at(DAY, 20, 59))
    assert in_quiet_hours(community=community, when=at(DAY, 21))
    assert in_quiet_hours(community=community, when=at(DAY, 6, 59))
    assert not in_quiet_hours(community=community, when=at(DAY, 7))
    assert not_before_quiet_end(community=community, when=at(DAY, 2), urgent=False) == at(DAY, 7)
    assert not_before_quiet_end(community=community, when=at(DAY, 2), urgent=True) == at(DAY, 2)


def test_a_normal_circular_published_at_night_is_due_in_the_morning(town: Town) -> None:
    give_push(town.household1)
    with time_machine.travel(at(DAY, 22), tick=False):
        circular = publish_circular(town)

    assert rows(circular) == [("publish", "push", "06/11 07:00")]
    assert Delivery.objects.get(circular=circular).status == DeliveryStatus.PENDING


def test_sending_in_quiet_hours_waits_until_seven(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 20, 50), tick=False):
        circular = publish_circular(town)
    row = Delivery.objects.get(circular=circular)
    assert row.status == DeliveryStatus.QUEUED  # due at 20:50; the worker is late

    with time_machine.travel(at(DAY, 22, 30), tick=False):
        assert delivery_send(delivery_id=row.pk) == "deferred"

    row.refresh_from_db()
    assert (row.status, row.due_at, row.attempts) == (
        DeliveryStatus.PENDING,
        at(DAY + timedelta(1), 7),
        0,
    )
    assert outbox == []

    with time_machine.travel(at(DAY + timedelta(1), 7), tick=False):
        assert delivery_send(delivery_id=row.pk) == "sent"
    assert [m.to for m in outbox] == [["yamada@example.jp"]]


def test_urgent_is_sent_in_quiet_hours(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 23, 30), tick=False):
        circular = publish_circular(town, priority=Priority.URGENT)
        row = Delivery.objects.get(circular=circular, step="publish")
        assert delivery_send(delivery_id=row.pk) == "sent"

    assert [m.to for m in outbox] == [["yamada@example.jp"]]
