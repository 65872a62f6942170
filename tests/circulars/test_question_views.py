"""Circulars that ask, through the pages: answering, the draft's questions, the answer list."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from circulars import questions, services
from circulars.models import Answer, Circular, Question, QuestionKind, Receipt, ReceiptMethod
from tests.circulars.test_questions import ask, draft
from tests.circulars.test_views import client_for, url
from tests.communities.test_views import ja
from tests.conftest import Town
from tests.factories import HouseholdFactory

TOKYO = ZoneInfo("Asia/Tokyo")


def published(town: Town, **kwargs: object) -> tuple[Circular, Question, Question]:
    circular = draft(town, **kwargs)  # type: ignore[arg-type]
    single = ask(circular, QuestionKind.SINGLE, "はい", "いいえ")
    attendance = ask(circular, QuestionKind.ATTENDANCE)
    return services.circular_publish(circular=circular), single, attendance


def test_resident_answers_and_so_confirms(town: Town) -> None:
    circular, single, attendance = published(town)
    client = client_for(town.resident1)
    page = client.get(url(town, "detail", circular.pk))
    html = page.content.decode()
    assert f'action="{url(town, "answers", circular.pk)}"' in html
    assert f'name="q{single.pk}"' in html and f'name="q{attendance.pk}-attending"' in html
    # The questions come before the confirm button.
    assert html.index(f'name="q{single.pk}"') < html.index('id="confirm-area"')

    response = client.post(
        url(town, "answers", circular.pk),
        {
            f"q{single.pk}": "1",
            f"q{attendance.pk}-attending": "yes",
            f"q{attendance.pk}-people": "2",
            f"q{single.pk}-shown": "1",
        },
    )
    assert response.status_code == 302
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.confirmed_at is not None and receipt.method == ReceiptMethod.APP
    assert {a.question_id: a.value for a in Answer.objects.filter(receipt=receipt)} == {
        single.pk: [1],
        attendance.pk: {"attending": True, "people": 2},
    }
    # Prefilled with the household's answers.
    html = client.get(url(town, "detail", circular.pk)).content.decode()
    assert f'name="q{single.pk}" value="1" checked' in html
    assert f'name="q{attendance.pk}-attending" value="yes" checked' in html
    assert f'name="q{attendance.pk}-people" value="2"' in html


def test_malformed_answer_is_400_naming_the_field(town: Town) -> None:
    circular, single, attendance = published(town)
    client = client_for(town.resident1)
    response = client.post(
        url(town, "answers", circular.pk),
        {f"q{single.pk}": "7", f"q{attendance.pk}-attending": "yes"},
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert f'id="q{single.pk}-error"' in html
    assert f'id="q{attendance.pk}-error"' not in html  # attending with no number means 1
    assert not Answer.objects.exists()
    assert Receipt.objects.get(household=town.household1).confirmed_at is None


def test_unknown_question_or_circular_not_sent_is_404(town: Town) -> None:
    circular, single, _attendance = published(town)
    client = client_for(town.resident1)
    assert client.post(url(town, "answers", circular.pk), {"q999999": "0"}).status_code == 404
    only_block2, question, _ = published(town, blocks=[town.block2])
    response = client.post(url(town, "answers", only_block2.pk), {f"q{question.pk}": "0"})
    assert response.status_code == 404
    # Nor through another circular's URL.
    response = client.post(url(town, "answers", circular.pk), {f"q{question.pk}": "0"})
    assert response.status_code == 404
    assert (
        client_for(town.other_resident)
        .post(url(town, "answers", circular.pk), {f"q{single.pk}": "0"})
        .status_code
        == 404
    )
    assert not Answer.objects.exists()


def test_after_the_due_date_nothing_is_saved_and_answers_are_read_only(town: Town) -> None:
    with time_machine.travel(datetime(2026, 6, 1, 9, 0, tzinfo=TOKYO), tick=False):
        circular, single, _attendance = published(town, due=date(2026, 6, 5))
        client = client_for(town.resident1)
        client.post(url(town, "answers", circular.pk), {f"q{single.pk}": "0"})
    with time_machine.travel(datetime(2026, 6, 6, 8, 0, tzinfo=TOKYO), tick=False):
        response = client.post(
            url(town, "answers", circular.pk), {f"q{single.pk}": "1"}, follow=True
        )
        html = response.content.decode()
        assert "message-error" in html
        assert f'action="{url(town, "answers", circular.pk)}"' not in html
        assert "answers-readonly" in html and "はい" in html
    assert Answer.objects.get().value == [0]


def test_staff_add_and_remove_questions_on_the_draft(town: Town) -> None:
    circular = draft(town)
    chair = client_for(town.chair)
    page = chair.get(url(town, "draft", circular.pk)).content.decode()
    assert f'action="{url(town, "questions", circular.pk)}"' in page
    response = chair.post(
        url(town, "questions", circular.pk),
        {
            "kind": "multiple",
            "prompt": "持ち物",
            "choices": "ほうき\r\nごみ袋\r\n\r\n",
            "required": "on",
        },
    )
    assert response.status_code == 302
    question = Question.objects.get(circular=circular)
    assert question.choices == ["ほうき", "ごみ袋"] and question.required
    # A bad question is refused with a message; nothing is added.
    chair.post(
        url(town, "questions", circular.pk), {"kind": "single", "prompt": "?", "choices": "x"}
    )
    assert Question.objects.filter(circular=circular).count() == 1
    # A block leader who did not write it cannot touch it.
    leader = client_for(town.leader1)
    assert (
        leader.post(
            url(town, "questions", circular.pk), {"kind": "text", "prompt": "x"}
        ).status_code
        == 404
    )
    chair.post(url(town, "questions", circular.pk), {"action": "remove", "question": question.pk})
    assert not Question.objects.filter(circular=circular).exists()


@pytest.fixture
def answered(town: Town) -> tuple[Circular, Question, Question]:
    circular, single, attendance = published(town)
    for household, choice, people in ((town.household1, "0", "3"), (town.household2, "1", "2")):
        questions.answers_submit(
            circular=circular,
            household=household,
            values={single.pk: choice, attendance.pk: {"attending": "yes", "people": people}},
            member=None,
            recorded_by=town.chair,
            method=ReceiptMethod.PROXY_PHONE,
        )
    return circular, single, attendance


def test_summary_shows_totals_and_visible_households(
    town: Town, answered: tuple[Circular, Question, Question]
) -> None:
    circular, _single, _attendance = answered
    response = client_for(town.chair).get(url(town, "answers_summary", circular.pk))
    assert response.status_code == 200
    sheet = response.context["sheet"]
    assert [row.receipt.household.label for row in sheet.rows] == ["山田", "田中"]
    attendance = sheet.totals[1]
    assert (attendance.attending, attendance.people) == (2, 5)
    assert 'hx-trigger="kairan:answers-changed from:body' in response.content.decode()

    leader = client_for(town.leader1).get(url(town, "answers_summary", circular.pk))
    assert [row.receipt.household.label for row in leader.context["sheet"].rows] == ["山田"]
    assert leader.context["sheet"].totals[1].people == 3
    partial = client_for(town.leader1).get(
        url(town, "answers_summary", circular.pk), headers={"HX-Request": "true"}
    )
    assert partial.content.decode().lstrip().startswith('<div id="answers-body"')

    for user in (town.resident1, town.other_chair, town.other_resident):
        client = client_for(user)
        assert client.get(url(town, "answers_summary", circular.pk)).status_code == 404
        assert client.get(url(town, "answers_csv", circular.pk)).status_code == 404


def test_links_to_the_summary(town: Town, answered: tuple[Circular, Question, Question]) -> None:
    circular, _single, _attendance = answered
    target = url(town, "answers_summary", circular.pk)
    chair = client_for(town.chair)
    assert target in chair.get(url(town, "ledger", circular.pk)).content.decode()
    assert target in chair.get(url(town, "detail", circular.pk)).content.decode()
    assert (
        target
        not in client_for(town.resident1).get(url(town, "detail", circular.pk)).content.decode()
    )


def test_csv_export_with_bom_and_neutralised_formulas(
    town: Town, answered: tuple[Circular, Question, Question]
) -> None:
    circular, _single, _attendance = answered
    circular2 = draft(town)
    text = ask(circular2, QuestionKind.TEXT)
    circular2 = services.circular_publish(circular=circular2)
    questions.answers_submit(
        circular=circular2,
        household=town.household1,
        values={text.pk: '=HYPERLINK("http://evil")'},
        member=None,
        recorded_by=town.chair,
        method=ReceiptMethod.PROXY_HAND,
    )
    response = client_for(town.chair).get(url(town, "answers_csv", circular.pk))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:2] == ["班", "世帯名"]
    assert rows[1][:4] == ["1班", "山田", "はい", rows[1][3]]
    assert "3" in rows[1][3]
    leader_rows = list(
        csv.reader(
            io.StringIO(
                client_for(town.leader1)
                .get(url(town, "answers_csv", circular.pk))
                .content.decode("utf-8-sig")
            )
        )
    )
    assert [row[1] for row in leader_rows[1:]] == ["山田"]

    formula = client_for(town.chair).get(url(town, "answers_csv", circular2.pk))
    cells = list(csv.reader(io.StringIO(formula.content.decode("utf-8-sig"))))
    assert cells[1][2] == '\'=HYPERLINK("http://evil")'


def answered_households(town: Town, circular: Circular, *asked: Question, to: int) -> None:
    """New households of block 1 answer ``asked`` (a choice, an attendance) until the
    circular has ``to`` receipts."""
    single, attendance = asked
    for n in range(Receipt.objects.filter(circular=circular).count(), to):
        household = HouseholdFactory.create(block=town.block1, label=f"世帯{n}")
        questions.answers_submit(
            circular=circular,
            household=household,
            values={single.pk: "0", attendance.pk: {"attending": "no"}},
            member=None,
            recorded_by=town.chair,
            method=ReceiptMethod.PROXY_VISIT,
        )


def test_summary_query_count_is_constant(town: Town) -> None:
    circular, single, attendance = published(town)

    def grow(to: int) -> int:
        answered_households(town, circular, single, attendance, to=to)
        client = client_for(town.chair)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url(town, "answers_summary", circular.pk)).status_code == 200
        return len(queries)

    assert grow(10) == grow(200)


def test_preview_shows_the_questions_without_a_live_button(town: Town) -> None:
    circular = draft(town)
    question = ask(circular, QuestionKind.ATTENDANCE)
    html = client_for(town.chair).get(url(town, "preview", circular.pk)).content.decode()
    assert f'name="q{question.pk}-attending"' in html
    assert 'class="button button-confirm button-block" aria-disabled="true"' in html


# --- A large association's answers fold by block, as its ledger does ----------------------


def test_summary_of_a_large_association_shows_blocks_not_rows(
    town: Town, answered: tuple[Circular, Question, Question], monkeypatch: pytest.MonkeyPatch
) -> None:
    circular, _single, _attendance = answered
    HouseholdFactory.create(block=town.block2, label="佐藤")  # joined after: no receipt
    summary = url(town, "answers_summary", circular.pk)
    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 1)
    chair = client_for(town.chair)
    response = chair.get(summary)
    sheet = response.context["sheet"]
    assert sheet.rows_folded
    assert sheet.rows == []
    assert (sheet.answered, sheet.households) == (2, 2)
    assert [(b.block.name, b.answered, b.households) for b in sheet.blocks] == [
        ("1班", 1, 1),
        ("2班", 1, 1),
    ]
    assert (sheet.totals[1].attending, sheet.totals[1].people) == (2, 5)  # whole association
    page = response.content.decode()
    assert "山田" not in page and "田中" not in page
    assert page.count(f'href="?block={town.block2.pk}"') == 1
    partial = chair.get(summary, headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="answers-body"')
    assert f'href="?block={town.block1.pk}"' in partial

    # One block: its rows, totals still of every block, and the live refresh keeps the block.
    one = chair.get(f"{summary}?block={town.block2.pk}")
    assert [row.receipt.household.label for row in one.context["sheet"].rows] == ["田中"]
    assert one.context["sheet"].totals[1].people == 5
    assert f'hx-get="{summary}?block={town.block2.pk}"' in one.content.decode()

    # The CSV is not a page: every household, whatever the size.
    rows = list(
        csv.reader(
            io.StringIO(
                chair.get(url(town, "answers_csv", circular.pk)).content.decode("utf-8-sig")
            )
        )
    )
    assert [row[1] for row in rows[1:]] == ["山田", "田中"]


def test_summary_folds_a_block_leader_to_their_own_blocks(
    town: Town, answered: tuple[Circular, Question, Question], monkeypatch: pytest.MonkeyPatch
) -> None:
    circular, _single, _attendance = answered
    summary = url(town, "answers_summary", circular.pk)
    leader = client_for(town.leader1)
    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 1)
    # One household in their block: not more than the limit, so the rows as today.
    sheet = leader.get(summary).context["sheet"]
    assert not sheet.rows_folded
    assert [row.receipt.household.label for row in sheet.rows] == ["山田"]

    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 0)
    response = leader.get(summary)
    sheet = response.context["sheet"]
    assert sheet.rows_folded
    assert [(b.block.pk, b.households) for b in sheet.blocks] == [(town.block1.pk, 1)]
    assert (sheet.answered, sheet.households, sheet.totals[1].people) == (1, 1, 3)
    assert f"?block={town.block2.pk}" not in response.content.decode()
    assert leader.get(f"{summary}?block={town.block2.pk}").status_code == 404


def test_summary_of_a_small_association_is_unchanged(
    town: Town, answered: tuple[Circular, Question, Question]
) -> None:
    circular, _single, _attendance = answered
    response = client_for(town.chair).get(url(town, "answers_summary", circular.pk))
    sheet = response.context["sheet"]
    assert not sheet.rows_folded
    assert [row.receipt.household.label for row in sheet.rows] == ["山田", "田中"]
    page = response.content.decode()
    assert "block-summary" not in page
    assert "?block=" not in page


def test_folded_summary_query_count_is_constant(
    town: Town, monkeypatch: pytest.MonkeyPatch
) -> None:
    circular, single, attendance = published(town)
    client = client_for(town.chair)
    summary = url(town, "answers_summary", circular.pk)

    def count(query: str = "") -> int:
        client.get(summary + query)  # warm the session
        with CaptureQueriesContext(connection) as queries:
            assert client.get(summary + query).status_code == 200
        return len(queries)

    answered_households(town, circular, single, attendance, to=6)
    unfolded = count()
    monkeypatch.setattr("communities.selectors.PAGE_ROWS_MAX", 5)
    folded = count()
    answered_households(town, circular, single, attendance, to=30)
    assert count() == folded
    block_view = count(f"?block={town.block1.pk}")
    # Folded: the blocks' counts instead of the rows (two queries: receipts and answers).
    assert folded == unfolded - 2
    assert block_view == unfolded


def test_a_block_the_page_does_not_show_is_not_found(town: Town) -> None:
    """``?block=`` of another association's block, of a block outside a 班長's own, or of
    no block: 404 on the ledger, the answers and the household list, not an empty list
    that reads as a block where nobody has answered."""
    circular, _single, _attendance = published(town)
    foreign = town.other_community.blocks.get().pk
    pages = [
        url(town, "ledger", circular.pk),
        url(town, "answers_summary", circular.pk),
        f"/c/{town.community.slug}/households/",
    ]
    chair, leader = client_for(town.chair), client_for(town.leader1)
    for page in pages:
        assert chair.get(page, {"block": town.block2.pk}).status_code == 200
        assert leader.get(page, {"block": town.block1.pk}).status_code == 200
        if "ledger" not in page:
            # A way back to every block, except for whom one block is every block.
            back = ja("Back to all blocks")
            assert back in chair.get(page, {"block": town.block2.pk}).content.decode()
            assert back not in leader.get(page, {"block": town.block1.pk}).content.decode()
        assert chair.get(page, {"block": foreign}).status_code == 404
        assert chair.get(page, {"block": 10**9}).status_code == 404
        assert leader.get(page, {"block": town.block2.pk}).status_code == 404
        assert chair.get(page, {"block": "y"}).status_code == 200  # nonsense is ignored
