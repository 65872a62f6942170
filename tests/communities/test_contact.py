"""A member sets the email for circulars and the household's notification rhythm."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from communities.models import Household, Member
from tests.conftest import Town

pytestmark = pytest.mark.django_db


def test_a_member_sets_email_and_daily_summary(town: Town, client: Client) -> None:
    client.force_login(town.resident1)
    prefix = f"h{town.household1.pk}"
    Household.objects.filter(pk=town.household1.pk).update(dead_contact_since=timezone.now())
    response = client.post(
        "/me/contact/",
        {
            "household": town.household1.pk,
            f"{prefix}-email": "Yamada@Example.JP",
            f"{prefix}-notify_mode": "digest",
        },
    )
    assert response.status_code == 302
    member = Member.objects.get(household=town.household1, user=town.resident1)
    assert member.email == "yamada@example.jp"
    household = Household.objects.get(pk=town.household1.pk)
    assert household.notify_mode == "digest"
    assert household.dead_contact_since is None  # reachable again: no longer paper


def test_another_households_contact_cannot_be_set(town: Town, client: Client) -> None:
    client.force_login(town.resident1)
    response = client.post(
        "/me/contact/",
        {"household": town.household2.pk, f"h{town.household2.pk}-notify_mode": "digest"},
    )
    assert response.status_code == 404
    assert Household.objects.get(pk=town.household2.pk).notify_mode == "instant"


def test_a_bad_address_is_refused_with_a_message(town: Town, client: Client) -> None:
    client.force_login(town.resident1)
    prefix = f"h{town.household1.pk}"
    response = client.post(
        "/me/contact/",
        {
            "household": town.household1.pk,
            f"{prefix}-email": "not-an-address",
            f"{prefix}-notify_mode": "instant",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert Member.objects.get(household=town.household1, user=town.resident1).email == ""
    assert list(response.context["messages"])
