"""Households that arrive or move while a circular is going round."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from circulars.models import Receipt
from communities import services as community_services
from communities.models import DeliveryMode
from tests.circulars.test_paper import publish
from tests.conftest import Town

pytestmark = pytest.mark.django_db


def test_a_household_added_after_publishing_receives_the_current_circular(town: Town) -> None:
    circular = publish(town)
    household = community_services.household_create(
        community=town.community,
        data=community_services.HouseholdData(
            label="新井", block=town.block2, delivery_mode=DeliveryMode.PAPER
        ),
    )
    receipt = Receipt.objects.get(circular=circular, household=household)
    assert receipt.block_id == town.block2.pk
    assert receipt.confirmed_at is None


def test_circulars_past_their_due_date_do_not_reach_new_households(town: Town) -> None:
    circular = publish(town)
    circular.due_date = timezone.localdate() - timedelta(days=1)
    circular.save(update_fields=["due_date"])
    household = community_services.household_create(
        community=town.community,
        data=community_services.HouseholdData(label="新井", block=town.block1),
    )
    assert not Receipt.objects.filter(circular=circular, household=household).exists()


def test_a_circular_for_block_2_only_does_not_reach_a_new_block_1_household(town: Town) -> None:
    circular = publish(town, blocks=[town.block2])
    household = community_services.household_create(
        community=town.community,
        data=community_services.HouseholdData(label="新井", block=town.block1),
    )
    assert not Receipt.objects.filter(circular=circular, household=household).exists()


def test_a_moved_household_takes_its_open_receipt_to_the_new_block(town: Town) -> None:
    circular = publish(town)
    household = town.household1
    community_services.household_update(
        household=household,
        data=community_services.HouseholdData(
            label=household.label, block=town.block2, delivery_mode=household.delivery_mode
        ),
    )
    receipt = Receipt.objects.get(circular=circular, household=household)
    assert receipt.block_id == town.block2.pk  # the new 班長 follows it up now
