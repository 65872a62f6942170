"""One 安否確認 answer, the path a whole city takes at once after an earthquake: its query
count is pinned (a regression fails here), and what it sends live stays exactly the same."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from circulars import safety
from circulars.models import Circular, Receipt, ReceiptMethod, SafetyReport, SafetyStatus
from circulars.safety import SafetyResult
from communities.models import Household
from notifications.groups import household_group, ledger_block_group, ledger_totals_group
from tests.conftest import Town
from tests.realtime import listen

pytestmark = pytest.mark.django_db

type Capture = Callable[..., Any]

# The whole POST of the phone's service worker (JSON reply), sessions in the database:
# session, user, the member's access, the check with the receipt, the member; then the
# answer in its transaction (here a savepoint in the test's, in production BEGIN and
# COMMIT): lock the receipt, the stored key and the current answer in one read, the
# insert, the confirmation. It was 19 (the receipt read three times, the current answer
# up to four, two nested savepoints).
ANSWER_QUERIES = 11
# The same key again: everything up to the one read that finds it stored (was 13).
REPLAY_QUERIES = 9


def start(town: Town) -> Circular:
    return safety.safety_check_start(community=town.community, author=town.chair, drill=True)


def phone(town: Town) -> Client:
    client = Client(headers={"Accept": "application/json"})
    client.force_login(town.resident1)
    return client


def post(client: Client, town: Town, check: Circular, **data: str) -> Any:
    path = reverse("circulars:safety_answer", args=[town.community.slug, check.pk])
    return client.post(path, {"status": "safe", "key": str(uuid.uuid4()), **data})


def app_report(
    check: Circular, household: Household, status: str, key: uuid.UUID | None
) -> SafetyResult:
    return safety.safety_report(
        circular=check, household=household, status=status, method=ReceiptMethod.APP, key=key
    )


def counted(action: Callable[[], Any]) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as queries:
        result = action()
    return len(queries), result


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db")
def test_one_answer_and_its_replay_cost_a_fixed_number_of_queries(town: Town) -> None:
    check = start(town)
    client = phone(town)
    key = str(uuid.uuid4())

    queries, response = counted(lambda: post(client, town, check, key=key))
    assert response.status_code == 200
    assert response.json()["replay"] is False
    assert queries == ANSWER_QUERIES, f"one answer: {queries} queries"

    queries, response = counted(lambda: post(client, town, check, key=key, status="help"))
    assert response.json() == {
        "status": "safe",
        "replay": True,
        "superseded": False,
        "text": response.json()["text"],
    }
    assert response.json()["text"]
    assert queries == REPLAY_QUERIES, f"a replay: {queries} queries"

    # A second answer finds the receipt confirmed already: no UPDATE.
    queries, response = counted(lambda: post(client, town, check, status="help"))
    assert response.json()["status"] == "help"
    assert queries == ANSWER_QUERIES - 1, f"a second answer: {queries} queries"


def test_the_service_alone_reads_the_receipt_once(town: Town) -> None:
    check = start(town)
    with CaptureQueriesContext(connection) as queries:
        app_report(check, town.household1, SafetyStatus.SAFE, uuid.uuid4())
    receipt_reads = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].startswith("SELECT") and 'FROM "circulars_receipt"' in query["sql"]
    ]
    assert len(receipt_reads) == 1, receipt_reads


def test_an_answer_sends_the_same_events_after_commit(
    town: Town, memory_layer: None, django_capture_on_commit_callbacks: Capture
) -> None:
    check = start(town)
    client = phone(town)
    groups = {
        "totals": ledger_totals_group(check.pk),
        "block1": ledger_block_group(check.pk, town.block1.pk),
        "block2": ledger_block_group(check.pk, town.block2.pk),
        "household1": household_group(town.household1.pk),
        "household2": household_group(town.household2.pk),
    }
    key = str(uuid.uuid4())
    sent: list[int] = []

    def answer(**data: str) -> None:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert post(client, town, check, **data).status_code == 200
        sent.append(len(callbacks))

    def types(received: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
        return {name: [m["payload"]["type"] for m in got] for name, got in received.items()}

    first = listen(groups, lambda: answer(key=key))
    assert types(first) == {
        "totals": ["ledger.totals", "safety.changed"],
        "block1": ["ledger.receipt", "safety.changed"],
        "block2": [],
        "household1": ["inbox.circular", "safety.changed"],
        "household2": [],
    }
    receipt = Receipt.objects.get(circular=check, household=town.household1)
    [row, changed] = first["block1"]
    assert row["payload"]["status"] == "confirmed"
    assert row["payload"]["method"] == ReceiptMethod.APP
    assert row["payload"]["version"] == receipt.version
    assert changed["payload"] == {
        "type": "safety.changed",
        "circular_id": check.pk,
        "block_id": town.block1.pk,
        "household_id": town.household1.pk,
        "status": "safe",
    }
    assert sent == [2]  # the confirmation's events, then the safety change

    replay = listen(groups, lambda: answer(key=key, status="help"))
    assert types(replay) == {name: [] for name in groups}, "a resend sends nothing"

    second = listen(groups, lambda: answer(status="help"))
    assert types(second) == {
        "totals": ["safety.changed"],
        "block1": ["safety.changed"],
        "block2": [],
        "household1": ["safety.changed"],
        "household2": [],
    }, "already confirmed: only the safety change"
    assert second["block1"][0]["payload"]["status"] == "help"
    assert sent == [2, 0, 1]
    assert receipt.version == Receipt.objects.get(pk=receipt.pk).version, "confirmed once"


def raced_key(
    town: Town, monkeypatch: pytest.MonkeyPatch, capture: Capture | None = None
) -> list[Any]:
    """Two requests with one key: the second looked before the first had stored it, so its
    insert hits the unique key. Returns the callbacks the second left for after commit."""
    check = start(town)
    key = uuid.uuid4()
    first = app_report(check, town.household1, SafetyStatus.SAFE, key)
    real = safety._stored_and_current
    looks: list[uuid.UUID | None] = []

    def blind_first_look(receipt: Receipt, key: uuid.UUID | None) -> Any:
        looks.append(key)
        stored, current = real(receipt, key)
        return (None, current) if len(looks) == 1 else (stored, current)

    monkeypatch.setattr(safety, "_stored_and_current", blind_first_look)
    with capture() if capture else contextlib.nullcontext([]) as callbacks:
        again = app_report(check, town.household1, SafetyStatus.HELP, key)
    assert len(looks) == 2, "looked again after the insert failed"
    assert again.replay is True
    assert again.report == first.report
    assert again.status == SafetyStatus.SAFE
    assert again.current == first.report
    assert SafetyReport.objects.filter(key=key).count() == 1
    # Another household whose insert raced with that key: refused, as when it looks in time.
    looks.clear()
    with pytest.raises(ValidationError) as error:
        app_report(check, town.household2, SafetyStatus.SAFE, key)
    assert len(looks) == 2
    assert "key" in error.value.message_dict
    assert Receipt.objects.get(circular=check, household=town.household2).confirmed_at is None
    return list(callbacks)


def test_a_key_that_raced_in_from_a_second_request_is_a_replay(
    town: Town, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Capture
) -> None:
    callbacks = raced_key(town, monkeypatch, django_capture_on_commit_callbacks)
    assert callbacks == [], "a replay sends nothing, and the failed attempt had sent nothing"


@pytest.mark.django_db(transaction=True)
def test_a_raced_key_outside_any_test_transaction(
    town: Town, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in production, the answer's transaction is the outermost one: on PostgreSQL the
    failed insert aborts it, so it is rolled back whole and tried again."""
    assert connection.get_autocommit()
    raced_key(town, monkeypatch)
    assert Receipt.objects.filter(confirmed_at__isnull=False).count() == 1


