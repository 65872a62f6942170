"""The scheduler with frozen time (Asia/Tokyo): reminders fire at the right moments, the
escalation ladder advances step by step and stops when the household confirms, and ticking
twice sends nothing twice. Tasks run in-process (the ImmediateBackend); mail is locmem."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.core.mail import EmailMessage
from django.test import Client
from django.urls import reverse

from circulars import services
from circulars.models import Circular, CircularStatus, Priority, ReceiptMethod
from circulars.services import CircularData
from communities.models import DeliveryMode, Household
from notifications.ladder import deliveries_recover
from notifications.models import Delivery, DeliveryStatus, WorkerHeartbeat
from notifications.scheduler import scheduler_tick
from tests.conftest import Town
from tests.factories import HouseholdFactory
from tests.fakes.push_service import FakePushService
from tests.notifications.test_ladder import DAY, at, give_email, give_push, publish_circular

type Capture = Callable[..., AbstractContextManager[list[Callable[[], object]]]]


@pytest.fixture
def outbox(db: None) -> list[EmailMessage]:
    mail.outbox = []
    return mail.outbox


@pytest.fixture
def push_service() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service


def to(outbox: list[EmailMessage], address: str) -> list[EmailMessage]:
    return [m for m in outbox if m.to == [address]]


def statuses(circular: Circular, household: Household) -> dict[str, str]:
    return {
        f"{d.step}/{d.channel}": d.status
        for d in Delivery.objects.filter(circular=circular, receipt__household=household)
    }


def ledger_steps(client: Client, circular: Circular, household: Household) -> str:
    """The 「通知: …」 line of one household's ledger row, as the page shows it."""
    response = client.get(
        reverse(
            "circulars:ledger",
            kwargs={"slug": circular.community.slug, "circular_id": circular.pk},
        )
    )
    assert response.status_code == 200
    html = response.content.decode()
    start = html.index(f"<strong>{household.label}</strong>")
    match = re.search(r'<p class="muted notification-steps">(.*?)</p>', html[start:], re.S)
    assert match is not None, "no notification line on the row"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", match.group(1))).strip()


# --- Reminders ------------------------------------------------------------------------


