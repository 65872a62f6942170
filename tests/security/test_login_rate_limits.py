"""allauth's own rate limits, with the production settings: what a person really sees.

What allauth does (read in its source, checked here): the login view counts POSTs per IP
address and answers 429 past the limit (through ``handler429``: Kairan's Japanese page
with ``Retry-After``); requesting login codes is counted per email address inside the
form, so past that limit the form comes back with a message under the field, status 200,
and no mail is sent. Both open again after the window.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils import translation

from communities import services

pytestmark = pytest.mark.django_db

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def production_limits(settings: Any) -> dict[str, str]:
    """The limits config/settings.py sets (the test settings turn them off)."""
    limits: dict[str, str] = importlib.import_module("config.settings").ACCOUNT_RATE_LIMITS
    settings.ACCOUNT_RATE_LIMITS = limits
    return limits


def _per_minute(limits: dict[str, str], action: str, per: str) -> int:
    for rate in limits[action].split(","):
        amount, period, kind = rate.split("/")
        if kind == per and period == "m":
            return int(amount)
    raise AssertionError(f"no per-minute {per} limit for {action}")


def _japanese(message: str) -> str:
    with translation.override("ja"):
        return translation.gettext(message)


def test_a_login_flood_from_one_address_gets_the_429_page_then_recovers(
    production_limits: dict[str, str],
) -> None:
    allowed = _per_minute(production_limits, "login", "ip")
    client = Client()
    with time_machine.travel(START, tick=False) as traveller:
        statuses = [
            client.post("/accounts/login/", {"login": f"user{i}@example.jp"}).status_code
            for i in range(allowed + 1)
        ]
        assert 429 not in statuses[:allowed], statuses
        assert 500 not in statuses
        refused = client.post("/accounts/login/", {"login": "late@example.jp"})
        assert refused.status_code == 429
        assert refused["Retry-After"] == "60"
        page = refused.content.decode()
        assert _japanese("Please wait a moment") in page
        assert (
            _japanese(
                "There were many attempts in a short time. Please try again in a few minutes."
            )
            in page
        )
        # Looking at the page is never limited.
        assert Client().get("/accounts/login/").status_code == 200

        traveller.shift(61)
        again = client.post("/accounts/login/", {"login": "later@example.jp"})
        assert again.status_code != 429


def test_login_codes_per_email_address_stop_with_a_clear_message_then_recover(
    production_limits: dict[str, str],
) -> None:
    allowed = _per_minute(production_limits, "request_login_code", "key")
    services.user_get_or_create_by_email(email="yakuin@example.jp")
    services.user_get_or_create_by_email(email="kaicho@example.jp")
    message = _japanese(
        "There were too many attempts with this email address. Wait a few minutes, then try again."
    )
    with time_machine.travel(START, tick=False) as traveller:
        for _ in range(allowed):
            response = Client().post("/accounts/login/code/", {"email": "yakuin@example.jp"})
            assert response.status_code == 302
        assert len(mail.outbox) == allowed

        refused = Client().post("/accounts/login/code/", {"email": "yakuin@example.jp"})
        assert refused.status_code == 200  # the form again, with the message under the field
        assert refused.context["form"].errors["email"] == [message]
        assert message in refused.content.decode()
        assert len(mail.outbox) == allowed, "a code was mailed past the limit"

        # The limit is per address: someone else is not held up.
        other = Client().post("/accounts/login/code/", {"email": "kaicho@example.jp"})
        assert other.status_code == 302
        assert len(mail.outbox) == allowed + 1

        traveller.shift(61)
        again = Client().post("/accounts/login/code/", {"email": "yakuin@example.jp"})
        assert again.status_code == 302
        assert len(mail.outbox) == allowed + 2


def test_every_production_limit_is_one_allauth_can_count(
    production_limits: dict[str, str],
) -> None:
    """A per-key rate on an action allauth counts without a key is a 500 on every request."""
    assert "/key" not in production_limits["login"]
    client = Client()
    response = client.post("/accounts/login/", {"login": "yakuin@example.jp"})
    assert response.status_code in {200, 302}


def test_the_login_page_mails_codes_under_the_same_per_address_limit(
    production_limits: dict[str, str],
) -> None:
    """The login page's email field also sends a code (password login is not offered), so
    hammering it for one address stops at the same limit, with the same message."""
    allowed = _per_minute(production_limits, "request_login_code", "key")
    services.user_get_or_create_by_email(email="yakuin@example.jp")
    with time_machine.travel(START, tick=False) as traveller:
        statuses = [
            Client().post("/accounts/login/", {"login": "yakuin@example.jp"}).status_code
            for _ in range(allowed)
        ]
        assert statuses == [302] * allowed
        refused = Client().post("/accounts/login/", {"login": "yakuin@example.jp"})
        assert refused.status_code == 200
        assert refused.context["form"].errors["login"] == [
            _japanese(
                "There were too many attempts with this email address. "
                "Wait a few minutes, then try again."
            )
        ]
        assert len(mail.outbox) == allowed
        traveller.shift(61)
        assert Client().post("/accounts/login/", {"login": "yakuin@example.jp"}).status_code == 302
        assert len(mail.outbox) == allowed + 1
