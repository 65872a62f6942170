"""Officers and helpers log in with allauth: an emailed code, no password needed, and the
second step for those who turned on two-step login."""

from __future__ import annotations

import re

import pytest
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
    yield_hotp_counters_from_time,
)
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client

from communities import services

pytestmark = pytest.mark.django_db


def code_from_mail() -> str:
    assert mail.outbox, "no login code was sent"
    match = re.search(r"\b([A-Z0-9]{4}-[A-Z0-9]{4})\b", str(mail.outbox[-1].body))
    assert match, mail.outbox[-1].body
    return match.group(1)


def request_code(client: Client, email: str) -> None:
    response = client.post("/accounts/login/code/", {"email": email})
    assert response.status_code == 302, response.content[:500]


def test_an_officer_logs_in_with_an_emailed_code_and_no_password() -> None:
    user = services.user_get_or_create_by_email(email="yakuin@example.jp", name="役員")
    assert not user.has_usable_password()
    client = Client()
    request_code(client, "yakuin@example.jp")
    response = client.post("/accounts/login/code/confirm/", {"code": code_from_mail()})
    assert response.status_code == 302
    assert client.get("/").context["user"] == user
    assert "かいらん" in mail.outbox[-1].body
    assert "testserver" not in mail.outbox[-1].body


def test_a_wrong_code_does_not_log_in() -> None:
    services.user_get_or_create_by_email(email="yakuin@example.jp")
    client = Client()
    request_code(client, "yakuin@example.jp")
    code = code_from_mail()
    wrong = "AAAA-AAAA" if code != "AAAA-AAAA" else "BBBB-BBBB"
    response = client.post("/accounts/login/code/confirm/", {"code": wrong})
    assert response.status_code == 200
    assert not client.get("/").context["user"].is_authenticated


def test_two_step_login_asks_for_the_authenticator_code_after_the_email_code() -> None:
    user = services.user_get_or_create_by_email(email="kaicho@example.jp", name="会長")
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    client = Client()
    request_code(client, "kaicho@example.jp")
    response = client.post("/accounts/login/code/confirm/", {"code": code_from_mail()})
    assert response.status_code == 302
    assert "/2fa/authenticate" in response["Location"]
    assert not client.get("/").context["user"].is_authenticated
    counter = next(iter(yield_hotp_counters_from_time()))
    totp = format_hotp_value(hotp_value(secret, counter))
    response = client.post("/accounts/2fa/authenticate/", {"code": totp})
    assert response.status_code == 302
    assert client.get("/").context["user"] == user


def test_the_two_step_pages_render_in_our_layout() -> None:
    user = User.objects.create_user(username="officer", email="o@example.jp")
    client = Client()
    client.force_login(user)
    for url in ("/accounts/2fa/", "/accounts/2fa/totp/activate/", "/accounts/email/"):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "困ったとき" in html, url  # our base template, in Japanese
        assert 'lang="ja"' in html