def test_reminders_two_days_before_and_on_the_day_at_nine(
    town: Town, outbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    give_email(town.household1, "yamada@example.jp")
    give_email(town.household2, "tanaka@example.jp")
    paper = HouseholdFactory.create(
        block=town.block1, label="上田", delivery_mode=DeliveryMode.PAPER
    )
    give_email(paper, "ueda@example.jp")
    due = DAY + timedelta(days=2)
    with (
        time_machine.travel(at(DAY - timedelta(days=3), 10), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        circular = publish_circular(town, due_date=due)
    assert len(to(outbox, "yamada@example.jp")) == 1  # the new-circular mail
    with time_machine.travel(at(DAY - timedelta(days=2), 12), tick=False):
        services.receipt_confirm(
            circular=circular, household=town.household2, method=ReceiptMethod.APP
        )

    def tick(day_offset: int, hour: int, minute: int = 0) -> int:
        with time_machine.travel(at(DAY + timedelta(days=day_offset), hour, minute), tick=False):
            return scheduler_tick().reminders

    assert tick(0, 8, 59) == 0  # two days before, not yet nine
    assert tick(0, 9) == 1  # only the unconfirmed digital household
    assert [tick(0, 9, 1), tick(0, 9, 30), tick(0, 15), tick(0, 23, 59)] == [0, 0, 0, 0]
    assert tick(1, 9) == 0  # the day before: not a reminder day
    assert tick(2, 8) == 0
    assert tick(2, 9) == 1  # the due date
    assert [tick(2, 9, 5), tick(2, 18)] == [0, 0]
    assert tick(3, 9) == 0  # past the due date

    reminders = Delivery.objects.filter(circular=circular, step__startswith="reminder:")
    assert sorted((d.step, d.receipt.household_id, d.status) for d in reminders if d.receipt) == [
        ("reminder:2031-06-10", town.household1.pk, DeliveryStatus.SENT),
        ("reminder:2031-06-12", town.household1.pk, DeliveryStatus.SENT),
    ]
    assert {d.due_at for d in reminders} == {at(DAY, 9), at(due, 9)}
    yamada = to(outbox, "yamada@example.jp")
    assert len(yamada) == 3  # new + two reminders
    assert len({m.extra_headers["Message-ID"] for m in yamada}) == 3
    assert to(outbox, "tanaka@example.jp") != [] and len(to(outbox, "tanaka@example.jp")) == 1
    assert to(outbox, "ueda@example.jp") == []  # paper: the 班長's work, not the mailer's


def test_a_reminder_respects_quiet_hours_when_published_at_night(
    town: Town, outbox: list[EmailMessage]
) -> None:
    """A circular published at 22:00 on its due date: the reminder (due date, after nine)
    waits for the morning, as does everything not 緊急."""
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 22), tick=False):
        circular = publish_circular(town, due_date=DAY + timedelta(days=1))
    with time_machine.travel(at(DAY, 22, 30), tick=False):
        scheduler_tick()
    assert outbox == []
    with time_machine.travel(at(DAY + timedelta(days=1), 7), tick=False):
        scheduler_tick()
    publish_row = Delivery.objects.get(circular=circular, step="publish")
    assert publish_row.status == DeliveryStatus.SENT
    assert len(to(outbox, "yamada@example.jp")) == 1


def test_the_scheduler_publishes_a_scheduled_circular_and_sends_it(
    town: Town, outbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 8), tick=False):
        circular = services.circular_create(
            community=town.community, author=town.chair, data=CircularData(title="夏祭り")
        )
        services.circular_publish(circular=circular, publish_at=at(DAY, 10))
    with time_machine.travel(at(DAY, 9, 59), tick=False):
        assert scheduler_tick().published == 0
    with time_machine.travel(at(DAY, 10), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            assert scheduler_tick().published == 1
        assert scheduler_tick().published == 0
    circular.refresh_from_db()
    assert circular.status == CircularStatus.PUBLISHED
    assert len(to(outbox, "yamada@example.jp")) == 1


# --- The escalation ladder ------------------------------------------------------------


def test_the_ladder_advances_step_by_step_and_stops_for_a_household_that_confirms(
    town: Town,
    outbox: list[EmailMessage],
    push_service: FakePushService,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    browser = push_service.subscribe()
    give_push(town.household1, browser)
    give_email(town.household1, "yamada@example.jp")
    give_email(town.household2, "tanaka@example.jp")

    def tick(hour: int, minute: int = 0) -> int:
        with time_machine.travel(at(DAY, hour, minute), tick=False):
            return scheduler_tick().enqueued

    with (
        time_machine.travel(at(DAY, 10), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        circular = publish_circular(town, title="断水のお知らせ", priority=Priority.IMPORTANT)
    # +0: the first step went out on publishing; the tick finds nothing more.
    assert tick(10) == 0
    assert len(push_service.pending(browser.id)) == 1
    assert len(to(outbox, "tanaka@example.jp")) == 1 and to(outbox, "yamada@example.jp") == []

    assert tick(10, 29) == 0
    assert tick(10, 30) == 1  # +30: household1's email (household2 was mailed already)
    assert len(to(outbox, "yamada@example.jp")) == 1
    assert statuses(circular, town.household1)["ladder:1/email"] == DeliveryStatus.SENT

    with time_machine.travel(at(DAY, 10, 45), tick=False):
        services.receipt_confirm(
            circular=circular, household=town.household2, method=ReceiptMethod.APP
        )

    assert tick(11) == 2  # +60: both ladder:2 rows are due; household2's is skipped
    assert statuses(circular, town.household1)["ladder:2/leader"] == DeliveryStatus.SENT
    assert statuses(circular, town.household2) == {
        "publish/email": DeliveryStatus.SENT,
        "ladder:2/leader": DeliveryStatus.SKIPPED,
    }
    leader_mail = to(outbox, town.leader1.email)
    assert len(leader_mail) == 1 and "断水のお知らせ" in leader_mail[0].subject
    note = Delivery.objects.get(circular=circular, step=f"leader-note:{town.block1.pk}")
    assert note.status == DeliveryStatus.SENT

    client = Client()
    client.force_login(town.chair)
    assert ledger_steps(client, circular, town.household1) == (
        "通知: プッシュ 10:00, メール 10:30, 班長へ 11:00"
    )
    assert ledger_steps(client, circular, town.household2) == "通知: メール 10:00"

    assert tick(11, 59) == 0
    assert tick(12) == 1  # +120: the chair hears what is still open
    chair_mail = to(outbox, town.chair.email)
    assert len(chair_mail) == 1
    assert "1" in chair_mail[0].body  # one household still open
    assert tick(12, 1) == 0
    assert Delivery.objects.filter(circular=circular, status=DeliveryStatus.PENDING).count() == 0
    # Nobody was told twice.
    assert len(push_service.pending(browser.id)) == 1
    assert len(to(outbox, town.leader1.email)) == 1


def test_a_household_that_confirms_early_leaves_the_ladder(
    town: Town,
    outbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    give_push(town.household1)  # an endpoint that does not answer: the push fails, retried
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town, priority=Priority.IMPORTANT)
    with time_machine.travel(at(DAY, 10, 15), tick=False):
        services.receipt_confirm(
            circular=circular, household=town.household1, method=ReceiptMethod.APP
        )
    for hour, minute in [(10, 30), (11, 0), (12, 0)]:
        with time_machine.travel(at(DAY, hour, minute), tick=False):
            scheduler_tick()

    assert statuses(circular, town.household1) == {
        "publish/push": DeliveryStatus.SKIPPED,  # recovered after 5 min, then skipped
        "ladder:1/email": DeliveryStatus.SKIPPED,
        "ladder:2/leader": DeliveryStatus.SKIPPED,
    }
    assert to(outbox, "yamada@example.jp") == []
    assert to(outbox, town.leader1.email) == []
    assert not Delivery.objects.filter(circular=circular, step__startswith="leader-note:").exists()


def test_an_urgent_ladder_runs_at_its_own_pace_through_the_night(
    town: Town, outbox: list[EmailMessage], django_capture_on_commit_callbacks: Capture
) -> None:
    give_email(town.household1, "yamada@example.jp")
    with (
        time_machine.travel(at(DAY, 23), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        circular = publish_circular(town, title="避難指示", priority=Priority.URGENT)
    assert len(to(outbox, "yamada@example.jp")) == 1
    with time_machine.travel(at(DAY, 23, 10), tick=False):
        assert scheduler_tick().enqueued == 1
    assert len(to(outbox, town.leader1.email)) == 1
    with time_machine.travel(at(DAY, 23, 20), tick=False):
        assert scheduler_tick().enqueued == 1
    assert len(to(outbox, town.chair.email)) == 1
    assert statuses(circular, town.household1) == {
        "publish/email": DeliveryStatus.SENT,
        "ladder:2/leader": DeliveryStatus.SENT,
    }


# --- Idempotency ----------------------------------------------------------------------


def test_ticking_twice_enqueues_a_row_once(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 22), tick=False):
        circular = publish_circular(town)  # due at 07:00
    with time_machine.travel(at(DAY + timedelta(days=1), 7), tick=False):
        first, second = scheduler_tick(), scheduler_tick()
    assert (first.enqueued, second.enqueued) == (1, 0)
    assert Delivery.objects.get(circular=circular).status == DeliveryStatus.SENT
    assert len(outbox) == 1


def test_rows_stuck_in_sending_come_back_after_five_minutes(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)
    row = Delivery.objects.get(circular=circular)
    # A worker claimed it at 10:00 and died before finishing.
    Delivery.objects.filter(pk=row.pk).update(status=DeliveryStatus.SENDING, claimed_at=at(DAY, 10))

    assert deliveries_recover(now=at(DAY, 10, 4)) == 0
    with time_machine.travel(at(DAY, 10, 4), tick=False):
        assert scheduler_tick().enqueued == 0
    assert outbox == []
    with time_machine.travel(at(DAY, 10, 6), tick=False):
        tick = scheduler_tick()
    assert (tick.recovered, tick.enqueued) == (1, 1)
    row.refresh_from_db()
    assert row.status == DeliveryStatus.SENT
    assert len(outbox) == 1


def test_a_tick_records_both_heartbeats_for_healthz(town: Town) -> None:
    with time_machine.travel(at(DAY, 10), tick=False):
        scheduler_tick()
    beats = dict(WorkerHeartbeat.objects.values_list("name", "beat_at"))
    assert beats == {"scheduler": at(DAY, 10), "worker": at(DAY, 10)}
    with time_machine.travel(at(DAY, 10, 1), tick=False):
        body = Client().get("/healthz").json()
    assert body["scheduler_heartbeat_age_s"] == 60.0
    assert body["worker_heartbeat_age_s"] == 60.0
