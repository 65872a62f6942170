"""Under overload, a request that waited too long behind the proxy is turned away at once:
a 503 saying nothing was saved, before any session or database work."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from circulars import services
from circulars.models import Receipt
from circulars.services import CircularData
from tests.conftest import Town


def started(seconds_ago: float) -> str:
    return f"t={time.time() - seconds_ago:.3f}"  # nginx's ${msec}


@pytest.fixture
def shedding() -> Iterator[None]:
    with override_settings(KAIRAN_QUEUE_TIMEOUT_SECONDS=3.0):
        yield


def confirm_url(town: Town) -> tuple[str, Client]:
    circular = services.circular_publish(
        circular=services.circular_create(
            community=town.community, author=town.chair, data=CircularData(title="混雑時")
        )
    )
    client = Client()
    client.force_login(town.resident1)
    return f"/c/{town.community.slug}/circulars/{circular.pk}/confirm/", client


def test_a_confirm_that_waited_too_long_is_turned_away_and_not_recorded(
    town: Town, shedding: None
) -> None:
    url, client = confirm_url(town)
    with CaptureQueriesContext(connection) as queries:
        late = client.post(
            url,
            {"key": str(uuid.uuid4())},
            HTTP_X_REQUEST_START=started(5),
            HTTP_HX_REQUEST="true",
        )
    assert late.status_code == 503
    assert late["Retry-After"] == "60"
    assert "HX-Redirect" not in late  # the page's alert line says it; no reload under load
    assert "確認は記録されていません" in late.content.decode()
    assert len(queries) == 0  # no session, no user, no receipt
    assert not Receipt.objects.filter(confirmed_at__isnull=False).exists()

    fresh = client.post(url, {"key": str(uuid.uuid4())}, HTTP_X_REQUEST_START=started(0.2))
    assert fresh.status_code == 302
    assert Receipt.objects.filter(confirmed_at__isnull=False).count() == 1


@pytest.mark.parametrize("header", ["", "t=", "t=not-a-time", "garbage"])
def test_without_a_readable_arrival_time_nothing_is_turned_away(
    town: Town, shedding: None, header: str
) -> None:
    url, client = confirm_url(town)
    headers = {"X-Request-Start": header} if header else {}
    assert client.post(url, {"key": str(uuid.uuid4())}, headers=headers).status_code == 302


def test_health_check_and_the_embedded_default_are_never_turned_away(
    town: Town, shedding: None
) -> None:
    assert Client().get("/healthz", HTTP_X_REQUEST_START=started(60)).status_code == 200
    with override_settings(KAIRAN_QUEUE_TIMEOUT_SECONDS=0.0):
        url, client = confirm_url(town)
        late = client.post(url, {"key": str(uuid.uuid4())}, HTTP_X_REQUEST_START=started(60))
    assert late.status_code == 302
