"""Push steps handed to the worker in batches, and the VAPID header reused per push service.

Real throughout: pywebpush encrypts, the fake push service on loopback verifies every
VAPID JWT, and the two-worker test runs two ``manage.py db_worker`` processes on a fresh
database (SQLite file, or PostgreSQL when ``DATABASE_URL`` is set).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.tasks.signals import task_enqueued
from pytest_django.fixtures import Settings as SettingsWrapper

from circulars.models import Priority
from communities.models import DeliveryMode
from notifications import delivery, push
from notifications.delivery import deliveries_send
from notifications.models import Delivery, DeliveryStatus, PushSubscription
from notifications.push import push_send_to_users, vapid_key
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory
from tests.fakes.push_service import BrowserSubscription, FakePushService
from tests.notifications.test_ladder import DAY, at, give_push, publish_circular
from tests.notifications.test_worker_restart import (  # noqa: F401 (fixture)
    database_env,
    kill,
    run_python,
    start_worker,
)

type Capture = Callable[..., AbstractContextManager[list[Callable[[], object]]]]

PAYLOAD: dict[str, object] = {"type": "circular", "id": 1, "url": "/c/x/circulars/1/"}


@pytest.fixture(autouse=True)
def own_key(settings: SettingsWrapper, tmp_path: Path) -> None:
    """A VAPID key of this test's own, so no header is carried over from another test."""
    settings.DATA_DIR = tmp_path / "data"
    settings.KAIRAN_VAPID_PRIVATE_KEY = ""
    settings.KAIRAN_VAPID_PUBLIC_KEY = ""


@pytest.fixture
def service() -> Iterator[FakePushService]:
    with FakePushService() as running:
        yield running


def households_with_push(
    town: Town, service: FakePushService, count: int
) -> list[BrowserSubscription]:
    browsers = []
    for n in range(count):
        household = HouseholdFactory.create(
            block=town.block1, label=f"世帯{n}", delivery_mode=DeliveryMode.APP
        )
        MemberFactory.create(household=household)
        browser = service.subscribe()
        give_push(household, browser)
        browsers.append(browser)
    return browsers


# --- batches ------------------------------------------------------------------------------


