"""Circulars that ask: questions on drafts, answers (each kind), the due date, totals, events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.http import Http404
from django.utils import timezone

from circulars import questions, services
from circulars.models import (
    Answer,
    Circular,
    Question,
    QuestionKind,
    Receipt,
    ReceiptMethod,
)
from circulars.questions import QuestionData
from circulars.services import CircularData
from communities.models import Block, Member
from notifications.groups import ledger_block_group, ledger_totals_group
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory
from tests.realtime import listen

type Capture = Callable[..., Any]
TOKYO = ZoneInfo("Asia/Tokyo")


def draft(town: Town, *, due: date | None = None, blocks: list[Block] | None = None) -> Circular:
    return services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(
            title="清掃活動のお知らせ",
            body="6月の第一日曜日に公園の清掃をします。",
            all_blocks=blocks is None,
            blocks=blocks or [],
            due_date=due,
        ),
    )


def ask(circular: Circular, kind: str, *choices: str, required: bool = False) -> Question:
    return questions.question_add(
        circular=circular,
        data=QuestionData(
            kind=kind, prompt=f"{kind}の質問", choices=list(choices), required=required
        ),
    )


def member_of(town: Town, number: int = 1) -> Member:
    household = town.household1 if number == 1 else town.household2
    return Member.objects.filter(household=household).first() or MemberFactory.create(
        household=household
    )


def answer(
    town: Town,
    circular: Circular,
    values: dict[int, Any],
    *,
    number: int = 1,
    member: Member | None = None,
    now: datetime | None = None,
) -> questions.AnswersResult:
    household = town.household1 if number == 1 else town.household2
    member = member or member_of(town, number)
    return questions.answers_submit(
        circular=circular,
        household=household,
        values=values,
        member=member,
        recorded_by=member.user,
        method=ReceiptMethod.APP,
        now=now,
    )


@pytest.fixture
def asking(town: Town) -> tuple[Circular, dict[str, Question]]:
    circular = draft(town)
    asked = {
        "single": ask(circular, QuestionKind.SINGLE, "はい", "いいえ"),
        "multiple": ask(circular, QuestionKind.MULTIPLE, "ほうき", "ごみ袋", "軍手"),
        "text": ask(circular, QuestionKind.TEXT),
        "attendance": ask(circular, QuestionKind.ATTENDANCE),
    }
    circular = services.circular_publish(circular=circular)
    circular.refresh_from_db()
    return circular, asked


# --- Questions on drafts ------------------------------------------------------------------


def test_question_add_validates_prompt_and_choices(town: Town) -> None:
    circular = draft(town)
    with pytest.raises(ValidationError) as error:
        questions.question_add(
            circular=circular, data=QuestionData(kind=QuestionKind.SINGLE, prompt=" ")
        )
    assert set(error.value.message_dict) == {"prompt", "choices"}
    with pytest.raises(ValidationError) as error:
        ask(circular, QuestionKind.SINGLE, "はい", " ")  # blank lines do not count
    assert set(error.value.message_dict) == {"choices"}
    with pytest.raises(ValidationError):
        ask(circular, QuestionKind.MULTIPLE, *[str(n) for n in range(11)])
    with pytest.raises(ValidationError):
        questions.question_add(circular=circular, data=QuestionData(kind="poll", prompt="?"))
    first = ask(circular, QuestionKind.SINGLE, " はい ", "いいえ", "")
    second = ask(circular, QuestionKind.TEXT, "ignored")
    assert first.choices == ["はい", "いいえ"]
    assert second.choices == []  # text and attendance carry no choices
    assert [q.pk for q in questions.questions_for(circular=circular)] == [first.pk, second.pk]


def test_questions_change_only_on_drafts(town: Town) -> None:
    circular = draft(town)
    question = ask(circular, QuestionKind.ATTENDANCE)
    updated = questions.question_update(
        question=question, data=QuestionData(kind=QuestionKind.TEXT, prompt="ご意見")
    )
    assert updated.kind == QuestionKind.TEXT
    circular = services.circular_publish(circular=circular)
    with pytest.raises(ValidationError):
        ask(circular, QuestionKind.TEXT)
    with pytest.raises(ValidationError):
        questions.question_remove(question=question)
    assert Question.objects.filter(circular=circular).count() == 1


# --- Answering each kind ------------------------------------------------------------------


def test_each_kind_is_stored_as_its_value(
    town: Town, asking: tuple[Circular, dict[str, Question]]
) -> None:
    circular, asked = asking
    result = answer(
        town,
        circular,
        {
            asked["single"].pk: "1",
            asked["multiple"].pk: ["2", "0"],
            asked["text"].pk: "  軍手を持って行きます\r\n ",
            asked["attendance"].pk: {"attending": "yes", "people": "3"},
        },
    )
    values = {a.question_id: a.value for a in Answer.objects.filter(receipt=result.receipt)}
    assert values == {
        asked["single"].pk: [1],
        asked["multiple"].pk: [0, 2],
        asked["text"].pk: "軍手を持って行きます",
        asked["attendance"].pk: {"attending": True, "people": 3},
    }
    answer(town, circular, {asked["attendance"].pk: {"attending": "no", "people": "3"}})
    assert Answer.objects.get(question=asked["attendance"]).value == {
        "attending": False,
        "people": 0,
    }


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("single", "2"),  # out of range
        ("single", ["0", "1"]),  # two choices for a single choice
        ("single", "one"),
        ("single", True),
        ("multiple", ["0", "0"]),
        ("multiple", ["0", "9"]),
        ("multiple", "-1"),
        ("text", "あ" * 501),
        ("text", ["list"]),
        ("attendance", {"attending": "maybe"}),
        ("attendance", {"attending": "yes", "people": "0"}),
        ("attendance", {"attending": "yes", "people": "51"}),
        ("attendance", {"attending": "yes", "people": "two"}),
        ("attendance", "yes"),
    ],
)
def test_malformed_values_name_the_field(
    town: Town, asking: tuple[Circular, dict[str, Question]], kind: str, raw: Any
) -> None:
    circular, asked = asking
    question = asked[kind]
    with pytest.raises(ValidationError) as error:
        answer(town, circular, {question.pk: raw})
    assert set(error.value.message_dict) == {f"q{question.pk}"}
    assert not Answer.objects.exists()
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.confirmed_at is None  # nothing saved, nothing confirmed


def test_required_question_must_be_answered(town: Town) -> None:
    circular = draft(town)
    must = ask(circular, QuestionKind.ATTENDANCE, required=True)
    optional = ask(circular, QuestionKind.TEXT)
    circular = services.circular_publish(circular=circular)
    with pytest.raises(ValidationError) as error:
        answer(town, circular, {optional.pk: "よろしく"})
    assert set(error.value.message_dict) == {f"q{must.pk}"}
    answer(town, circular, {must.pk: {"attending": "no"}})
    # Answered once, it may be left out later; an optional answer can be cleared.
    answer(town, circular, {optional.pk: "メモ"})
    answer(town, circular, {optional.pk: ""})
    assert list(Answer.objects.values_list("question_id", flat=True)) == [must.pk]


def test_question_of_another_circular_is_not_found(
    town: Town, asking: tuple[Circular, dict[str, Question]]
) -> None:
    circular, _asked = asking
    other = draft(town)
    foreign = ask(other, QuestionKind.TEXT)
    other = services.circular_publish(circular=other)
    with pytest.raises(Http404):
        answer(town, circular, {foreign.pk: "x"})
    with pytest.raises(Http404):
        answer(town, circular, {999_999: "x"})
    assert not Answer.objects.exists()


# --- One answer per household; answering confirms ------------------------------------------


def test_one_answer_per_household_last_wins(
    town: Town, asking: tuple[Circular, dict[str, Question]]
) -> None:
    circular, asked = asking
    first = member_of(town)
    second = MemberFactory.create(household=town.household1)
    answer(town, circular, {asked["single"].pk: "0"}, member=first)
    answer(town, circular, {asked["single"].pk: "1"}, member=second)
    rows = list(Answer.objects.filter(question=asked["single"]))
    assert len(rows) == 1
    assert rows[0].value == [1]
    assert rows[0].answered_by == second
    assert rows[0].version == 2


def test_answering_confirms_the_circular(
    town: Town, asking: tuple[Circular, dict[str, Question]]
) -> None:
    circular, asked = asking
    member = member_of(town)
    result = answer(town, circular, {asked["single"].pk: "0"}, member=member)
    receipt = Receipt.objects.get(pk=result.receipt.pk)
    assert receipt.confirmed_at is not None
    assert receipt.method == ReceiptMethod.APP
    assert receipt.confirmed_by == member
    assert result.confirmed.recorded
    # Changing the answer later keeps the first confirmation.
    again = answer(town, circular, {asked["single"].pk: "1"})
    assert not again.confirmed.recorded
    assert Receipt.objects.get(pk=receipt.pk).confirmed_at == receipt.confirmed_at


# --- The due date -------------------------------------------------------------------------


def test_changeable_until_the_end_of_the_due_day_then_refused(town: Town) -> None:
    with time_machine.travel(datetime(2026, 6, 1, 9, 0, tzinfo=TOKYO), tick=False):
        circular = draft(town, due=date(2026, 6, 5))
        question = ask(circular, QuestionKind.ATTENDANCE)
        circular = services.circular_publish(circular=circular)
        answer(town, circular, {question.pk: {"attending": "yes", "people": "2"}})
    with time_machine.travel(datetime(2026, 6, 5, 23, 59, tzinfo=TOKYO), tick=False):
        answer(town, circular, {question.pk: {"attending": "yes", "people": "4"}})
        assert not questions.answers_closed(circular=circular)
    with time_machine.travel(datetime(2026, 6, 6, 0, 0, 1, tzinfo=TOKYO), tick=False):
        assert questions.answers_closed(circular=circular)
        with pytest.raises(questions.AnswersClosed):
            answer(town, circular, {question.pk: {"attending": "no"}})
        with pytest.raises(questions.AnswersClosed):
            answer(town, circular, {question.pk: {"attending": "no"}}, number=2)
    stored = Answer.objects.get(question=question)
    assert stored.value == {"attending": True, "people": 4}
    assert not stored.late
    assert not Receipt.objects.get(household=town.household2).confirmed_at


@pytest.mark.parametrize("method", [ReceiptMethod.PROXY_PHONE, ReceiptMethod.PAPER])
def test_staff_record_late_answers_marked_late(town: Town, method: str) -> None:
    with time_machine.travel(datetime(2026, 6, 1, 9, 0, tzinfo=TOKYO), tick=False):
        circular = draft(town, due=date(2026, 6, 5))
        question = ask(circular, QuestionKind.SINGLE, "参加", "不参加")
        circular = services.circular_publish(circular=circular)
    with time_machine.travel(datetime(2026, 6, 8, 10, 0, tzinfo=TOKYO), tick=False):
        result = questions.answers_submit(
            circular=circular,
            household=town.household2,
            values={question.pk: "0"},
            member=None,
            recorded_by=town.helper2,
            method=method,
        )
        # A resident cannot pass a staff method off as their own after the due date.
        with pytest.raises(questions.AnswersClosed):
            questions.answers_submit(
                circular=circular,
                household=town.household1,
                values={question.pk: "0"},
                member=member_of(town),
                recorded_by=town.resident1,
                method=method,
            )
    stored = Answer.objects.get(receipt=result.receipt)
    assert stored.late and stored.method == method and stored.recorded_by == town.helper2
    receipt = Receipt.objects.get(pk=result.receipt.pk)
    assert receipt.method == method and receipt.recorded_by == town.helper2
    assert result.late


# --- Totals and rows ---------------------------------------------------------------------


def test_totals_count_choices_attendance_people_and_texts(
    town: Town, asking: tuple[Circular, dict[str, Question]]
) -> None:
    circular, asked = asking
    extra = HouseholdFactory.create(block=town.block1, label="鈴木")
    answer(
        town,
        circular,
        {
            asked["single"].pk: "0",
            asked["multiple"].pk: ["0", "2"],
            asked["text"].pk: "よろしく",
            asked["attendance"].pk: {"attending": "yes", "people": "3"},
        },
    )
    answer(
        town,
        circular,
        {
            asked["single"].pk: "0",
            asked["multiple"].pk: ["2"],
            asked["attendance"].pk: {"attending": "yes", "people": "2"},
        },
        number=2,
    )
    questions.answers_submit(
        circular=circular,
        household=extra,
        values={asked["attendance"].pk: {"attending": "no"}},
        member=None,
        recorded_by=town.leader1,
        method=ReceiptMethod.PROXY_VISIT,
    )
    totals = {t.question.pk: t for t in questions.answers_totals(circular=circular)}
    assert totals[asked["single"].pk].choice_counts == [("はい", 2), ("いいえ", 0)]
    assert totals[asked["multiple"].pk].choice_counts == [("ほうき", 1), ("ごみ袋", 0), ("軍手", 2)]
    assert totals[asked["text"].pk].texts == 1
    attendance = totals[asked["attendance"].pk]
    assert (attendance.attending, attendance.people, attendance.absent) == (2, 5, 1)
    assert attendance.answered == 3
    block1 = questions.answers_totals(circular=circular, block_ids=frozenset({town.block1.pk}))
    by_id = {t.question.pk: t for t in block1}
    assert (by_id[asked["attendance"].pk].attending, by_id[asked["attendance"].pk].people) == (
        1,
        3,
    )


def test_rows_follow_the_ledger_visibility(
    town: Town, asking: tuple[Circular, dict[str, Question]]
) -> None:
    from communities.selectors import community_access_for

    circular, asked = asking
    answer(town, circular, {asked["single"].pk: "1"})
    answer(town, circular, {asked["single"].pk: "0"}, number=2)
    leader = community_access_for(community=town.community, user_id=town.leader1.pk)
    sheet = questions.answers_rows(access=leader, circular=circular)
    assert [row.receipt.household_id for row in sheet.rows] == [town.household1.pk]
    assert sheet.rows[0].cells[0] == "いいえ"
    # Each answer with its question: the label of its line on a phone.
    assert sheet.rows[0].answers[0] == (sheet.questions[0], "いいえ")
    assert [question for question, _ in sheet.rows[0].answers] == sheet.questions
    assert sheet.totals[0].choice_counts == [("はい", 0), ("いいえ", 1)]
    chair = community_access_for(community=town.community, user_id=town.chair.pk)
    assert questions.answers_rows(access=chair, circular=circular).answered == 2


# --- Events -------------------------------------------------------------------------------


def test_answer_event_reaches_the_block_group_after_commit(
    town: Town,
    asking: tuple[Circular, dict[str, Question]],
    memory_layer: None,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    circular, asked = asking
    groups = {
        "block1": ledger_block_group(circular.pk, town.block1.pk),
        "block2": ledger_block_group(circular.pk, town.block2.pk),
        "totals": ledger_totals_group(circular.pk),
    }
    pending: list[Any] = []

    def record() -> None:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            answer(town, circular, {asked["single"].pk: "0"})
        pending.extend(callbacks)

    assert listen(groups, record) == {"block1": [], "block2": [], "totals": []}

    def commit() -> None:
        for callback in pending:
            callback()

    received = listen(groups, commit)
    assert received["block2"] == []
    changed = [
        m["payload"] for m in received["block1"] if m["payload"]["type"] == "answers.changed"
    ]
    assert changed == [
        {
            "type": "answers.changed",
            "circular_id": circular.pk,
            "block_id": town.block1.pk,
            "household_id": town.household1.pk,
            "version": 1,
        }
    ]
    assert any(m["payload"]["type"] == "answers.changed" for m in received["totals"])


def test_now_defaults_to_the_clock(
    town: Town, asking: tuple[Circular, dict[str, Question]]
) -> None:
    circular, asked = asking
    before = timezone.now() - timedelta(seconds=1)
    answer(town, circular, {asked["text"].pk: "はい"})
    assert Answer.objects.get().answered_at >= before
