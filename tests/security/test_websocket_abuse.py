"""Hostile WebSocket clients against the real ASGI stack (origin check, session auth, routing).

Sockets are server → client only, so every abuse ends the same way: refused at connect, or
closed with 4400 at the first frame — once, whatever follows — and the application never
raises (``disconnect()`` re-raises anything the consumer raised).
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from circulars import services
from circulars.models import Circular
from circulars.services import CircularData
from config.asgi import application
from tests.conftest import Town
from tests.notifications.test_consumers import GOOD_ORIGIN, TIMEOUT
from tests.realtime import run, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

BAD_ORIGINS = [b"http://evil.example", b"https://localhost.evil.example", b"null", None]
ONE_MEGABYTE = 1024 * 1024


def publish(town: Town) -> Circular:
    circular = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="断水のお知らせ")
    )
    return services.circular_publish(circular=circular)


def socket(
    path: str, *, cookie: bytes | None, origin: bytes | None = GOOD_ORIGIN
) -> WebsocketCommunicator:
    headers = []
    if cookie is not None:
        headers.append((b"cookie", cookie))
    if origin is not None:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(application, path, headers=headers)


def ledger_path(slug: str, circular_id: int) -> str:
    return f"/ws/c/{slug}/circulars/{circular_id}/ledger/"


def assert_refused(path: str, *, cookie: bytes | None, origin: bytes | None = GOOD_ORIGIN) -> Any:
    """Connect and expect a refusal; return the close code (None for the origin check's 403)."""
    codes: list[Any] = []

    async def scenario() -> None:
        communicator = socket(path, cookie=cookie, origin=origin)
        connected, code = await communicator.connect(timeout=TIMEOUT)
        assert connected is False, path
        codes.append(code)
        await communicator.disconnect()

    run(scenario)
    return codes[0]


@pytest.mark.parametrize("origin", BAD_ORIGINS, ids=["evil", "suffix", "null", "missing"])
def test_bad_or_missing_origin_is_refused_on_the_ledger(town: Town, origin: bytes | None) -> None:
    circular = publish(town)
    path = ledger_path(town.community.slug, circular.pk)
    assert_refused(path, cookie=session_cookie(town.chair), origin=origin)


def test_no_session_or_a_forged_one_is_refused(town: Town) -> None:
    circular = publish(town)
    name = settings.SESSION_COOKIE_NAME
    forged = [None, f"{name}=not-a-session-key".encode(), f"{name}={'a' * 32}".encode()]
    for path in ("/ws/inbox/", ledger_path(town.community.slug, circular.pk)):
        for cookie in forged:
            assert assert_refused(path, cookie=cookie) == 4401, (path, cookie)


def test_the_ledger_refuses_other_associations_and_residents(town: Town) -> None:
    circular = publish(town)
    own = ledger_path(town.community.slug, circular.pk)
    # Another association's chair: by our slug, and by their own slug with our circular id.
    other_chair = session_cookie(town.other_chair)
    assert assert_refused(own, cookie=other_chair) == 4404
    assert (
        assert_refused(ledger_path(town.other_community.slug, circular.pk), cookie=other_chair)
        == 4404
    )
    # Our chair cannot reach our circular through another association's slug either.
    assert (
        assert_refused(
            ledger_path(town.other_community.slug, circular.pk), cookie=session_cookie(town.chair)
        )
        == 4404
    )
    for resident in (town.resident1, town.other_resident):
        assert assert_refused(own, cookie=session_cookie(resident)) == 4404


@pytest.mark.parametrize("circular_id", ["0", "99999999999999999999999999"])
def test_unknown_or_absurd_circular_ids_are_refused(town: Town, circular_id: str) -> None:
    path = f"/ws/c/{town.community.slug}/circulars/{circular_id}/ledger/"
    assert assert_refused(path, cookie=session_cookie(town.chair)) == 4404


def talk_and_expect_one_close(
    path: str, cookie: bytes, frames: list[dict[str, Any]], *, expect_hello: bool = True
) -> None:
    async def scenario() -> None:
        communicator = socket(path, cookie=cookie)
        connected, _subprotocol = await communicator.connect(timeout=TIMEOUT)
        assert connected is True
        if expect_hello:
            assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "hello"
        for frame in frames:
            await communicator.send_to(**frame)
        output = await communicator.receive_output(timeout=TIMEOUT)
        assert output == {"type": "websocket.close", "code": 4400}
        # Exactly one close: a second one after close is an error in a real server.
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize("kind", ["inbox", "ledger"])
def test_a_text_frame_closes_the_socket(town: Town, kind: str) -> None:
    circular = publish(town)
    path = "/ws/inbox/" if kind == "inbox" else ledger_path(town.community.slug, circular.pk)
    user = town.resident1 if kind == "inbox" else town.chair
    talk_and_expect_one_close(path, session_cookie(user), [{"text_data": '{"type":"hello"}'}])


def test_a_flood_is_closed_once_without_raising(town: Town) -> None:
    frames = [{"text_data": f"flood {n}"} for n in range(1000)]
    talk_and_expect_one_close("/ws/inbox/", session_cookie(town.resident1), frames)


@pytest.mark.parametrize("kind", ["text", "bytes"])
def test_a_one_megabyte_frame_is_closed(town: Town, kind: str) -> None:
    frame: dict[str, Any] = (
        {"text_data": "あ" * (ONE_MEGABYTE // 3 + 1)}
        if kind == "text"
        else {"bytes_data": b"\x00" * ONE_MEGABYTE}
    )
    circular = publish(town)
    talk_and_expect_one_close(
        ledger_path(town.community.slug, circular.pk), session_cookie(town.chair), [frame]
    )
