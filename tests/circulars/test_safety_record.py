"""安否確認 at the door: the 班長's recording screen, its entry points (ledger, follow-up list)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from circulars import safety, services
from circulars.models import Circular, Receipt, ReceiptMethod, SafetyReport, SafetyStatus
from circulars.services import CircularData
from communities.models import Block, DeliveryMode, Household, Member
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory, UserFactory, give_role

pytestmark = pytest.mark.django_db

VISIT, PHONE = ReceiptMethod.PROXY_VISIT, ReceiptMethod.PROXY_PHONE


def ja(message: str) -> str:
    """The page's text for a msgid (Japanese once the catalogue has it)."""
    with translation.override("ja"):
        return translation.gettext(message)


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def text_of(html: bytes | str) -> str:
    page = html.decode() if isinstance(html, bytes) else html
    page = re.sub(r"<(script|style|datalist)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)).strip()


def start(town: Town, *, drill: bool = True) -> Circular:
    return safety.safety_check_start(community=town.community, author=town.chair, drill=drill)


def record_url(town: Town, circular: Circular, block: Block) -> str:
    return reverse("circulars:safety_record", args=[town.community.slug, circular.pk, block.pk])


def row_of(html: str, household: Household) -> str:
    end = r"(?=<li id|</ol>|<div id|$)"
    match = re.search(rf'<li id="household-{household.pk}".*?</li>\s*{end}', html, re.S)
    assert match is not None, f"no row for {household.label}"
    return match.group(0)


def positions(html: str, households: list[Household]) -> list[int]:
    return [html.find(f'id="household-{household.pk}"') for household in households]


class Round:
    """block1's round: 石井 (paper, 1), 山田 (app, the town's), 上田 (paper, 3), 青木 (app, 4)."""

    def __init__(self, town: Town) -> None:
        town.household1.circulation_order = 2
        town.household1.save(update_fields=["circulation_order"])
        self.ishii = HouseholdFactory.create(
            block=town.block1,
            label="石井",
            circulation_order=1,
            delivery_mode=DeliveryMode.PAPER,
            address="桜町1-2-3",
            phone="03-1234-5678",
            helper_note="耳が遠いので大きな声で",
        )
        self.yamada = town.household1
        self.ueda = HouseholdFactory.create(
            block=town.block1, label="上田", circulation_order=3, delivery_mode=DeliveryMode.PAPER
        )
        self.aoki = HouseholdFactory.create(block=town.block1, label="青木", circulation_order=4)
        MemberFactory.create(household=self.aoki)
        self.in_order = [self.ishii, self.yamada, self.ueda, self.aoki]


@pytest.fixture
def round_(town: Town) -> Round:
    return Round(town)


@pytest.fixture
def people(town: Town) -> dict[str, User]:
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


def tap(client: Client, url: str, household: Household, status: str, **extra: str) -> Any:
    return client.post(
        url, {"household": household.pk, "status": status, **extra}, HTTP_HX_REQUEST="true"
    )


# --- Who may record ---------------------------------------------------------------------


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
def test_permission_matrix(
    town: Town, round_: Round, people: dict[str, User], who: str, allowed: bool
) -> None:
    check = start(town)
    client = client_for(people[who])
    url = record_url(town, check, town.block1)

    page = client.get(url)
    posted = client.post(url, {"household": round_.ishii.pk, "status": SafetyStatus.SAFE})

    if allowed:
        assert page.status_code == 200
        assert posted.status_code == 302
        report = SafetyReport.objects.get()
        assert (report.status, report.method, report.recorded_by) == (
            SafetyStatus.SAFE,
            VISIT,
            people[who],
        )
    else:
        assert (page.status_code, posted.status_code) == (404, 404)
        assert not SafetyReport.objects.exists()


def test_only_published_safety_checks_and_their_own_blocks(town: Town, round_: Round) -> None:
    chair = client_for(town.chair)
    notice = services.circular_publish(
        circular=services.circular_create(
            community=town.community, author=town.chair, data=CircularData(title="清掃")
        )
    )
    assert chair.get(record_url(town, notice, town.block1)).status_code == 404
    check = start(town)
    foreign_block = Block.objects.get(community=town.other_community)
    assert chair.get(record_url(town, check, foreign_block)).status_code == 404
    # Another association's chair, with this association's ids under their own slug.
    other = client_for(town.other_chair)
    url = reverse(
        "circulars:safety_record", args=[town.other_community.slug, check.pk, town.block1.pk]
    )
    assert other.get(url).status_code == 404
    only_block2 = safety.safety_check_start(
        community=town.community, author=town.chair, drill=True, blocks=[town.block2]
    )
    assert chair.get(record_url(town, only_block2, town.block1)).status_code == 404
    anonymous = Client().get(record_url(town, check, town.block1))
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]


