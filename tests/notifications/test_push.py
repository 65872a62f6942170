"""Web push against a real push service on loopback (tests/fakes/push_service.py).

Nothing here is mocked: pywebpush encrypts and signs, the fake service verifies the VAPID
JWT and stores the encrypted body, and the test decrypts it with the browser's key.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from py_vapid import Vapid02
from pytest_django.fixtures import Settings as SettingsWrapper
from pywebpush import WebPushException, webpush

from notifications import push
from notifications.models import PushSubscription
from notifications.push import PushOutcome, push_send_to_users, vapid_public_key
from tests.conftest import Town
from tests.factories import UserFactory
from tests.fakes.push_service import (
    Behaviour,
    BrowserSubscription,
    FakePushService,
    b64url_decode,
    browser_subscription,
)

PAYLOAD: dict[str, object] = {
    "type": "circular",
    "id": 12,
    "url": "/c/sakura/circulars/12/",
    "urgent": False,
    "drill": False,
}


@pytest.fixture(autouse=True)
def embedded_key(settings: SettingsWrapper, tmp_path: Path) -> Path:
    """Each test gets its own data directory, so its own generated VAPID key."""
    settings.DATA_DIR = tmp_path / "data"
    settings.KAIRAN_VAPID_PRIVATE_KEY = ""
    settings.KAIRAN_VAPID_PUBLIC_KEY = ""
    return tmp_path / "data"


@pytest.fixture
def service() -> Iterator[FakePushService]:
    with FakePushService() as running:
        yield running


def subscribe(user: User, browser: BrowserSubscription) -> PushSubscription:
    return PushSubscription.objects.create(
        user=user, endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth
    )


def decrypted(browser: BrowserSubscription, service: FakePushService) -> list[object]:
    return [json.loads(browser.decrypt(m.body)) for m in service.pending(browser.id)]


# --- sending ----------------------------------------------------------------------------


def test_every_subscription_of_the_user_gets_one_encrypted_message(
    db: None, service: FakePushService
) -> None:
    user = UserFactory.create(first_name="山田花子", email="hanako@example.jp")
    phone, tablet = service.subscribe(), service.subscribe()
    subscribe(user, phone)
    subscribe(user, tablet)
    stranger = service.subscribe()
    subscribe(UserFactory.create(), stranger)

    outcome = push_send_to_users(user_ids=[user.pk], payload=PAYLOAD)

    assert outcome == PushOutcome(sent=2, gone=0, failed=0, errors=())
    for browser in (phone, tablet):
        [message] = service.pending(browser.id)
        assert message.headers["content-encoding"] == "aes128gcm"
        assert message.headers["ttl"] == "86400"
        assert message.headers["urgency"] == "normal"
        plaintext = browser.decrypt(message.body).decode()
        assert json.loads(plaintext) == PAYLOAD
        assert set(json.loads(plaintext)) <= push.ALLOWED_PAYLOAD_KEYS
        for personal in ("山田", "花子", "hanako", "example.jp"):
            assert personal not in plaintext
        # The ciphertext is not the plaintext.
        assert b"circular" not in message.body
    assert service.pending(stranger.id) == []
    assert not PushSubscription.objects.filter(user=user, last_success_at=None).exists()


def test_the_push_service_verifies_the_vapid_jwt(
    db: None, service: FakePushService, settings: SettingsWrapper
) -> None:
    browser = service.subscribe(application_server_key=vapid_public_key())
    subscribe(UserFactory.create(), browser)

    assert (
        push_send_to_users(
            user_ids=list(User.objects.values_list("pk", flat=True)), payload=PAYLOAD
        ).sent
        == 1
    )

    [message] = service.pending(browser.id)
    assert message.vapid_public_key == vapid_public_key()
    assert message.claims["aud"] == service.origin
    assert message.claims["sub"] == settings.KAIRAN_VAPID_SUBJECT
    exp = message.claims["exp"]
    assert isinstance(exp, int) and time.time() < exp <= time.time() + 24 * 3600


def test_the_fake_refuses_a_jwt_for_another_audience(service: FakePushService) -> None:
    """The fake is strict: a token for another origin is a 401, as on a real service."""
    browser = service.subscribe()
    key = Vapid02()
    key.generate_keys()
    with pytest.raises(WebPushException) as refused:
        webpush(
            subscription_info=browser.to_json(),
            data="{}",
            vapid_private_key=key,
            vapid_claims={"sub": "mailto:a@example.jp", "aud": "http://elsewhere.example"},
            ttl=60,
        )
    assert refused.value.response is not None
    assert refused.value.response.status_code == 401
    assert service.pending(browser.id) == []
    assert service.rejected(browser.id)[0][0] == 401


def test_a_subscription_made_for_another_server_key_fails_and_is_kept(
    db: None, service: FakePushService
) -> None:
    other = Vapid02()
    other.generate_keys()
    browser = service.subscribe(application_server_key=push._public_key_of(other))
    user = UserFactory.create()
    subscribe(user, browser)

    outcome = push_send_to_users(user_ids=[user.pk], payload=PAYLOAD)

    assert (outcome.sent, outcome.gone, outcome.failed) == (0, 0, 1)
    assert "HTTP 403" in outcome.errors[0]
    assert PushSubscription.objects.filter(endpoint=browser.endpoint).exists()


@pytest.mark.parametrize("behaviour", [Behaviour.GONE, Behaviour.NOT_FOUND])
def test_gone_subscriptions_are_deleted(
    db: None, service: FakePushService, behaviour: Behaviour
) -> None:
    user = UserFactory.create()
    dead, alive = service.subscribe(behaviour=behaviour), service.subscribe()
    subscribe(user, dead)
    subscribe(user, alive)

    outcome = push_send_to_users(user_ids=[user.pk], payload=PAYLOAD)

    assert (outcome.sent, outcome.gone, outcome.failed) == (1, 1, 0)
    assert outcome.errors == ()
    assert list(PushSubscription.objects.values_list("endpoint", flat=True)) == [alive.endpoint]


def test_a_server_error_counts_as_failed_and_keeps_the_subscription(
    db: None, service: FakePushService, caplog: pytest.LogCaptureFixture
) -> None:
    user = UserFactory.create()
    browser = service.subscribe(behaviour=Behaviour.SERVER_ERROR)
    subscription = subscribe(user, browser)

    outcome = push_send_to_users(user_ids=[user.pk], payload=PAYLOAD)

    assert (outcome.sent, outcome.gone, outcome.failed) == (0, 0, 1)
    [error] = outcome.errors
    assert "HTTP 500" in error and f"subscription {subscription.pk}" in error
    # The endpoint is a capability: the message names the host only.
    assert browser.id not in error
    subscription.refresh_from_db()
    assert subscription.last_success_at is None
    assert any(r.levelname == "WARNING" and "HTTP 500" in r.getMessage() for r in caplog.records)

    # The service recovers: the same subscription works again.
    service.set_behaviour(browser.id, Behaviour.ACCEPT)
    assert push_send_to_users(user_ids=[user.pk], payload=PAYLOAD).sent == 1


def test_a_hanging_push_service_times_out_without_holding_up_the_others(
    db: None, service: FakePushService
) -> None:
    user = UserFactory.create()
    hanging, fine = service.subscribe(behaviour=Behaviour.HANG), service.subscribe()
    subscribe(user, hanging)
    subscribe(user, fine)

    started = time.monotonic()
    outcome = push_send_to_users(user_ids=[user.pk], payload=PAYLOAD, timeout=1.0)
    elapsed = time.monotonic() - started

    assert elapsed < 4
    assert (outcome.sent, outcome.gone, outcome.failed) == (1, 0, 1)
    assert "timed out" in outcome.errors[0]
    assert decrypted(fine, service) == [PAYLOAD]
    assert PushSubscription.objects.count() == 2


def test_a_message_with_the_same_topic_replaces_the_undelivered_one(
    db: None, service: FakePushService
) -> None:
    user = UserFactory.create()
    browser = service.subscribe()
    subscribe(user, browser)
    first = {**PAYLOAD, "count": 1}
    second = {**PAYLOAD, "count": 2}

    push_send_to_users(user_ids=[user.pk], payload=first, topic="c12-h7")
    push_send_to_users(user_ids=[user.pk], payload=second, topic="c12-h7")
    assert decrypted(browser, service) == [second]
    assert service.pending(browser.id)[0].topic == "c12-h7"

    # Once delivered, a later message is new, not a replacement.
    assert len(service.deliver(browser.id)) == 1
    push_send_to_users(user_ids=[user.pk], payload=first, topic="c12-h7")
    assert service.delivered_count(browser.id) == 1
    assert decrypted(browser, service) == [first]

    # Without a topic, messages pile up.
    push_send_to_users(user_ids=[user.pk], payload=second)
    assert decrypted(browser, service) == [first, second]


def test_urgent_messages_carry_high_urgency(db: None, service: FakePushService) -> None:
    user = UserFactory.create()
    browser = service.subscribe()
    subscribe(user, browser)

    push_send_to_users(user_ids=[user.pk], payload={**PAYLOAD, "urgent": True}, urgency="high")

    [message] = service.pending(browser.id)
    assert message.headers["urgency"] == "high"
    assert decrypted(browser, service) == [{**PAYLOAD, "urgent": True}]


def test_nobody_subscribed_sends_nothing(db: None, service: FakePushService) -> None:
    user = UserFactory.create()
    assert push_send_to_users(user_ids=[user.pk], payload=PAYLOAD) == PushOutcome(0, 0, 0, ())
    assert service.requests_seen == 0


@pytest.mark.parametrize(
    "payload",
    [
        {**PAYLOAD, "title": "町内清掃のお知らせ"},
        {**PAYLOAD, "household": "山田"},
        {**PAYLOAD, "id": {"name": "山田"}},
        {**PAYLOAD, "url": "/c/sakura/?q=山田"},
        {**PAYLOAD, "url": "https://evil.example/"},
        {**PAYLOAD, "url": "//evil.example/"},
        {**PAYLOAD, "type": "山田さんへ"},
        {**PAYLOAD, "urgent": "yes"},
    ],
)
def test_a_payload_that_could_carry_personal_content_is_refused(
    db: None, service: FakePushService, payload: dict[str, object]
) -> None:
    user = UserFactory.create()
    subscribe(user, service.subscribe())
    with pytest.raises(ValueError):
        push_send_to_users(user_ids=[user.pk], payload=payload)
    assert service.requests_seen == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("topic", "circular:12"), ("topic", "x" * 33), ("urgency", "urgent"), ("ttl", -1)],
)
def test_bad_options_are_refused(db: None, option: str, value: object) -> None:
    with pytest.raises(ValueError):
        push_send_to_users(user_ids=[], payload=PAYLOAD, **{option: value})  # type: ignore[arg-type]


# --- the server key ---------------------------------------------------------------------


def test_the_embedded_key_is_generated_once_and_kept(embedded_key: Path) -> None:
    key = vapid_public_key()
    point = b64url_decode(key)
    assert len(point) == 65 and point[0] == 0x04
    assert "=" not in key
    assert vapid_public_key() == key

    key_file = embedded_key / push.KEY_FILE_NAME
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # A restart reads the file again and gets the same key.
    push._key_cache.clear()
    assert vapid_public_key() == key
    assert [p.name for p in embedded_key.iterdir()] == [push.KEY_FILE_NAME]


def test_another_data_dir_gets_another_key(settings: SettingsWrapper, tmp_path: Path) -> None:
    first = vapid_public_key()
    settings.DATA_DIR = tmp_path / "elsewhere"
    assert vapid_public_key() != first


def test_the_key_from_the_environment_wins(settings: SettingsWrapper, embedded_key: Path) -> None:
    configured = Vapid02()
    configured.generate_keys()
    settings.KAIRAN_VAPID_PRIVATE_KEY = configured.private_pem().decode().replace("\n", "\\n")
    settings.KAIRAN_VAPID_PUBLIC_KEY = push._public_key_of(configured)

    assert vapid_public_key() == push._public_key_of(configured)
    assert not (embedded_key / push.KEY_FILE_NAME).exists()


def test_a_public_key_that_does_not_match_is_a_configuration_error(
    settings: SettingsWrapper,
) -> None:
    configured, other = Vapid02(), Vapid02()
    configured.generate_keys()
    other.generate_keys()
    settings.KAIRAN_VAPID_PRIVATE_KEY = configured.private_pem().decode()
    settings.KAIRAN_VAPID_PUBLIC_KEY = push._public_key_of(other)
    with pytest.raises(ImproperlyConfigured):
        vapid_public_key()


# --- views ------------------------------------------------------------------------------


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_json(client: Client, url: str, body: object) -> tuple[int, dict[str, object]]:
    response = client.post(url, json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_subscribing_through_the_view_then_receiving_a_push(
    db: None, service: FakePushService
) -> None:
    user = UserFactory.create()
    browser = service.subscribe(application_server_key=vapid_public_key())
    client = logged_in(user)

    status, body = post_json(client, "/push/subscribe/", browser.to_json())
    assert (status, body) == (201, {"subscribed": True, "created": True})
    # The browser sends it again on every visit to the page: still one row.
    status, body = post_json(client, "/push/subscribe/", browser.to_json())
    assert (status, body["created"]) == (200, False)
    assert PushSubscription.objects.get().user == user

    assert push_send_to_users(user_ids=[user.pk], payload=PAYLOAD).sent == 1
    assert decrypted(browser, service) == [PAYLOAD]


def test_an_endpoint_belongs_to_whoever_subscribed_last(db: None, service: FakePushService) -> None:
    browser = service.subscribe()
    first, second = UserFactory.create(), UserFactory.create()
    post_json(logged_in(first), "/push/subscribe/", browser.to_json())
    post_json(logged_in(second), "/push/subscribe/", browser.to_json())
    assert list(PushSubscription.objects.values_list("user", flat=True)) == [second.pk]


def _valid_body() -> dict[str, object]:
    return browser_subscription(
        subscription_id="x", endpoint="https://push.example/send/x"
    ).to_json()


def _with(**changes: object) -> dict[str, object]:
    """A valid body with some fields replaced (p256dh and auth inside "keys")."""
    body = _valid_body()
    keys = body["keys"]
    assert isinstance(keys, dict)
    for name, value in changes.items():
        if name in {"p256dh", "auth"}:
            keys[name] = value
        else:
            body[name] = value
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_with(endpoint=None), "endpoint"),
        (_with(endpoint="ftp://push.example/abc"), "endpoint"),
        (_with(endpoint="javascript:alert(1)"), "endpoint"),
        (_with(endpoint="https://push.example/" + "a" * 1000), "endpoint"),
        (_with(keys="nope"), "keys"),
        (_with(p256dh="not base64!"), "keys.p256dh"),
        (_with(p256dh="AAAA"), "keys.p256dh"),
        (_with(auth=""), "keys.auth"),
        (_with(auth="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "keys.auth"),
        (["not", "an", "object"], "subscription"),
    ],
)
def test_a_bad_subscription_is_a_400_naming_the_field(db: None, body: object, field: str) -> None:
    status, answer = post_json(logged_in(UserFactory.create()), "/push/subscribe/", body)
    assert status == 400
    assert answer["field"] == field
    assert PushSubscription.objects.count() == 0


def test_a_body_that_is_not_json_is_a_400(db: None) -> None:
    response = logged_in(UserFactory.create()).post(
        "/push/subscribe/", "{oops", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "body"


def test_anonymous_cannot_subscribe_or_open_the_page(db: None) -> None:
    status, _ = post_json(Client(), "/push/subscribe/", _valid_body())
    assert status == 403
    assert PushSubscription.objects.count() == 0
    response = Client().get("/push/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_subscribe_needs_the_csrf_token(db: None) -> None:
    user = UserFactory.create()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    refused = client.post("/push/subscribe/", json.dumps(_valid_body()), "application/json")
    assert refused.status_code == 403

    page = client.get("/push/")
    token = page.context["csrf_token"]
    accepted = client.post(
        "/push/subscribe/",
        json.dumps(_valid_body()),
        content_type="application/json",
        headers={"X-CSRFToken": str(token)},
    )
    assert accepted.status_code == 201
    assert client.get("/push/subscribe/").status_code == 405


def test_unsubscribe_removes_only_the_own_endpoint(db: None, service: FakePushService) -> None:
    mine, theirs = service.subscribe(), service.subscribe()
    me, them = UserFactory.create(), UserFactory.create()
    subscribe(me, mine)
    subscribe(them, theirs)
    client = logged_in(me)

    assert post_json(client, "/push/unsubscribe/", {"endpoint": theirs.endpoint}) == (
        200,
        {"removed": False},
    )
    assert post_json(client, "/push/unsubscribe/", {"endpoint": mine.endpoint}) == (
        200,
        {"removed": True},
    )
    assert list(PushSubscription.objects.values_list("user", flat=True)) == [them.pk]
    assert post_json(client, "/push/unsubscribe/", {})[1]["field"] == "endpoint"


def test_the_settings_page_has_the_button_and_the_key(db: None) -> None:
    response = logged_in(UserFactory.create()).get("/push/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-vapid-key="{vapid_public_key()}"' in html
    assert "data-push-subscribe" in html
    assert 'data-subscribe-url="/push/subscribe/"' in html
    assert "/static/js/push.js" in html
    assert 'rel="manifest"' in html
    # No inline script: the page's CSP allows only files from this site.
    assert "<script>" not in html


def test_the_resident_home_page_links_to_the_settings(town: Town) -> None:
    html = logged_in(town.resident1).get("/").content.decode()
    assert 'href="/push/"' in html


def test_the_service_worker_is_served_from_the_root(db: None) -> None:
    response = Client().get("/sw.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert response["Service-Worker-Allowed"] == "/"
    assert response["Cache-Control"] == "no-cache"
    text = response.content.decode()
    for title in ("新しい回覧があります", "緊急の回覧があります", "確認をお願いします"):
        assert title in text
    assert "notificationclick" in text


def test_the_manifest_makes_a_standalone_app(db: None) -> None:
    response = Client().get("/push/manifest.webmanifest")
    assert response["Content-Type"].startswith("application/manifest+json")
    manifest = response.json()
    assert manifest["display"] == "standalone"
    assert manifest["start_url"] == manifest["scope"] == "/"
