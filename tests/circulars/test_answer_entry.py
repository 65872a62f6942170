"""Answers that staff enter: returned reply slips on the sign-off screen, and answers taken
by hand, phone or visit; plus the brake on the resident's own answer POST."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.urls import reverse

from circulars import questions
from circulars.models import Answer, Circular, Question, Receipt, ReceiptMethod
from communities.models import Household
from tests.circulars.test_paper_views import client_for, signoff_url, text_of
from tests.circulars.test_question_views import published
from tests.circulars.test_views import url
from tests.conftest import Town
from tests.e2e.live_browser import ja
from tests.factories import HouseholdFactory

TOKYO = ZoneInfo("Asia/Tokyo")
JUNE_1 = datetime(2026, 6, 1, 9, 0, tzinfo=TOKYO)
AFTER_DUE = datetime(2026, 6, 6, 9, 0, tzinfo=TOKYO)


@pytest.fixture(autouse=True)
def _june() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(JUNE_1, tick=False) as traveller:
        yield traveller


def asking(town: Town) -> tuple[Circular, Question, Question, Household]:
    """A circular with a yes/no question and an attendance question, due 6/5, and 青木, a
    paper household of 1班 (no member)."""
    aoki = HouseholdFactory.create(block=town.block1, label="青木", circulation_order=1)
    circular, single, attendance = published(town, due=date(2026, 6, 5))
    return circular, single, attendance, aoki


def slip_url(town: Town, circular: Circular, household: Household) -> str:
    return reverse(
        "circulars:paper_answers",
        args=[town.community.slug, circular.pk, household.block_id, household.pk],
    )


def proxy_url(town: Town, circular: Circular, household: Household) -> str:
    return reverse("circulars:answers_proxy", args=[town.community.slug, circular.pk, household.pk])


def filled(single: Question, attendance: Question, *, choice: str = "0") -> dict[str, str]:
    return {
        f"q{single.pk}": choice,
        f"q{attendance.pk}-attending": "yes",
        f"q{attendance.pk}-people": "3",
    }


# --- The service ----------------------------------------------------------------------------


def test_staff_record_counts_as_the_households_answer(town: Town) -> None:
    circular, single, attendance, aoki = asking(town)

    result = questions.answers_record(
        circular=circular,
        household=aoki,
        values={single.pk: "1", attendance.pk: {"attending": "no"}},
        recorded_by=town.leader1,
        method=ReceiptMethod.PAPER,
    )

    assert not result.late
    answers = Answer.objects.filter(receipt=result.receipt)
    assert {a.question_id: a.value for a in answers} == {
        single.pk: [1],
        attendance.pk: {"attending": False, "people": 0},
    }
    assert {(a.method, a.recorded_by_id, a.answered_by_id) for a in answers} == {
        (ReceiptMethod.PAPER, town.leader1.pk, None)
    }
    receipt = Receipt.objects.get(pk=result.receipt.pk)
    assert receipt.confirmed_at is not None and receipt.method == ReceiptMethod.PAPER
    [yes_no, _attendance] = questions.answers_totals(circular=circular)
    assert yes_no.choice_counts == [("はい", 0), ("いいえ", 1)]


def test_staff_record_refuses_a_method_that_is_not_paper_or_proxy(town: Town) -> None:
    circular, single, _attendance, aoki = asking(town)
    for method in (ReceiptMethod.APP, ReceiptMethod.EMAIL, "fax"):
        with pytest.raises(ValidationError) as caught:
            questions.answers_record(
                circular=circular,
                household=aoki,
                values={single.pk: "0"},
                recorded_by=town.chair,
                method=method,
            )
        assert "method" in caught.value.message_dict
    assert not Answer.objects.exists()


def test_late_staff_answers_are_taken_and_marked(town: Town, _june: time_machine.Traveller) -> None:
    circular, single, _attendance, aoki = asking(town)
    _june.move_to(AFTER_DUE)
    result = questions.answers_record(
        circular=circular,
        household=aoki,
        values={single.pk: "0"},
        recorded_by=town.chair,
        method=ReceiptMethod.PROXY_PHONE,
    )
    assert result.late
    assert Answer.objects.get().late is True


# --- The sign-off screen: returned reply slips ---------------------------------------------


def test_signoff_rows_open_the_slip_entry_and_show_the_answers(town: Town) -> None:
    circular, single, attendance, aoki = asking(town)
    leader = client_for(town.leader1)
    page = leader.get(signoff_url(town, circular, town.block1))
    html = page.content.decode()
    assert f'href="{slip_url(town, circular, aoki)}"' in html
    assert ja("Enter the answers") in html

    entry = leader.get(slip_url(town, circular, aoki))
    assert entry.status_code == 200
    form = entry.content.decode()
    assert "青木" in form
    # The same fields as the resident's form, from the same partial.
    assert f'name="q{single.pk}"' in form and f'name="q{attendance.pk}-attending"' in form
    assert f'name="q{attendance.pk}-people"' in form
    assert 'name="method"' not in form  # a slip is always paper

    response = leader.post(slip_url(town, circular, aoki), filled(single, attendance))
    assert response.status_code == 302
    assert response["Location"] == signoff_url(town, circular, town.block1)
    receipt = Receipt.objects.get(circular=circular, household=aoki)
    assert receipt.confirmed_at is not None and receipt.method == ReceiptMethod.PAPER
    assert {a.method for a in Answer.objects.filter(receipt=receipt)} == {ReceiptMethod.PAPER}

    after = text_of(leader.get(signoff_url(town, circular, town.block1)).content)
    assert ja("Answered") in after
    assert "はい" in after and ja("Change the answers") in after


def test_a_household_with_answers_stays_confirmed_when_the_stamp_is_undone(town: Town) -> None:
    circular, single, attendance, aoki = asking(town)
    leader = client_for(town.leader1)
    leader.post(slip_url(town, circular, aoki), filled(single, attendance))
    page = leader.get(signoff_url(town, circular, town.block1)).content.decode()
    # The toggle of a household whose slip was entered cannot be taken back.
    row = page[page.index(f'name="household" value="{aoki.pk}"') :]
    assert row.index("disabled") < row.index("</button>")

    response = leader.post(
        signoff_url(town, circular, town.block1), {"action": "undo", "household": aoki.pk}
    )
    assert response.status_code == 302
    receipt = Receipt.objects.get(household=aoki)
    assert receipt.confirmed_at is not None and receipt.method == ReceiptMethod.PAPER
    assert Answer.objects.filter(receipt=receipt).count() == 2


def test_signoff_without_questions_has_no_answer_control(town: Town) -> None:
    from tests.circulars.test_paper_views import publish

    HouseholdFactory.create(block=town.block1, label="青木")
    circular = publish(town)
    html = client_for(town.leader1).get(signoff_url(town, circular, town.block1)).content.decode()
    assert "/answers/" not in html


def test_malformed_slip_is_400_naming_the_field_and_saves_nothing(town: Town) -> None:
    circular, single, attendance, aoki = asking(town)
    leader = client_for(town.leader1)
    values = filled(single, attendance, choice="9")
    values[f"q{attendance.pk}-people"] = "many"
    response = leader.post(slip_url(town, circular, aoki), values)
    assert response.status_code == 400
    html = response.content.decode()
    assert f'id="q{single.pk}-error"' in html
    assert f'id="q{attendance.pk}-error"' in html
    # What was typed comes back, so nothing has to be entered twice.
    assert f'name="q{attendance.pk}-attending" value="yes" checked' in html
    assert not Answer.objects.exists()
    assert Receipt.objects.get(household=aoki).confirmed_at is None


def test_slip_entry_is_for_the_blocks_staff_only(town: Town) -> None:
    circular, single, attendance, aoki = asking(town)
    target = slip_url(town, circular, aoki)
    # Another block's helper, a resident, the other association's chair: 404 (GET and POST).
    for user in (town.helper2, town.resident1, town.other_chair):
        client = client_for(user)
        assert client.get(target).status_code == 404
        assert client.post(target, filled(single, attendance)).status_code == 404
    # A household of another block through this block's URL, and an app household that is
    # not on the paper round: 404.
    outside = reverse(
        "circulars:paper_answers",
        args=[town.community.slug, circular.pk, town.block1.pk, town.household2.pk],
    )
    app_household = slip_url(town, circular, town.household1)
    for path in (outside, app_household):
        assert client_for(town.leader1).post(path, filled(single, attendance)).status_code == 404
    assert not Answer.objects.exists()
    # Officers may, as for the sign-off sheet.
    assert client_for(town.chair).get(target).status_code == 200


def test_unknown_question_in_a_slip_is_404(town: Town) -> None:
    circular, _single, _attendance, aoki = asking(town)
    response = client_for(town.leader1).post(slip_url(town, circular, aoki), {"q999999": "0"})
    assert response.status_code == 404


def test_slip_after_the_due_date_is_taken_and_marked_late(
    town: Town, _june: time_machine.Traveller
) -> None:
    circular, single, attendance, aoki = asking(town)
    _june.move_to(AFTER_DUE)
    leader = client_for(town.leader1)
    entry = text_of(leader.get(slip_url(town, circular, aoki)).content)
    assert ja("The due date has passed. Answers recorded now are marked as late.") in entry
    response = leader.post(slip_url(town, circular, aoki), filled(single, attendance), follow=True)
    assert response.status_code == 200
    assert Answer.objects.filter(late=True).count() == 2
    # 期限後 in the officer's list and in the CSV.
    chair = client_for(town.chair)
    listing = text_of(chair.get(url(town, "answers_summary", circular.pk)).content)
    assert "青木" in listing and ja("Late") in listing
    rows = list(
        csv.reader(io.StringIO(chair.get(url(town, "answers_csv", circular.pk)).content.decode()))
    )
    [aoki_row] = [row for row in rows if "青木" in row]
    assert aoki_row[-1] == "期限後"


# --- Proxy answers from the answers page and the ledger -------------------------------------


def test_officer_records_a_phone_answer_from_the_answers_page(town: Town) -> None:
    circular, single, attendance, _aoki = asking(town)
    chair = client_for(town.chair)
    listing = chair.get(url(town, "answers_summary", circular.pk)).content.decode()
    target = proxy_url(town, circular, town.household2)
    assert f'href="{target}"' in listing
    ledger = chair.get(url(town, "ledger", circular.pk)).content.decode()
    assert f'href="{target}?back=ledger"' in ledger

    form = chair.get(target).content.decode()
    for value in (
        ReceiptMethod.PROXY_HAND,
        ReceiptMethod.PROXY_PHONE,
        ReceiptMethod.PROXY_VISIT,
    ):
        assert f'name="method" value="{value}"' in form
    values = filled(single, attendance) | {"method": ReceiptMethod.PROXY_PHONE}
    response = chair.post(target, values)
    assert response.status_code == 302
    assert response["Location"] == url(town, "answers_summary", circular.pk)
    receipt = Receipt.objects.get(circular=circular, household=town.household2)
    assert receipt.method == ReceiptMethod.PROXY_PHONE and receipt.recorded_by == town.chair
    answers = Answer.objects.filter(receipt=receipt)
    assert {(a.method, a.late) for a in answers} == {(ReceiptMethod.PROXY_PHONE, False)}
    listing = text_of(chair.get(url(town, "answers_summary", circular.pk)).content)
    assert ja("Phone call") in listing
    # From the ledger, back to the ledger.
    again = chair.post(target + "?back=ledger", values | {f"q{single.pk}": "1"})
    assert again["Location"] == url(town, "ledger", circular.pk)
    assert Answer.objects.get(receipt=receipt, question=single).value == [1]


def test_proxy_without_a_method_is_400_naming_it(town: Town) -> None:
    circular, single, attendance, _aoki = asking(town)
    response = client_for(town.chair).post(
        proxy_url(town, circular, town.household2), filled(single, attendance)
    )
    assert response.status_code == 400
    assert 'id="method-error"' in response.content.decode()
    response = client_for(town.chair).post(
        proxy_url(town, circular, town.household2),
        filled(single, attendance) | {"method": ReceiptMethod.APP},
    )
    assert response.status_code == 400
    assert not Answer.objects.exists()


def test_proxy_follows_the_ledgers_visibility(town: Town) -> None:
    circular, single, attendance, _aoki = asking(town)
    values = filled(single, attendance) | {"method": ReceiptMethod.PROXY_VISIT}
    # 1班's leader cannot reach 2班's household; 2班's helper can.
    target = proxy_url(town, circular, town.household2)
    assert client_for(town.leader1).get(target).status_code == 404
    assert client_for(town.leader1).post(target, values).status_code == 404
    assert client_for(town.resident2).post(target, values).status_code == 404
    assert client_for(town.other_chair).post(target, values).status_code == 404
    assert not Answer.objects.exists()
    assert client_for(town.helper2).post(target, values).status_code == 302
    assert Answer.objects.filter(recorded_by=town.helper2).count() == 2


# --- The resident's answer POST is rate limited like 確認しました -------------------------------


def test_resident_answers_are_limited_per_person_and_recover(
    town: Town, _june: time_machine.Traveller
) -> None:
    circular, single, _attendance, _aoki = asking(town)
    client = client_for(town.resident1)
    target = url(town, "answers", circular.pk)
    statuses = [client.post(target, {f"q{single.pk}": str(n % 2)}).status_code for n in range(31)]
    assert statuses[:30] == [302] * 30
    assert statuses[30] == 429
    refused = client.post(target, {f"q{single.pk}": "1"})
    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"
    assert "少しお待ちください" in refused.content.decode()
    assert Answer.objects.get(question=single).value == [1]  # the 30th answer stands
    _june.shift(timedelta(minutes=2))
    assert client.post(target, {f"q{single.pk}": "0"}).status_code == 302
    assert Answer.objects.get(question=single).value == [0]