def test_a_household_of_another_block_or_association_is_404(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.leader1)
    url = record_url(town, check, town.block1)
    other_household = Household.objects.get(community=town.other_community)
    for household in (town.household2, other_household):
        assert tap(client, url, household, SafetyStatus.SAFE).status_code == 404
    assert not SafetyReport.objects.exists()


# --- The list ----------------------------------------------------------------------------


def test_round_order_with_unknown_first_then_needs_help_then_safe(
    town: Town, round_: Round
) -> None:
    check = start(town)
    safety.safety_report(
        circular=check,
        household=round_.ishii,
        status=SafetyStatus.SAFE,
        method=PHONE,
        recorded_by=town.leader1,
    )
    safety.safety_report(
        circular=check,
        household=round_.aoki,
        status=SafetyStatus.HELP,
        method=ReceiptMethod.APP,
        member=Member.objects.get(household=round_.aoki),
    )
    html = client_for(town.leader1).get(record_url(town, check, town.block1)).content.decode()

    # 山田 and 上田 unknown (round order), then 青木 (help), then 石井 (safe).
    order = [round_.yamada, round_.ueda, round_.aoki, round_.ishii]
    assert positions(html, order) == sorted(positions(html, order))
    assert -1 not in positions(html, order)
    # The printed round's numbers stay with the households.
    assert '<span class="record-order">1</span>' in row_of(html, round_.ishii)
    assert '<span class="record-order">4</span>' in row_of(html, round_.aoki)
    ishii = text_of(row_of(html, round_.ishii))
    assert ja("Paper") in ishii
    assert "桜町1-2-3" in ishii and "耳が遠いので大きな声で" in ishii
    assert 'href="tel:03-1234-5678"' in row_of(html, round_.ishii)
    assert ja("Phone call") in ishii  # how it was recorded
    assert town.leader1.first_name in ishii  # and by whom
    assert ja("Not known yet") in text_of(row_of(html, round_.yamada))
    counts = text_of(re.search(r'<div id="record-counts".*?</div>', html, re.S).group(0))  # type: ignore[union-attr]
    assert re.findall(r"\d+", counts) == ["2", "1", "1"]
    # A drill says so.
    assert ja("This is a drill, not a real disaster.") in text_of(html)


def test_the_page_reads_in_a_fixed_number_of_queries(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.leader1)
    url = record_url(town, check, town.block1)

    def count() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    few = count()
    for index in range(20):
        household = HouseholdFactory.create(block=town.block1, label=f"追加{index}")
        services.receipts_sync_for_household(household=household)
        safety.safety_report(
            circular=check,
            household=household,
            status=SafetyStatus.SAFE if index % 2 else SafetyStatus.ABSENT,
            method=VISIT,
            recorded_by=town.leader1 if index % 3 else town.chair,
        )
    assert count() <= few + 2  # one name lookup per person who recorded, not per household


# --- Tapping -----------------------------------------------------------------------------


def test_a_tap_records_and_updates_the_row_in_place(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.helper2)
    give_role(user=town.helper2, community=town.community, role="helper", block=town.block1)
    url = record_url(town, check, town.block1)

    response = tap(client, url, round_.ueda, SafetyStatus.HELP, note="  足を 怪我 ")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert html.lstrip().startswith(f'<li id="household-{round_.ueda.pk}"')
    row = text_of(row_of(html, round_.ueda))
    assert ja("Needs help") in row and "足を 怪我" in row and ja("Recorded.") in row
    assert 'aria-pressed="true"' in row_of(html, round_.ueda)
    # The counts come along out of band.
    counts = re.search(r'<div id="record-counts"[^>]*hx-swap-oob="true".*?</div>', html, re.S)
    assert counts is not None
    assert re.findall(r"\d+", text_of(counts.group(0))) == ["3", "1", "0"]
    report = SafetyReport.objects.get()
    assert (report.status, report.note, report.method, report.recorded_by) == (
        SafetyStatus.HELP,
        "足を 怪我",
        VISIT,
        town.helper2,
    )
    receipt = Receipt.objects.get(circular=check, household=round_.ueda)
    assert receipt.confirmed_at is not None
    assert receipt.method == VISIT


