"""The 班長's follow-up list: paper households and households the ladder escalated, in their
own blocks, with one-tap proxy confirmation. Time is frozen (Asia/Tokyo)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from circulars.models import Circular, Priority, Receipt, ReceiptMethod
from communities.models import DeliveryMode
from notifications.models import Delivery, DeliveryStatus
from notifications.scheduler import scheduler_tick
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory
from tests.notifications.test_ladder import DAY, at, give_email, publish_circular


@pytest.fixture
def frozen() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(at(DAY, 9), tick=False) as traveller:
        yield traveller


def move(traveller: time_machine.Traveller, when: datetime) -> None:
    traveller.move_to(when)


def listed(html: str) -> set[tuple[int, int]]:
    """(circular id, household id) of every row: each row carries its proxy buttons."""
    return {
        (int(circular), int(household))
        for circular, household in re.findall(
            r'action="/c/[^/]+/circulars/(\d+)/ledger/(\d+)/proxy/"', html
        )
    }


def followup_page(user: User, town: Town) -> tuple[int, str]:
    client = Client()
    client.force_login(user)
    response = client.get(reverse("circulars:followup", kwargs={"slug": town.community.slug}))
    return response.status_code, response.content.decode()


def escalate(town: Town, traveller: time_machine.Traveller) -> Circular:
    """A 重要 circular at 10:00 that nobody confirms; the ladder reaches the 班長 at 11:00."""
    give_email(town.household1, "yamada@example.jp")
    give_email(town.household2, "tanaka@example.jp")
    move(traveller, at(DAY, 10))
    circular = publish_circular(town, title="断水のお知らせ", priority=Priority.IMPORTANT)
    for hour, minute in [(10, 6), (10, 30), (11, 0)]:
        move(traveller, at(DAY, hour, minute))
        scheduler_tick()
    return circular


def test_an_escalated_household_appears_on_its_leaders_list(
    town: Town, frozen: time_machine.Traveller
) -> None:
    give_email(town.household1, "yamada@example.jp")
    move(frozen, at(DAY, 10))
    circular = publish_circular(town, title="断水のお知らせ", priority=Priority.IMPORTANT)
    move(frozen, at(DAY, 10, 30))
    scheduler_tick()
    status, html = followup_page(town.leader1, town)
    assert status == 200
    assert listed(html) == set()  # emailed, not yet escalated

    move(frozen, at(DAY, 11))
    scheduler_tick()
    assert Delivery.objects.get(
        circular=circular, receipt__household=town.household1, step="ladder:2"
    ).status == (DeliveryStatus.SENT)
    status, html = followup_page(town.leader1, town)
    assert status == 200
    assert listed(html) == {(circular.pk, town.household1.pk)}
    assert "山田" in html and "断水のお知らせ" in html
    proxy_url = reverse(
        "circulars:ledger_proxy",
        kwargs={
            "slug": town.community.slug,
            "circular_id": circular.pk,
            "household_id": town.household1.pk,
        },
    )
    assert f'action="{proxy_url}"' in html
    assert '<input type="hidden" name="back" value="followup">' in html


def test_the_list_is_the_leaders_own_blocks_and_staff_only(
    town: Town, frozen: time_machine.Traveller
) -> None:
    circular = escalate(town, frozen)
    _status, html = followup_page(town.leader1, town)
    # Both households were escalated; block 2 is not leader1's.
    assert listed(html) == {(circular.pk, town.household1.pk)}
    assert "田中" not in html

    status, _html = followup_page(town.resident1, town)
    assert status == 404
    status, _html = followup_page(town.other_chair, town)
    assert status == 404


def test_paper_households_with_open_circulars_are_listed(
    town: Town, frozen: time_machine.Traveller
) -> None:
    paper = HouseholdFactory.create(
        block=town.block1, label="上田", delivery_mode=DeliveryMode.PAPER
    )
    MemberFactory.create(household=paper)
    move(frozen, at(DAY, 10))
    circular = publish_circular(town, title="回覧板の回し方")  # normal: no ladder
    _status, html = followup_page(town.leader1, town)
    # 山田 is digital and not escalated; 上田 is on paper.
    assert listed(html) == {(circular.pk, paper.pk)}
    assert "上田" in html


def test_a_proxy_from_the_list_records_it_and_the_household_leaves_the_list(
    town: Town, frozen: time_machine.Traveller
) -> None:
    circular = escalate(town, frozen)
    move(frozen, at(DAY, 11, 20))
    client = Client()
    client.force_login(town.leader1)
    response = client.post(
        reverse(
            "circulars:ledger_proxy",
            kwargs={
                "slug": town.community.slug,
                "circular_id": circular.pk,
                "household_id": town.household1.pk,
            },
        ),
        {"method": ReceiptMethod.PROXY_VISIT, "back": "followup"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "circulars:followup", kwargs={"slug": town.community.slug}
    )
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert (receipt.method, receipt.recorded_by_id, receipt.confirmed_at) == (
        ReceiptMethod.PROXY_VISIT,
        town.leader1.pk,
        at(DAY, 11, 20),
    )
    _status, html = followup_page(town.leader1, town)
    assert listed(html) == set()

    # The chair's summary at 12:00 counts only the household still open (田中).
    move(frozen, at(DAY, 12))
    scheduler_tick()
    chair_row = Delivery.objects.get(circular=circular, receipt__isnull=True, step="ladder:3")
    assert chair_row.status == DeliveryStatus.SENT


def test_the_list_costs_the_same_queries_for_more_households(
    town: Town,
    frozen: time_machine.Traveller,
) -> None:
    def add_paper(count: int) -> None:
        for _n in range(count):
            household = HouseholdFactory.create(block=town.block1, delivery_mode=DeliveryMode.PAPER)
            MemberFactory.create(household=household)

    add_paper(2)
    move(frozen, at(DAY, 10))
    publish_circular(town)
    client = Client()
    client.force_login(town.leader1)
    url = reverse("circulars:followup", kwargs={"slug": town.community.slug})
    client.get(url)  # warm the session and caches
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    add_paper(8)
    move(frozen, at(DAY, 10, 5))
    publish_circular(town, title="二つ目")
    with CaptureQueriesContext(connection) as many:
        response = client.get(url)
    # The first circular went to the first 2 paper households, the second to all 10.
    assert len(listed(response.content.decode())) == 12
    assert len(many) == len(few)