def test_publishing_hands_push_steps_over_in_batches_and_each_row_is_sent_once(
    town: Town,
    service: FakePushService,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    monkeypatch.setattr(delivery, "HAND_OVER_BATCH", 3)
    browsers = households_with_push(town, service, 7)
    batches: list[list[int]] = []

    def enqueued(sender: object, task_result: Any, **kwargs: object) -> None:
        batches.append(list(task_result.kwargs["delivery_ids"]))

    task_enqueued.connect(enqueued)
    try:
        with (
            time_machine.travel(at(DAY, 10, 0), tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            circular = publish_circular(town, title="断水のお知らせ", priority=Priority.URGENT)
    finally:
        task_enqueued.disconnect(enqueued)

    push_rows = Delivery.objects.filter(circular=circular, step="publish", channel="push")
    ids = sorted(push_rows.values_list("pk", flat=True))
    assert len(ids) == 7
    assert [len(batch) for batch in batches] == [3, 3, 1]  # one task per 3 rows
    assert sorted(pk for batch in batches for pk in batch) == ids
    for browser in browsers:
        [message] = service.pending(browser.id)
        assert json.loads(browser.decrypt(message.body))["id"] == circular.pk
    assert service.requests_seen == 7
    assert set(push_rows.values_list("status", "attempts")) == {(DeliveryStatus.SENT, 1)}

    # The same rows handed over again (a re-enqueued batch): every one is taken, no push.
    with time_machine.travel(at(DAY, 10, 1), tick=False):
        assert deliveries_send(delivery_ids=ids) == dict.fromkeys(ids, "taken")
    assert service.requests_seen == 7


def test_a_batch_keeps_going_past_a_failing_push_service_and_retries_only_that_row(
    town: Town, service: FakePushService
) -> None:
    from tests.fakes.push_service import Behaviour

    browsers = households_with_push(town, service, 3)
    service.set_behaviour(browsers[1].id, Behaviour.SERVER_ERROR)
    with time_machine.travel(at(DAY, 10, 0), tick=False):
        circular = publish_circular(town, priority=Priority.URGENT)  # no on-commit: not sent
    rows = list(
        Delivery.objects.filter(circular=circular, channel="push").order_by(
            "receipt__household__label"
        )
    )
    labels = [row.receipt.household.label for row in rows if row.receipt and row.receipt.household]
    assert labels == ["世帯0", "世帯1", "世帯2"]
    with time_machine.travel(at(DAY, 10, 0), tick=False):
        outcomes = deliveries_send(delivery_ids=[row.pk for row in rows])
    assert [outcomes[row.pk] for row in rows] == ["sent", "retry", "sent"]
    failing = Delivery.objects.get(pk=rows[1].pk)
    assert failing.status == DeliveryStatus.PENDING and failing.attempts == 1
    assert failing.due_at == at(DAY, 10, 1)  # the first back-off
    assert "HTTP 500" in failing.last_error
    assert len(service.pending(browsers[0].id)) == len(service.pending(browsers[2].id)) == 1


# --- two real workers ---------------------------------------------------------------------

HOUSEHOLDS = 24


def seed_overlapping_batches() -> None:
    """In a subprocess: HOUSEHOLDS households with push at the fake service whose
    subscriptions are in KAIRAN_TEST_SUBSCRIPTIONS; publish an urgent circular (its rows go
    to the worker in one batch) and hand the same rows over twice more in other orders and
    cuts, as a re-enqueue would."""
    from datetime import time as clock

    from django.utils import timezone

    from circulars.services import CircularData, circular_create, circular_publish
    from communities.models import Block, Community, Household, Member, RoleKind
    from communities.services import CONSENT_VERSION, role_assign
    from notifications.tasks import send_deliveries

    subscriptions = json.loads(Path(os.environ["KAIRAN_TEST_SUBSCRIPTIONS"]).read_text())
    community = Community.objects.create(
        name="ひばり町内会", slug="hibari", quiet_start=clock(0), quiet_end=clock(0)
    )
    block = Block.objects.create(community=community, name="1班", position=1)
    chair = User.objects.create_user(username="chair")
    role_assign(community=community, user=chair, role=RoleKind.CHAIR)
    for n, subscription in enumerate(subscriptions):
        household = Household.objects.create(
            community=community,
            block=block,
            label=f"世帯{n:02d}",
            circulation_order=n,
            delivery_mode=DeliveryMode.APP,
        )
        user = User.objects.create_user(username=f"resident{n:02d}")
        Member.objects.create(
            household=household,
            user=user,
            display_name=f"住民{n:02d}",
            consented_at=timezone.now(),
            consent_version=CONSENT_VERSION,
        )
        PushSubscription.objects.create(user=user, **subscription)
    circular = circular_create(
        community=community,
        author=chair,
        data=CircularData(title="安否確認", priority=Priority.URGENT),
    )
    circular_publish(circular=circular)
    ids = list(
        Delivery.objects.filter(circular=circular, channel="push")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    assert len(ids) == len(subscriptions)
    send_deliveries.enqueue(delivery_ids=ids[::-1])
    for start in range(0, len(ids), 5):
        send_deliveries.enqueue(delivery_ids=ids[start : start + 5])
    print(json.dumps({"rows": len(ids)}))


def run_here(env: dict[str, str], function: str) -> Any:
    """Call one of this module's functions in a subprocess with Django set up."""
    code = (
        "import django; django.setup(); "
        f"from tests.notifications.test_batch_delivery import {function}; {function}()"
    )
    return json.loads(run_python(env, "-c", code).strip().splitlines()[-1])


def report_rows_and_tasks() -> None:
    from django_tasks_db.models import DBTaskResult

    rows = list(Delivery.objects.filter(channel="push").values_list("status", "attempts"))
    results = [
        task.return_value
        for task in DBTaskResult.objects.filter(task_path__endswith="send_deliveries")
    ]
    print(json.dumps({"rows": rows, "results": results}))


def test_two_workers_with_overlapping_batches_send_every_row_exactly_once(
    database_env: dict[str, str],  # noqa: F811 (fixture)
    service: FakePushService,
    tmp_path: Path,
) -> None:
    browsers = [service.subscribe() for _ in range(HOUSEHOLDS)]
    subscriptions = tmp_path / "subscriptions.json"
    subscriptions.write_text(
        json.dumps([{"endpoint": b.endpoint, "p256dh": b.p256dh, "auth": b.auth} for b in browsers])
    )
    env = {
        **database_env,
        "KAIRAN_TASKS_BACKEND": "database",
        "KAIRAN_TEST_SUBSCRIPTIONS": str(subscriptions),
        "KAIRAN_LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "0",
    }
    log = Path(env["KAIRAN_DATA_DIR"]) / "workers.log"
    run_python(env, "manage.py", "migrate", "--noinput", "-v", "0")
    seeded = run_here(env, "seed_overlapping_batches")
    assert seeded == {"rows": HOUSEHOLDS}
    assert service.requests_seen == 0  # nothing goes out before a worker runs

    workers = [start_worker(env, log, "--batch") for _ in range(2)]
    try:
        for worker in workers:
            worker.wait(timeout=180)
    finally:
        for worker in workers:
            kill(worker)
    assert [w.returncode for w in workers] == [0, 0], log.read_text(errors="replace")[-3000:]

    # Every browser got exactly one request: the fake replaces pending messages with the
    # same topic, so the request count is what would show a duplicate.
    assert service.requests_seen == HOUSEHOLDS
    for browser in browsers:
        assert len(service.pending(browser.id)) == 1
    report = run_here(env, "report_rows_and_tasks")
    assert sorted(map(tuple, report["rows"])) == [("sent", 1)] * HOUSEHOLDS
    sent = sum(result.get("sent", 0) for result in report["results"])
    taken = sum(result.get("taken", 0) for result in report["results"])
    assert (sent, taken) == (HOUSEHOLDS, 2 * HOUSEHOLDS)  # three hand-overs of each row


# --- the VAPID header ---------------------------------------------------------------------


def authorization(service: FakePushService, browser: BrowserSubscription) -> list[str]:
    return [message.headers["authorization"] for message in service.pending(browser.id)]


def test_one_vapid_header_per_push_service_is_reused_and_renewed_before_it_expires(
    db: None, service: FakePushService
) -> None:
    user = User.objects.create_user(username="hanako")
    phone, tablet = service.subscribe(), service.subscribe()
    for browser in (phone, tablet):
        PushSubscription.objects.create(
            user=user, endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth
        )
    start = at(DAY, 10, 0)

    with time_machine.travel(start, tick=False):
        assert push_send_to_users(user_ids=[user.pk], payload=PAYLOAD, topic="a").sent == 2
    with time_machine.travel(start + timedelta(hours=10), tick=False):
        assert push_send_to_users(user_ids=[user.pk], payload=PAYLOAD, topic="b").sent == 2
    first = authorization(service, phone) + authorization(service, tablet)
    assert len(first) == 4 and len(set(first)) == 1  # signed once, reused 10 hours later
    [message, *_] = service.pending(phone.id)
    assert message.claims["exp"] == int(start.timestamp()) + 12 * 3600

    # Within the last hour of its 12, the header is signed again; the fake accepts it.
    later = start + timedelta(hours=11, minutes=30)
    with time_machine.travel(later, tick=False):
        assert push_send_to_users(user_ids=[user.pk], payload=PAYLOAD, topic="c").sent == 2
    renewed = next(m for m in service.pending(phone.id) if m.headers["topic"] == "c")
    assert renewed.headers["authorization"] != first[0]
    assert renewed.claims["exp"] == int(later.timestamp()) + 12 * 3600

    # A clock set back before the token was issued gets a fresh one too: never a token that
    # would live longer than 24 hours from now (the fake would refuse it).
    earlier = start - timedelta(days=2)
    with time_machine.travel(earlier, tick=False):
        assert push_send_to_users(user_ids=[user.pk], payload=PAYLOAD, topic="d").sent == 2
    back = next(m for m in service.pending(phone.id) if m.headers["topic"] == "d")
    assert back.claims["exp"] == int(earlier.timestamp()) + 12 * 3600


def test_the_vapid_header_is_per_push_service_origin(db: None) -> None:
    key = vapid_key()
    now = time.time()
    one = push.vapid_headers(vapid=key, origin="https://fcm.googleapis.com", now=now)
    again = push.vapid_headers(vapid=key, origin="https://fcm.googleapis.com", now=now + 60)
    other = push.vapid_headers(
        vapid=key, origin="https://updates.push.services.mozilla.com", now=now
    )
    assert one is again
    assert other["Authorization"] != one["Authorization"]
