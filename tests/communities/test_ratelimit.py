"""The doors people could hammer answer 429 past their limits, and open again later."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from circulars.models import Receipt
from communities import services
from tests.circulars.test_paper import publish
from tests.conftest import Town

pytestmark = pytest.mark.django_db


def test_invite_redemption_is_limited_per_address_and_recovers(town: Town) -> None:
    issued = services.household_invite_issue(household=town.household1, created_by=town.chair)
    client = Client(REMOTE_ADDR="192.0.2.10")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        statuses = [
            client.post(f"/join/{issued.token}/", {"step": "join"}).status_code for _ in range(21)
        ]
        assert statuses[:20] == [200] * 20  # the form comes back: consent missing
        assert statuses[20] == 429
        other = Client(REMOTE_ADDR="192.0.2.11")
        assert other.post(f"/join/{issued.token}/", {"step": "join"}).status_code == 200
    with time_machine.travel(start + timedelta(minutes=11), tick=False):
        assert client.post(f"/join/{issued.token}/", {"step": "join"}).status_code == 200


def test_guessing_typed_codes_is_slowed_down(town: Town) -> None:
    client = Client(REMOTE_ADDR="192.0.2.20")
    statuses = [client.post("/join/", {"code": "ABCD-EFGH"}).status_code for _ in range(11)]
    assert statuses[:10] == [200] * 10  # "we could not find this code"
    response = client.post("/join/", {"code": "ABCD-EFGH"})
    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert "少しお待ちください" in response.content.decode()


def test_confirm_is_limited_per_person_and_recovers(town: Town) -> None:
    circular = publish(town)
    client = Client()
    client.force_login(town.resident1)
    url = f"/c/{town.community.slug}/circulars/{circular.pk}/confirm/"
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        statuses = [client.post(url, {"key": str(uuid.uuid4())}).status_code for _ in range(61)]
        assert statuses[:60] == [302] * 60
        assert statuses[60] == 429
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        assert client.post(url, {"key": str(uuid.uuid4())}).status_code == 302
    assert Receipt.objects.filter(circular=circular, confirmed_at__isnull=False).count() == 1
