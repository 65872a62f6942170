"""Events leave after commit, to the groups that match visibility, and never fail a write.

The services are called for real; a test channel subscribed to a group is the listener.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.db import transaction
from django.test import override_settings

from circulars import services
from circulars.models import Circular, Receipt, ReceiptMethod
from circulars.services import CircularData
from notifications.broadcast import Event, send_now
from notifications.groups import household_group, ledger_block_group, ledger_totals_group
from notifications.watchdog import probe
from tests.conftest import Town
from tests.factories import HouseholdFactory
from tests.realtime import listen

DEAD_REDIS = "redis://127.0.0.1:1/0"

type Capture = Callable[..., Any]


def layer_settings(backend: str, url: str = "") -> dict[str, Any]:
    if backend == "memory":
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [url]},
        }
    }


@pytest.fixture
def dead_layer() -> Iterator[None]:
    """The Redis pub/sub layer pointed at a port where nothing listens."""
    with override_settings(CHANNEL_LAYERS=layer_settings("redis", DEAD_REDIS)):
        channel_layers.backends = {}
        yield
    channel_layers.backends = {}


def publish(town: Town) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title="ごみ収集日の変更について"),
    )
    return services.circular_publish(circular=circular)


def test_confirm_sends_row_to_its_block_and_totals_after_commit(
    town: Town, memory_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    circular = publish(town)
    groups = {
        "block1": ledger_block_group(circular.pk, town.block1.pk),
        "block2": ledger_block_group(circular.pk, town.block2.pk),
        "totals": ledger_totals_group(circular.pk),
        "household1": household_group(town.household1.pk),
        "household2": household_group(town.household2.pk),
    }

    def confirm() -> None:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            services.receipt_confirm(
                circular=circular,
                household=town.household1,
                method=ReceiptMethod.PROXY_PHONE,
                recorded_by=town.leader1,
            )
        assert len(callbacks) == 1

    received = listen(groups, confirm)

    assert received["block2"] == []
    assert received["household2"] == []
    [row] = received["block1"]
    assert row["type"] == "event.forward"
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert row["payload"] == {
        "type": "ledger.receipt",
        "circular_id": circular.pk,
        "household_id": town.household1.pk,
        "block_id": town.block1.pk,
        "status": "confirmed",
        "method": "proxy_phone",
        "time": row["payload"]["time"],
        "version": receipt.version,
        "block_counts": {
            "total": 1,
            "confirmed": 1,
            "opened": 0,
            "not_yet": 0,
            "paper": 0,
            "paper_out": 0,
            "paper_collected": 0,
            "seq": receipt.version + 1,  # the sum of the rows' versions plus their number
        },
    }
    assert row["payload"]["time"]  # e.g. "4/1 09:30", local time
    [totals] = received["totals"]
    assert totals["payload"] == {
        "type": "ledger.totals",
        "circular_id": circular.pk,
        "counts": {
            "total": 2,
            "confirmed": 1,
            "opened": 0,
            "not_yet": 1,
            "paper": 0,
            "paper_out": 0,
            "paper_collected": 0,
            "seq": receipt.version + 2,
        },
    }
    [nudge] = received["household1"]
    assert nudge["payload"] == {
        "type": "inbox.circular",
        "circular_id": circular.pk,
        "change": "confirmed",
    }


def test_opening_sends_an_opened_row(
    town: Town, memory_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    circular = publish(town)
    groups = {
        "block2": ledger_block_group(circular.pk, town.block2.pk),
        "block1": ledger_block_group(circular.pk, town.block1.pk),
    }

    def open_twice() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            services.receipt_open(circular=circular, household=town.household2)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            services.receipt_open(circular=circular, household=town.household2)
        assert callbacks == []  # the second opening is not news

    received = listen(groups, open_twice)
    assert received["block1"] == []
    [row] = received["block2"]
    assert row["payload"]["status"] == "opened"
    assert row["payload"]["block_counts"]["opened"] == 1


def test_a_confirmation_already_recorded_sends_nothing(
    town: Town, memory_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    circular = publish(town)
    services.receipt_confirm(circular=circular, household=town.household1, method="app")
    groups = {"block1": ledger_block_group(circular.pk, town.block1.pk)}

    def confirm_again() -> None:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            result = services.receipt_confirm(
                circular=circular, household=town.household1, method=ReceiptMethod.PROXY_HAND
            )
        assert result.recorded is False
        assert callbacks == []

    assert listen(groups, confirm_again) == {"block1": []}


def test_nothing_is_sent_when_the_transaction_rolls_back(
    town: Town, memory_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    circular = publish(town)
    groups = {
        "block1": ledger_block_group(circular.pk, town.block1.pk),
        "totals": ledger_totals_group(circular.pk),
        "household1": household_group(town.household1.pk),
    }

    class Abort(Exception):
        pass

    def confirm_then_fail() -> None:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            try:
                with transaction.atomic():
                    services.receipt_confirm(
                        circular=circular, household=town.household1, method="app"
                    )
                    raise Abort
            except Abort:
                pass
        assert callbacks == []

    received = listen(groups, confirm_then_fail)
    assert received == {"block1": [], "totals": [], "household1": []}
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.confirmed_at is None


def test_publishing_tells_each_targeted_household(
    town: Town, memory_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    draft = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title="2班へ", all_blocks=False, blocks=[town.block2]),
    )
    groups = {
        "household1": household_group(town.household1.pk),
        "household2": household_group(town.household2.pk),
    }

    def publish_it() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            services.circular_publish(circular=draft)

    received = listen(groups, publish_it)
    assert received["household1"] == []
    [message] = received["household2"]
    assert message["payload"] == {
        "type": "inbox.circular",
        "circular_id": draft.pk,
        "change": "published",
    }


def test_a_dead_layer_never_fails_the_confirmation(
    town: Town, dead_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    circular = publish(town)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = services.receipt_confirm(
            circular=circular, household=town.household1, method=ReceiptMethod.APP
        )
    assert len(callbacks) == 1  # the broadcast was attempted, and swallowed
    assert result.recorded is True
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.confirmed_at is not None
    assert receipt.method == ReceiptMethod.APP
    # Sending by hand through the dead layer does not raise either.
    send_now(groups=[household_group(town.household1.pk)], event=Event(type="test.ping"))


@pytest.mark.django_db(transaction=True)
def test_a_dead_layer_never_fails_a_real_commit(town: Town, dead_layer: None) -> None:
    """With real commits (no test transaction around), on_commit runs the send for real."""
    circular = publish(town)
    result = services.receipt_confirm(
        circular=circular, household=town.household2, method=ReceiptMethod.PAPER
    )
    assert result.recorded is True
    assert Receipt.objects.get(circular=circular, household=town.household2).confirmed_at


# --- The watchdog's probe -----------------------------------------------------------------


def test_probe_passes_on_real_redis(redis_url: str) -> None:
    with override_settings(CHANNEL_LAYERS=layer_settings("redis", redis_url)):
        channel_layers.backends = {}
        try:

            async def scenario() -> bool:
                try:
                    return await probe()
                finally:
                    layer = get_channel_layer()
                    await layer.flush()

            assert async_to_sync(scenario)() is True
        finally:
            channel_layers.backends = {}


def test_probe_fails_on_a_dead_redis(dead_layer: None) -> None:
    assert async_to_sync(probe)() is False


def test_probe_passes_in_memory(memory_layer: None) -> None:
    assert async_to_sync(probe)() is True


def test_sends_from_sync_code_keep_one_redis_connection(redis_url: str) -> None:
    """A gunicorn worker sends from plain threads: 20 broadcasts, not 20 connections."""
    import redis

    client = redis.Redis.from_url(redis_url)
    with override_settings(CHANNEL_LAYERS=layer_settings("redis", redis_url)):
        channel_layers.backends = {}
        listener = get_channel_layer()
        assert listener is not None
        send_now(groups=["kairan-test-warm"], event=Event(type="test.ping"))  # connects once
        before = int(client.info("stats")["total_connections_received"])
        received = []

        async def receive_all() -> None:
            channel = await listener.new_channel()
            await listener.group_add("kairan-test-conn", channel)
            for _ in range(20):
                send_in_thread()
                received.append(await listener.receive(channel))

        def send_in_thread() -> None:
            import threading

            thread = threading.Thread(
                target=send_now, kwargs={"groups": ["kairan-test-conn"], "event": Event("t.x")}
            )
            thread.start()
            thread.join()

        async_to_sync(receive_all)()
        after = int(client.info("stats")["total_connections_received"])
    channel_layers.backends = {}
    client.close()
    assert len(received) == 20
    # The listener's own connection may be new, and Redis is shared; the old way made 21.
    assert after - before <= 5, f"{after - before} new Redis connections for 20 sends"


@pytest.mark.django_db(transaction=True)
def test_counts_are_coalesced_on_a_shared_layer_and_always_follow_the_last_change(
    town: Town, redis_url: str
) -> None:
    """Production shape: rows go out at once, counts once per window per circular (two
    aggregates for a burst instead of two per change), and a change after the window
    closed gets counts of its own. Every count carries a seq that grows."""
    household3 = HouseholdFactory.create(block=town.block2, label="鈴木")
    circular = publish(town)
    groups = {
        "block1": ledger_block_group(circular.pk, town.block1.pk),
        "block2": ledger_block_group(circular.pk, town.block2.pk),
        "totals": ledger_totals_group(circular.pk),
    }

    def burst_then_one_more() -> None:
        services.receipt_open(circular=circular, household=town.household1)
        services.receipt_confirm(circular=circular, household=town.household1, method="app")
        services.receipt_confirm(circular=circular, household=town.household2, method="app")
        time.sleep(0.8)  # the window (0.2 s) closes, its counts leave
        services.receipt_open(circular=circular, household=household3)
        time.sleep(0.8)

    with override_settings(
        CHANNEL_LAYERS=layer_settings("redis", redis_url), KAIRAN_LEDGER_COUNTS_SECONDS=0.2
    ):
        channel_layers.backends = {}
        try:
            received = listen(groups, burst_then_one_more)
        finally:
            channel_layers.backends = {}

    def payloads(name: str, kind: str) -> list[dict[str, Any]]:
        return [m["payload"] for m in received[name] if m["payload"]["type"] == kind]

    rows = payloads("block1", "ledger.receipt")
    assert [row["status"] for row in rows] == ["opened", "confirmed"]
    assert all(row["block_counts"] == {} for row in rows)  # counted apart
    [block1] = payloads("block1", "ledger.counts")  # one count for the whole burst
    assert block1["counts"]["confirmed"] == 1 and block1["counts"]["total"] == 1
    block2 = payloads("block2", "ledger.counts")
    assert [c["counts"]["confirmed"] for c in block2] == [1, 1]  # burst, then household3
    assert block2[-1]["counts"]["opened"] == 1
    totals = [p["counts"] for p in payloads("totals", "ledger.totals")]
    assert [(t["confirmed"], t["opened"]) for t in totals] == [(2, 0), (2, 1)]
    assert totals[0]["seq"] < totals[1]["seq"]
    assert block2[0]["counts"]["seq"] < block2[1]["counts"]["seq"]
