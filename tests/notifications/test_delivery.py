"""Sending planned steps through real channels: Web Push to the fake push service on
loopback, email through locmem (and a real SMTP server on loopback for refusals).

Time is frozen (Asia/Tokyo); the scheduler hands due rows to the in-process task backend.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller
from django.core import mail
from django.core.mail import EmailMessage
from django.test import Client, override_settings
from django.urls import reverse

from circulars import paper
from circulars.models import Circular, Priority
from communities.models import Household, Member
from notifications.delivery import delivery_send
from notifications.models import Delivery, DeliveryStatus, PushSubscription
from notifications.scheduler import scheduler_tick
from tests.conftest import Town
from tests.fakes.push_service import Behaviour, FakePushService
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


def tick(hour: int, minute: int = 0, second: int = 0) -> int:
    when = at(DAY, hour, minute).replace(second=second)
    with time_machine.travel(when, tick=False):
        return scheduler_tick().enqueued


def ledger_line(circular: Circular, household: Household, user: Any) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(
        reverse(
            "circulars:ledger",
            kwargs={"slug": circular.community.slug, "circular_id": circular.pk},
        )
    )
    assert response.status_code == 200
    html = response.content.decode()
    start = html.index(f"<strong>{household.label}</strong>")
    end = html.find('class="household-row"', start)
    match = re.search(
        r'<p class="muted notification-steps">(.*?)</p>',
        html[start : end if end > 0 else None],
        re.S,
    )
    if match is None:
        return ""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


# --- Push -----------------------------------------------------------------------------


def test_a_push_reaches_the_push_service_without_personal_content(
    town: Town, push_service: FakePushService, django_capture_on_commit_callbacks: Capture
) -> None:
    browser = push_service.subscribe()
    give_push(town.household1, browser)
    with (
        time_machine.travel(at(DAY, 10, 2), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        circular = publish_circular(town, title="山田さん宅前の工事について")

    row = Delivery.objects.get(circular=circular)
    assert (row.status, row.attempts, row.sent_at) == (DeliveryStatus.SENT, 1, at(DAY, 10, 2))
    [message] = push_service.pending(browser.id)
    payload = json.loads(browser.decrypt(message.body))
    assert payload == {
        "type": "circular",
        "id": circular.pk,
        "url": f"/c/{town.community.slug}/circulars/{circular.pk}/",
        "urgent": False,
    }
    assert "山田" not in browser.decrypt(message.body).decode()
    assert message.topic == f"c{circular.pk}-publish"
    assert ledger_line(circular, town.household1, town.leader1) == "通知: プッシュ 10:02"


def test_a_push_service_error_is_retried_after_the_back_off(
    town: Town, push_service: FakePushService
) -> None:
    browser = push_service.subscribe(behaviour=Behaviour.SERVER_ERROR)
    give_push(town.household1, browser)
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)  # queued; the worker takes it now:
        row = Delivery.objects.get(circular=circular)
        assert delivery_send(delivery_id=row.pk) == "retry"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.due_at) == (DeliveryStatus.PENDING, 1, at(DAY, 10, 1))
    assert "HTTP 500" in row.last_error
    # The ledger row says the first attempt failed.
    assert "✗" in ledger_line(circular, town.household1, town.leader1)
    assert push_service.requests_seen == 1

    assert tick(10, 0, 59) == 0  # back-off: one minute
    assert tick(10, 1) == 1
    assert push_service.requests_seen == 2
    row.refresh_from_db()
    assert (row.status, row.attempts, row.due_at) == (DeliveryStatus.PENDING, 2, at(DAY, 10, 6))

    push_service.set_behaviour(browser.id, Behaviour.ACCEPT)
    assert tick(10, 5) == 0  # back-off: five minutes
    assert tick(10, 6) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (DeliveryStatus.SENT, 3, "")
    assert len(push_service.pending(browser.id)) == 1
    assert ledger_line(circular, town.household1, town.leader1) == "通知: プッシュ 10:06"


def test_after_three_attempts_the_step_has_failed_and_the_ledger_says_so(
    town: Town, push_service: FakePushService
) -> None:
    browser = push_service.subscribe(behaviour=Behaviour.SERVER_ERROR)
    give_push(town.household1, browser)
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)
    row = Delivery.objects.get(circular=circular)
    Delivery.objects.filter(pk=row.pk).update(status=DeliveryStatus.PENDING)

    assert [tick(10), tick(10, 1), tick(10, 6), tick(10, 30), tick(12)] == [1, 1, 1, 0, 0]
    row.refresh_from_db()
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 3)
    assert "HTTP 500" in row.last_error
    assert push_service.requests_seen == 3
    line = ledger_line(circular, town.household1, town.leader1)
    assert line.startswith("通知: プッシュ") and "✗" in line
    # The subscription is kept: a 500 is not a dead browser.
    assert PushSubscription.objects.filter(endpoint=browser.endpoint).exists()


def test_a_gone_subscription_without_email_makes_the_household_paper(
    town: Town,
    push_service: FakePushService,
    outbox: list[EmailMessage],
) -> None:
    browser = push_service.subscribe(behaviour=Behaviour.GONE)
    give_push(town.household1, browser)
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)
        row = Delivery.objects.get(circular=circular)
        assert delivery_send(delivery_id=row.pk) == "retry"

    assert not PushSubscription.objects.filter(endpoint=browser.endpoint).exists()
    town.household1.refresh_from_db()
    assert town.household1.dead_contact_since == at(DAY, 10)
    # The paper rule now counts the household among the paper ones.
    assert town.household1.pk in [
        r.household_id for r in paper.paper_receipts(circular=circular, block=town.block1)
    ]
    note = Delivery.objects.get(circular=circular, step="dead-contact")
    assert (note.channel, note.status, note.receipt_id) == (
        "leader",
        DeliveryStatus.PENDING,
        row.receipt_id,
    )

    assert tick(10, 1) >= 1
    note.refresh_from_db()
    assert note.status == DeliveryStatus.SENT
    [told] = [m for m in outbox if m.to == [town.leader1.email]]
    assert told.subject
    # The next circular plans nothing for it: it is on paper now.
    with time_machine.travel(at(DAY, 11), tick=False):
        second = publish_circular(town, title="次の回覧")
    assert not Delivery.objects.filter(circular=second, receipt__household=town.household1)


def test_a_gone_subscription_with_a_working_email_is_not_a_dead_contact(
    town: Town, push_service: FakePushService, outbox: list[EmailMessage]
) -> None:
    browser = push_service.subscribe(behaviour=Behaviour.NOT_FOUND)
    give_push(town.household1, browser)
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)
        row = Delivery.objects.get(circular=circular)
        assert delivery_send(delivery_id=row.pk) == "retry"

    assert not PushSubscription.objects.exists()
    town.household1.refresh_from_db()
    assert town.household1.dead_contact_since is None
    assert not Delivery.objects.filter(step="dead-contact").exists()


def test_urgent_goes_out_by_push_and_email_at_night(
    town: Town,
    push_service: FakePushService,
    outbox: list[EmailMessage],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    browser = push_service.subscribe()
    give_push(town.household1, browser)
    give_email(town.household1, "yamada@example.jp")
    with (
        time_machine.travel(at(DAY, 23, 40), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        circular = publish_circular(town, title="避難指示", priority=Priority.URGENT)

    [message] = push_service.pending(browser.id)
    assert message.headers["urgency"] == "high"
    assert json.loads(browser.decrypt(message.body))["urgent"] is True
    assert [m.to for m in outbox] == [["yamada@example.jp"]]
    assert {
        d.channel: d.status for d in Delivery.objects.filter(circular=circular, step="publish")
    } == {"push": DeliveryStatus.SENT, "email": DeliveryStatus.SENT}


# --- Email ----------------------------------------------------------------------------


def test_sending_twice_sends_once(town: Town, outbox: list[EmailMessage]) -> None:
    give_email(town.household1, "yamada@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)
        row = Delivery.objects.get(circular=circular)
        assert delivery_send(delivery_id=row.pk) == "sent"
        assert delivery_send(delivery_id=row.pk) == "taken"
    assert len(outbox) == 1
    assert ledger_line(circular, town.household1, town.leader1) == "通知: メール 10:00"


def test_a_digest_lists_the_days_circulars_in_one_mail(
    town: Town, outbox: list[EmailMessage]
) -> None:
    give_email(town.household1, "yamada@example.jp")
    Household.objects.filter(pk=town.household1.pk).update(notify_mode="digest")
    with time_machine.travel(at(DAY, 9), tick=False):
        first = publish_circular(town, title="夏祭りのお知らせ")
    with time_machine.travel(at(DAY, 15), tick=False):
        second = publish_circular(town, title="清掃活動のお願い")
    assert tick(17, 59) == 0
    assert tick(18) == 2
    [digest] = outbox
    assert "夏祭りのお知らせ" in str(digest.body) and "清掃活動のお願い" in str(digest.body)
    assert set(
        Delivery.objects.filter(circular__in=[first, second]).values_list("status", flat=True)
    ) == {DeliveryStatus.SENT}


@dataclass
class Refuser:
    """An SMTP server that answers RCPT with ``code`` for addresses in ``refuse``."""

    refuse: set[str] = field(default_factory=set)
    code: str = "451 4.3.0 try again later"
    received: list[tuple[list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.code
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[Refuser]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    handler = Refuser()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    mailers = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": port, "use_tls": False, "timeout": 5},
        }
    }
    try:
        with override_settings(MAILERS=mailers):
            yield handler
    finally:
        controller.stop()


def test_an_smtp_refusal_is_retried_and_then_delivered(town: Town, smtp: Refuser) -> None:
    give_email(town.household1, "yamada@example.jp")
    smtp.refuse.add("yamada@example.jp")
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)
        row = Delivery.objects.get(circular=circular)
        assert delivery_send(delivery_id=row.pk) == "retry"
    row.refresh_from_db()
    assert row.status == DeliveryStatus.PENDING and "451" in row.last_error
    assert "✗" in ledger_line(circular, town.household1, town.leader1)
    # A temporary refusal is not a bounce.
    assert Member.objects.get(household=town.household1).email_bounced_at is None

    smtp.refuse.clear()
    assert tick(10, 1) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 2)
    assert [rcpt for rcpt, _raw in smtp.received] == [["yamada@example.jp"]]


def test_a_permanent_refusal_without_push_makes_a_dead_contact(town: Town, smtp: Refuser) -> None:
    member = give_email(town.household1, "nobody@example.jp")
    smtp.refuse.add("nobody@example.jp")
    smtp.code = "550 5.1.1 no such mailbox"
    with time_machine.travel(at(DAY, 10), tick=False):
        circular = publish_circular(town)
        row = Delivery.objects.get(circular=circular)
        assert delivery_send(delivery_id=row.pk) == "retry"

    member.refresh_from_db()
    assert member.email_bounced_at == at(DAY, 10)
    town.household1.refresh_from_db()
    assert town.household1.dead_contact_since == at(DAY, 10)
    assert Delivery.objects.filter(
        circular=circular, receipt__household=town.household1, step="dead-contact"
    ).exists()
    assert smtp.received == []
