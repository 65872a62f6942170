"""The paper pages through the Django test client: the print page and the sign-off screen."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from circulars import services
from circulars.models import Circular, PrintRecord, Receipt, ReceiptMethod
from circulars.services import CircularData
from communities.models import Block, DeliveryMode
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory, UserFactory, give_role

NOT_ON_ROUND = "この世帯は、この班の紙の回覧に入っていません。"
TOO_LATE = "この確認は、ここでは取り消せなくなりました。"


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def text_of(html: bytes) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", html.decode(), flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).strip()


def signoff_url(town: Town, circular: Circular, block: Block) -> str:
    return reverse("circulars:paper_signoff", args=[town.community.slug, circular.pk, block.pk])


def print_url(town: Town, circular: Circular) -> str:
    return reverse("circulars:paper_print", args=[town.community.slug, circular.pk])


def ledger_url(town: Town, circular: Circular) -> str:
    return reverse("circulars:ledger", args=[town.community.slug, circular.pk])


def publish(town: Town, *, draft: bool = False) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title="ごみ収集日の変更について", body="火曜と金曜です。"),
    )
    return circular if draft else services.circular_publish(circular=circular)


class Paper:
    """block1: three paper households (no members) and an app household (山田);
    block2: one paper household and an app household (田中)."""

    def __init__(self, town: Town) -> None:
        self.block1 = [
            HouseholdFactory.create(block=town.block1, label=label, circulation_order=order)
            for label, order in (("青木", 3), ("石井", 1), ("上田", 2))
        ]
        self.block1.sort(key=lambda household: household.circulation_order)
        self.block2 = HouseholdFactory.create(block=town.block2, label="木村")


@pytest.fixture
def paper(town: Town) -> Paper:
    return Paper(town)


@pytest.fixture
def people(town: Town) -> dict[str, User]:
    """Everyone in the permission matrix, by role."""
    helper1, leader2 = UserFactory.create(), UserFactory.create()
    give_role(user=helper1, community=town.community, role="helper", block=town.block1)
    give_role(user=leader2, community=town.community, role="block_leader", block=town.block2)
    return {
        "chair": town.chair,
        "officer": town.officer,
        "leader1": town.leader1,
        "helper1": helper1,
        "leader2": leader2,
        "helper2": town.helper2,
        "resident1": town.resident1,
        "other_chair": town.other_chair,
    }


# --- Permissions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        ("chair", True),
        ("officer", True),
        ("leader1", True),
        ("helper1", True),
        ("leader2", False),
        ("helper2", False),
        ("resident1", False),
        ("other_chair", False),
    ],
)
def test_signoff_permission_matrix(
    town: Town, paper: Paper, people: dict[str, User], who: str, allowed: bool
) -> None:
    circular = publish(town)
    client = client_for(people[who])
    url = signoff_url(town, circular, town.block1)
    first = paper.block1[0]

    page = client.get(url)
    posted = client.post(url, {"action": "confirm", "household": first.pk})
    everyone = client.post(url, {"action": "all"})

    receipt = Receipt.objects.get(circular=circular, household=first)
    if allowed:
        assert page.status_code == 200
        labels = [h.label for h in paper.block1]
        content = text_of(page.content)
        assert [content.find(label) for label in labels] == sorted(
            content.find(label) for label in labels
        )
        assert "山田" not in content  # app household: not on the sheet
        assert posted.status_code == 302
        assert receipt.method == ReceiptMethod.PAPER
        assert receipt.recorded_by == people[who]
        assert everyone.status_code == 302
        assert Receipt.objects.filter(circular=circular, method=ReceiptMethod.PAPER).count() == 3
    else:
        assert (page.status_code, posted.status_code, everyone.status_code) == (404, 404, 404)
        assert receipt.confirmed_at is None
        assert not Receipt.objects.filter(circular=circular, confirmed_at__isnull=False).exists()


def test_signoff_needs_a_login_and_a_published_circular(town: Town, paper: Paper) -> None:
    circular = publish(town)
    url = signoff_url(town, circular, town.block1)
    anonymous = Client().post(url, {"action": "confirm", "household": paper.block1[0].pk})
    assert anonymous.status_code == 302
    assert "login" in anonymous["Location"]
    assert not Receipt.objects.filter(circular=circular, confirmed_at__isnull=False).exists()

    draft = publish(town, draft=True)
    chair = client_for(town.chair)
    assert chair.get(signoff_url(town, draft, town.block1)).status_code == 404
    assert chair.get(print_url(town, draft)).status_code == 404
    # A block the circular never went to.
    only_block2 = services.circular_publish(
        circular=services.circular_create(
            community=town.community,
            author=town.chair,
            data=CircularData(title="2班だけ", all_blocks=False, blocks=[town.block2]),
        )
    )
    assert chair.get(signoff_url(town, only_block2, town.block1)).status_code == 404
    # Another association's block under this association's slug.
    foreign_block = Block.objects.get(community=town.other_community)
    assert chair.get(signoff_url(town, circular, foreign_block)).status_code == 404


# --- Recording --------------------------------------------------------------------------


def test_tapping_twice_records_one_paper_receipt(
    town: Town, paper: Paper, people: dict[str, User]
) -> None:
    circular = publish(town)
    client = client_for(people["helper1"])
    url = signoff_url(town, circular, town.block1)
    household = paper.block1[1]

    first = client.post(
        url, {"action": "confirm", "household": household.pk}, HTTP_HX_REQUEST="true"
    )
    second = client.post(
        url, {"action": "confirm", "household": household.pk}, HTTP_HX_REQUEST="true"
    )

    # htmx gets the list partial, not a whole page.
    for response in (first, second):
        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="signoff-list"' in html
        assert "<html" not in html
    assert "この世帯はもう確認済みでした。" in second.content.decode()
    receipts = Receipt.objects.filter(circular=circular, household=household)
    assert receipts.count() == 1
    receipt = receipts.get()
    assert receipt.method == ReceiptMethod.PAPER
    assert receipt.recorded_by == people["helper1"]
    assert receipt.confirmed_by is None
    # The toggle now shows confirmed, with an undo while the window is open.
    assert 'aria-pressed="true"' in first.content.decode()


def test_household_of_another_block_changes_nothing(
    town: Town, paper: Paper, people: dict[str, User]
) -> None:
    circular = publish(town)
    url = signoff_url(town, circular, town.block1)

    for who in ("leader1", "chair"):
        client = client_for(people[who])
        for household in (paper.block2, town.household1, town.household2):
            response = client.post(
                url, {"action": "confirm", "household": household.pk}, follow=True
            )
            assert response.status_code == 200
            assert NOT_ON_ROUND in text_of(response.content)
        hx = client.post(
            url, {"action": "confirm", "household": paper.block2.pk}, HTTP_HX_REQUEST="true"
        )
        assert NOT_ON_ROUND in hx.content.decode()
    bad = client_for(town.chair).post(url, {"action": "confirm", "household": "abc"})
    assert bad.status_code == 400
    assert client_for(town.chair).post(url, {"action": "stamp"}).status_code == 400
    assert not Receipt.objects.filter(circular=circular, confirmed_at__isnull=False).exists()


def test_undo_within_and_after_the_window(
    town: Town, paper: Paper, people: dict[str, User]
) -> None:
    circular = publish(town)
    client = client_for(people["leader1"])
    url = signoff_url(town, circular, town.block1)
    early, late = paper.block1[0], paper.block1[1]
    for household in (early, late):
        client.post(url, {"action": "confirm", "household": household.pk})

    undone = client.post(url, {"action": "undo", "household": early.pk}, HTTP_HX_REQUEST="true")
    assert undone.status_code == 200
    receipt = Receipt.objects.get(circular=circular, household=early)
    assert receipt.confirmed_at is None
    assert receipt.opened_at is None
    assert receipt.method == ""

    Receipt.objects.filter(circular=circular, household=late).update(
        confirmed_at=timezone.now() - timedelta(minutes=11)
    )
    page = client.get(url)
    # The toggle of the old sign-off is disabled now.
    row = re.search(r'<button[^>]*aria-pressed="true"[^>]*>', page.content.decode())
    assert row is not None and "disabled" in row.group(0)
    refused = client.post(url, {"action": "undo", "household": late.pk}, follow=True)
    assert TOO_LATE in text_of(refused.content)
    assert Receipt.objects.get(circular=circular, household=late).method == ReceiptMethod.PAPER


def test_undo_of_an_app_confirmation_is_refused(town: Town, people: dict[str, User]) -> None:
    both = HouseholdFactory.create(block=town.block1, label="江藤", delivery_mode=DeliveryMode.BOTH)
    member = MemberFactory.create(household=both)
    circular = publish(town)
    services.receipt_confirm(
        circular=circular, household=both, method=ReceiptMethod.APP, member=member
    )
    url = signoff_url(town, circular, town.block1)

    response = client_for(town.chair).post(
        url, {"action": "undo", "household": both.pk}, HTTP_HX_REQUEST="true"
    )

    assert TOO_LATE in response.content.decode()
    receipt = Receipt.objects.get(circular=circular, household=both)
    assert receipt.method == ReceiptMethod.APP
    assert receipt.confirmed_at is not None


def test_everyone_confirmed_records_the_rest_and_leaves_app_households(
    town: Town, paper: Paper, people: dict[str, User]
) -> None:
    app = HouseholdFactory.create(block=town.block1, label="佐々木")
    MemberFactory.create(household=app)
    circular = publish(town)
    client = client_for(people["helper1"])
    url = signoff_url(town, circular, town.block1)
    client.post(url, {"action": "confirm", "household": paper.block1[0].pk})

    response = client.post(url, {"action": "all"}, follow=True)

    assert "2世帯を記録しました。" in text_of(response.content)
    assert "全員確認" not in text_of(response.content)  # nothing left to confirm
    rows = dict(Receipt.objects.filter(circular=circular).values_list("household_id", "method"))
    assert [rows[h.pk] for h in paper.block1] == [ReceiptMethod.PAPER] * 3
    for untouched in (app, town.household1, paper.block2, town.household2):
        assert rows[untouched.pk] == ""


# --- Printing and the ledger ------------------------------------------------------------


def pdf_pages(content: bytes) -> int:
    return len(PdfReader(io.BytesIO(content)).pages)


def test_print_then_sign_off_shows_on_the_ledger(
    town: Town, paper: Paper, people: dict[str, User]
) -> None:
    circular = publish(town)
    leader = client_for(town.leader1)

    form = leader.get(print_url(town, circular))
    assert form.status_code == 200
    assert 'value="all"' not in form.content.decode()
    assert f'value="{town.block1.pk}"' in form.content.decode()
    assert f'value="{town.block2.pk}"' not in form.content.decode()

    response = leader.post(
        print_url(town, circular), {"block": town.block1.pk, "furigana": "on", "large": "on"}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Cache-Control"] == "no-store"
    record = PrintRecord.objects.get(circular=circular)
    assert record.block == town.block1
    assert record.printed_by == town.leader1
    assert record.household_ids == [h.pk for h in paper.block1]
    assert record.households == 3
    assert record.pages == pdf_pages(response.content)
    assert record.pages >= 3  # cover, circular, sheet
    assert (record.furigana, record.large_print, record.all_blocks) == (True, True, False)

    url = signoff_url(town, circular, town.block1)
    for household in paper.block1[:2]:
        leader.post(url, {"action": "confirm", "household": household.pk})

    ledger = text_of(client_for(town.chair).get(ledger_url(town, circular)).content)
    assert "紙: 印刷済 3 / 回収 2" in ledger
    assert "紙: 印刷済 0 / 回収 0" in ledger  # block2: its paper household, not printed yet
    assert "紙: 印刷済 3 / 回収 2" in text_of(leader.get(ledger_url(town, circular)).content)
    assert "紙: 印刷済 3 / 回収 2" in text_of(leader.get(print_url(town, circular)).content)


def test_block_leader_cannot_print_all_or_another_block(town: Town, paper: Paper) -> None:
    circular = publish(town)
    leader = client_for(town.leader1)

    assert leader.post(print_url(town, circular), {"block": "all"}).status_code == 404
    assert leader.post(print_url(town, circular), {"block": town.block2.pk}).status_code == 404
    assert leader.post(print_url(town, circular), {"block": ""}).status_code == 404
    assert client_for(town.resident1).get(print_url(town, circular)).status_code == 404
    assert client_for(town.other_chair).get(print_url(town, circular)).status_code == 404
    assert not PrintRecord.objects.exists()


def test_chair_prints_every_block_at_once(town: Town, paper: Paper) -> None:
    circular = publish(town)
    chair = client_for(town.chair)
    assert 'value="all"' in chair.get(print_url(town, circular)).content.decode()

    response = chair.post(print_url(town, circular), {"block": "all"})

    assert response.status_code == 200
    assert f"kairan-{circular.pk}-all.pdf" in response["Content-Disposition"]
    record = PrintRecord.objects.get(circular=circular)
    assert record.all_blocks is True
    assert record.block is None
    assert record.household_ids == [*(h.pk for h in paper.block1), paper.block2.pk]
    assert record.pages == pdf_pages(response.content)
    assert (record.furigana, record.large_print) == (False, False)
    ledger = text_of(chair.get(ledger_url(town, circular)).content)
    assert "紙: 印刷済 3 / 回収 0" in ledger
    assert "紙: 印刷済 1 / 回収 0" in ledger


def test_app_household_with_member_is_not_counted_as_paper(town: Town) -> None:
    # Only app households with working logins: no paper line on the ledger at all.
    circular = publish(town)
    ledger = text_of(client_for(town.chair).get(ledger_url(town, circular)).content)
    assert "紙: 印刷済" not in ledger
    # The moment 山田's only login is switched off, 山田 is on paper.
    User.objects.filter(pk=town.resident1.pk).update(is_active=False)
    ledger = text_of(client_for(town.chair).get(ledger_url(town, circular)).content)
    assert "紙: 印刷済 0 / 回収 0" in ledger