def test_a_wrong_tap_is_corrected_by_the_right_one(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.leader1)
    url = record_url(town, check, town.block1)

    tap(client, url, round_.ishii, SafetyStatus.HELP)
    response = tap(client, url, round_.ishii, SafetyStatus.SAFE)

    row = row_of(response.content.decode(), round_.ishii)
    assert "✓ " + ja("Safe") in text_of(row)
    # The earlier record stays, as history.
    assert ja("Earlier records") in text_of(row)
    assert re.search(r'value="help"[^>]*aria-pressed="false"', row)
    assert SafetyReport.objects.count() == 2
    access_rows = safety.safety_record_rows(circular=check, block=town.block1)
    assert {r.household_id: r.safety_status for r in access_rows}[round_.ishii.pk] == "safe"  # type: ignore[attr-defined]


def test_nobody_at_the_door_stays_unknown_and_shows_the_attempt(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.leader1)
    url = record_url(town, check, town.block1)

    response = tap(client, url, round_.ueda, SafetyStatus.ABSENT)

    row = text_of(row_of(response.content.decode(), round_.ueda))
    assert ja("Not known yet") in row and ja("No answer") in row
    assert Receipt.objects.get(circular=check, household=round_.ueda).confirmed_at is None
    # Still among the unknown at the top, and still on the follow-up list.
    tap(client, url, round_.ishii, SafetyStatus.SAFE)
    html = client.get(url).content.decode()
    assert positions(html, [round_.ueda]) < positions(html, [round_.ishii])
    followup = client.get(reverse("circulars:followup", args=[town.community.slug]))
    assert "上田" in text_of(followup.content)


def test_visit_or_phone_is_chosen_once_and_remembered(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.leader1)
    url = record_url(town, check, town.block1)
    page = client.get(url).content.decode()
    assert re.search(rf'value="{VISIT}"[^>]*aria-pressed="true"', page)  # 訪問 by default

    switched = client.post(url, {"action": "method", "method": PHONE}, HTTP_HX_REQUEST="true")

    assert switched.status_code == 302 and switched["Location"] == url
    page = client.get(url).content.decode()
    assert re.search(rf'value="{PHONE}"[^>]*aria-pressed="true"', page)
    assert f'name="method" value="{PHONE}"' in page
    assert f'name="method" value="{VISIT}"' not in page.split('id="record-counts"')[1]
    # Every row now records 電話, also without the field (an old page), and a new page
    # opens with 電話 chosen.
    tap(client, url, round_.ishii, SafetyStatus.SAFE)
    client.post(url, {"household": round_.ueda.pk, "status": SafetyStatus.SAFE})
    assert set(SafetyReport.objects.values_list("method", flat=True)) == {PHONE}
    assert re.search(rf'value="{PHONE}"[^>]*aria-pressed="true"', client.get(url).content.decode())


def test_without_javascript_a_tap_redirects_back_to_the_row(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.leader1)
    url = record_url(town, check, town.block1)

    response = client.post(url, {"household": round_.ishii.pk, "status": SafetyStatus.SAFE})

    assert response.status_code == 302
    assert response["Location"] == f"{url}#household-{round_.ishii.pk}"
    page = client.get(response["Location"])
    assert "石井" in text_of(page.content)
    assert ja("Safe") in text_of(page.content)


def test_a_double_submit_is_one_report(town: Town, round_: Round) -> None:
    check = start(town)
    client = client_for(town.leader1)
    url = record_url(town, check, town.block1)
    key = str(uuid.uuid4())
    for _ in range(2):
        response = tap(client, url, round_.ishii, SafetyStatus.SAFE, key=key)
        assert response.status_code == 200
    assert SafetyReport.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"household": "abc"}, "household"),
        ({"household": ""}, "household"),
        ({"status": "fine"}, "status"),
        ({"status": ""}, "status"),
        ({"method": ReceiptMethod.APP}, "method"),
        ({"method": ReceiptMethod.PAPER}, "method"),
        ({"note": "あ" * 201}, "note"),
        ({"key": "not-a-key"}, "key"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    town: Town, round_: Round, fields: dict[str, str], field: str
) -> None:
    check = start(town)
    url = record_url(town, check, town.block1)
    data = {"household": str(round_.ishii.pk), "status": SafetyStatus.SAFE} | fields

    response = client_for(town.leader1).post(url, data, HTTP_HX_REQUEST="true")

    assert response.status_code == 400
    assert response.content.decode().startswith(f"{field}: ")
    assert not SafetyReport.objects.exists()
    method = client_for(town.leader1).post(url, {"action": "method", "method": "carrier"})
    assert method.status_code == 400 and method.content.decode().startswith("method: ")