# --- Races for real (PostgreSQL: concurrent writers and row locks) ------------------------


def at_once(*calls: Callable[[], SafetyResult]) -> list[SafetyResult | BaseException]:
    """Run the calls in threads, released together; each on its own connection."""
    barrier = threading.Barrier(len(calls), timeout=10)
    outcomes: list[SafetyResult | BaseException] = [ValueError("no outcome")] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            outcomes[index] = calls[index]()
        except BaseException as error:  # reported by the caller
            outcomes[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_answers_at_once_on_postgresql(town: Town) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs concurrent writers and row locks (PostgreSQL)")
    check = start(town)
    report = partial(app_report, check)
    for round_ in range(10):
        SafetyReport.objects.all().delete()
        Receipt.objects.filter(circular=check).update(
            confirmed_at=None, opened_at=None, method="", version=0
        )
        # One household, one key, twice (a resend while the first is in flight).
        key = uuid.uuid4()
        outcomes = at_once(
            partial(report, town.household1, SafetyStatus.SAFE, key),
            partial(report, town.household1, SafetyStatus.SAFE, key),
        )
        assert not [o for o in outcomes if isinstance(o, BaseException)], (round_, outcomes)
        results = [o for o in outcomes if isinstance(o, SafetyResult)]
        assert sorted(result.replay for result in results) == [False, True], round_
        assert SafetyReport.objects.filter(key=key).count() == 1
        # One household, two answers: both stored, one confirmation, the later one stands.
        outcomes = at_once(
            lambda: report(town.household2, SafetyStatus.SAFE, uuid.uuid4()),
            lambda: report(town.household2, SafetyStatus.HELP, uuid.uuid4()),
        )
        results = [o for o in outcomes if isinstance(o, SafetyResult)]
        assert len(results) == 2, (round_, outcomes)
        receipt = Receipt.objects.get(circular=check, household=town.household2)
        assert receipt.confirmed_at is not None and receipt.version == 1, round_
        latest = safety.household_safety(receipt=receipt)
        assert latest is not None
        last = max(results, key=lambda result: (result.report.reported_at, result.report.pk))
        assert latest == last.report, round_
        # One key, two households at once: one stored, the other refused, never a 500.
        key = uuid.uuid4()
        outcomes = at_once(
            partial(report, town.household1, SafetyStatus.HELP, key),
            partial(report, town.household2, SafetyStatus.HELP, key),
        )
        stored = [o for o in outcomes if isinstance(o, SafetyResult)]
        refused = [o for o in outcomes if isinstance(o, ValidationError)]
        assert len(stored) == 1 and len(refused) == 1, (round_, outcomes)
        assert "key" in refused[0].message_dict
        assert SafetyReport.objects.filter(key=key).count() == 1
