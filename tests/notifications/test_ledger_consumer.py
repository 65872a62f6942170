"""The live 配布状況 socket and the inbox socket, through the real ASGI stack.

Writes go through the real services (as the HTTP views call them); the events reach the
sockets after commit through the channel layer. Every check runs with the in-memory layer
and with the Redis pub/sub layer production uses (skips locally without Redis, fails in CI).
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from circulars import services
from circulars.models import Circular, ReceiptMethod
from circulars.services import CircularData
from communities.models import Block, Household
from config.asgi import application
from tests.conftest import Town
from tests.realtime import run, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
QUIET = 0.5
GOOD_ORIGIN = b"http://localhost"


def ledger_socket(
    town: Town,
    circular: Circular,
    *,
    cookie: bytes | None,
    origin: bytes | None = GOOD_ORIGIN,
    slug: str | None = None,
) -> WebsocketCommunicator:
    headers = []
    if cookie is not None:
        headers.append((b"cookie", cookie))
    if origin is not None:
        headers.append((b"origin", origin))
    path = f"/ws/c/{slug or town.community.slug}/circulars/{circular.pk}/ledger/"
    return WebsocketCommunicator(application, path, headers=headers)


def inbox_socket(cookie: bytes) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/inbox/", headers=[(b"cookie", cookie), (b"origin", GOOD_ORIGIN)]
    )


def publish(
    town: Town, title: str = "ごみ収集日の変更", blocks: list[Block] | None = None
) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title=title, all_blocks=blocks is None, blocks=blocks or []),
    )
    return services.circular_publish(circular=circular)


async def confirm(circular: Circular, household: Household, method: str = "app") -> None:
    """Confirm as the views do: a committed service call, its events sent on commit."""
    result = await sync_to_async(services.receipt_confirm)(
        circular=circular, household=household, method=method
    )
    assert result.recorded


async def connected(socket: WebsocketCommunicator) -> None:
    ok, _subprotocol = await socket.connect(timeout=TIMEOUT)
    assert ok is True
    assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "hello"}


async def receive_types(socket: WebsocketCommunicator, count: int) -> dict[str, dict[str, Any]]:
    messages = [await socket.receive_json_from(timeout=TIMEOUT) for _ in range(count)]
    by_type = {message["type"]: message for message in messages}
    assert len(by_type) == count, messages
    return by_type


# --- Refusals -------------------------------------------------------------------------------


def test_anonymous_is_refused(layer: str, town: Town) -> None:
    circular = publish(town)

    async def scenario() -> None:
        socket = ledger_socket(town, circular, cookie=None)
        ok, code = await socket.connect(timeout=TIMEOUT)
        assert (ok, code) == (False, 4401)
        await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize("role", ["resident1", "resident2", "other_chair", "other_resident"])
def test_residents_and_strangers_are_refused(layer: str, town: Town, role: str) -> None:
    circular = publish(town)
    cookie = session_cookie(getattr(town, role))
    other_slug = town.other_community.slug

    async def scenario() -> None:
        for slug in (None, other_slug):
            socket = ledger_socket(town, circular, cookie=cookie, slug=slug)
            ok, code = await socket.connect(timeout=TIMEOUT)
            assert (ok, code) == (False, 4404), slug
            await socket.disconnect()

    run(scenario)


def test_block_leader_is_refused_a_circular_not_sent_to_their_block(layer: str, town: Town) -> None:
    block2_only = publish(town, "2班だけ", blocks=[town.block2])
    draft = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="下書き")
    )
    leader = session_cookie(town.leader1)
    helper = session_cookie(town.helper2)

    async def scenario() -> None:
        for circular, cookie, allowed in (
            (block2_only, leader, False),
            (draft, leader, False),
            (draft, helper, False),
            (block2_only, helper, True),
        ):
            socket = ledger_socket(town, circular, cookie=cookie)
            ok, code = await socket.connect(timeout=TIMEOUT)
            assert ok is allowed, (circular.title, code)
            if not allowed:
                assert code == 4404
            await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"https://localhost.evil.example", b"null", None]
)
def test_bad_origin_is_refused(layer: str, town: Town, origin: bytes | None) -> None:
    circular = publish(town)
    cookie = session_cookie(town.chair)

    async def scenario() -> None:
        socket = ledger_socket(town, circular, cookie=cookie, origin=origin)
        ok, _code = await socket.connect(timeout=TIMEOUT)
        assert ok is False
        await socket.disconnect()

    run(scenario)


# --- Live events ------------------------------------------------------------------------------


def test_chair_receives_both_blocks_and_totals(layer: str, town: Town) -> None:
    circular = publish(town)
    cookie = session_cookie(town.chair)

    async def scenario() -> None:
        socket = ledger_socket(town, circular, cookie=cookie)
        await connected(socket)

        await confirm(circular, town.household2, ReceiptMethod.PROXY_VISIT)
        events = await receive_types(socket, 2)
        assert events["ledger.receipt"]["block_id"] == town.block2.pk
        assert events["ledger.receipt"]["household_id"] == town.household2.pk
        assert events["ledger.receipt"]["method"] == "proxy_visit"
        assert events["ledger.totals"]["counts"]["confirmed"] == 1

        await confirm(circular, town.household1)
        events = await receive_types(socket, 2)
        assert events["ledger.receipt"]["block_id"] == town.block1.pk
        assert events["ledger.receipt"]["status"] == "confirmed"
        assert events["ledger.totals"]["counts"] == {
            "total": 2,
            "confirmed": 2,
            "opened": 0,
            "not_yet": 0,
            "paper": 0,
            "paper_out": 0,
            "paper_collected": 0,
            "seq": 4,  # two rows, each at version 1
        }
        assert await socket.receive_nothing(timeout=0.2)
        await socket.disconnect()

    run(scenario)


def test_block_leader_never_receives_another_blocks_rows(layer: str, town: Town) -> None:
    circular = publish(town)
    cookie = session_cookie(town.leader1)

    async def scenario() -> None:
        socket = ledger_socket(town, circular, cookie=cookie)
        await connected(socket)

        await confirm(circular, town.household2)
        assert await socket.receive_nothing(timeout=QUIET)

        await confirm(circular, town.household1)
        event = await socket.receive_json_from(timeout=TIMEOUT)
        assert event["type"] == "ledger.receipt"
        assert event["block_id"] == town.block1.pk
        assert event["household_id"] == town.household1.pk
        assert event["block_counts"]["confirmed"] == 1
        assert event["block_counts"]["total"] == 1
        # Totals cover every block: a 班長 gets their block's counts in the row event only.
        assert await socket.receive_nothing(timeout=QUIET)
        await socket.disconnect()

    run(scenario)


def test_helper_follows_block2_only(layer: str, town: Town) -> None:
    circular = publish(town)
    cookie = session_cookie(town.helper2)

    async def scenario() -> None:
        socket = ledger_socket(town, circular, cookie=cookie)
        await connected(socket)
        await confirm(circular, town.household1)
        assert await socket.receive_nothing(timeout=QUIET)
        await confirm(circular, town.household2, ReceiptMethod.PAPER)
        event = await socket.receive_json_from(timeout=TIMEOUT)
        assert (event["type"], event["block_id"], event["method"]) == (
            "ledger.receipt",
            town.block2.pk,
            "paper",
        )
        await socket.disconnect()

    run(scenario)


def test_inbox_hears_of_a_circular_published_to_the_household(layer: str, town: Town) -> None:
    cookie = session_cookie(town.resident1)
    to_block2 = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title="2班へ", all_blocks=False, blocks=[town.block2]),
    )
    to_everyone = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="全体へ")
    )

    async def scenario() -> None:
        socket = inbox_socket(cookie)
        await connected(socket)
        await sync_to_async(services.circular_publish)(circular=to_block2)
        assert await socket.receive_nothing(timeout=QUIET)
        await sync_to_async(services.circular_publish)(circular=to_everyone)
        assert await socket.receive_json_from(timeout=TIMEOUT) == {
            "type": "inbox.circular",
            "circular_id": to_everyone.pk,
            "change": "published",
        }
        await socket.disconnect()

    run(scenario)