def test_a_residents_own_answer_shows_as_theirs(town: Town, round_: Round) -> None:
    check = start(town)
    safety.safety_report(
        circular=check,
        household=round_.yamada,
        status=SafetyStatus.SAFE,
        method=ReceiptMethod.APP,
        member=Member.objects.get(user=town.resident1),
        recorded_by=town.resident1,
    )
    html = client_for(town.leader1).get(record_url(town, check, town.block1)).content.decode()
    row = text_of(row_of(html, round_.yamada))
    assert ja("Safe") in row
    when = timezone.localtime(SafetyReport.objects.get().reported_at).strftime("%H:%M")
    own = ja("%(method)s %(time)s (the household)") % {"method": ja("App"), "time": when}
    assert own in row


# --- Entry points -------------------------------------------------------------------------


def test_the_ledger_links_each_block_to_its_recording_screen(town: Town, round_: Round) -> None:
    check = start(town)
    html = (
        client_for(town.chair)
        .get(reverse("circulars:ledger", args=[town.community.slug, check.pk]))
        .content.decode()
    )
    for block in (town.block1, town.block2):
        assert f'href="{record_url(town, check, block)}"' in html
    # No 手渡し / 電話 / 訪問 confirmations and no sign-off sheet: without an answer they
    # would say nothing about the household.
    assert "/proxy/" not in html
    assert "/paper/" not in html.split('id="ledger-body"')[1]
    notice = services.circular_publish(
        circular=services.circular_create(
            community=town.community, author=town.chair, data=CircularData(title="清掃")
        )
    )
    plain = (
        client_for(town.chair)
        .get(reverse("circulars:ledger", args=[town.community.slug, notice.pk]))
        .content.decode()
    )
    assert "/safety/" not in plain and "/proxy/" in plain
    assert f"/paper/{town.block1.pk}/" in plain  # 石井 and 上田 are on paper


def test_the_followup_list_shows_unknown_households_at_once_paper_first(
    town: Town, round_: Round
) -> None:
    check = start(town)
    safety.safety_report(
        circular=check,
        household=round_.ishii,
        status=SafetyStatus.SAFE,
        method=PHONE,
        recorded_by=town.leader1,
    )
    client = client_for(town.leader1)

    html = client.get(reverse("circulars:followup", args=[town.community.slug])).content.decode()

    url = record_url(town, check, town.block1)
    assert f'href="{url}"' in html
    names = text_of(html)
    # Paper 上田 first, then the app households in round order; 石井 answered.
    assert [names.find(label) for label in ("上田", "山田", "青木")] == sorted(
        names.find(label) for label in ("上田", "山田", "青木")
    )
    assert "石井" not in names
    assert f'href="{url}#household-{round_.ueda.pk}"' in html
    assert check.title in names
    # Only the 班長's own block: 田中 (block 2) is not there.
    assert "田中" not in names
    # The safety check is not repeated with 手渡し buttons further down.
    assert "/proxy/" not in html


def test_the_followup_list_forgets_a_check_after_three_days(town: Town, round_: Round) -> None:
    check = start(town)
    Circular.objects.filter(pk=check.pk).update(
        published_at=timezone.now() - safety.FOLLOWUP_FOR - timedelta(minutes=1)
    )
    html = client_for(town.leader1).get(reverse("circulars:followup", args=[town.community.slug]))
    assert check.title not in text_of(html.content)


def test_a_safety_check_is_not_confirmed_without_an_answer(town, client):
    """The ledger's one-tap proxy and the 回覧表 sign-off say nothing about safety: refused,
    and the sign-off screen leads to the recording screen instead."""
    from django.urls import reverse

    from circulars import safety
    from circulars.models import Receipt

    check = safety.safety_check_start(community=town.community, author=town.chair, drill=True)
    client.force_login(town.leader1)
    slug = town.community.slug
    proxy = reverse("circulars:ledger_proxy", args=[slug, check.pk, town.household1.pk])
    response = client.post(proxy, {"method": "proxy_visit"})
    assert response.status_code == 400
    signoff = reverse("circulars:paper_signoff", args=[slug, check.pk, town.block1.pk])
    response = client.post(signoff, {"action": "all"})
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "circulars:safety_record", args=[slug, check.pk, town.block1.pk]
    )
    assert not Receipt.objects.filter(circular=check, confirmed_at__isnull=False).exists()
