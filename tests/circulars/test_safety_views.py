"""安否確認 pages through the test client: starting a check, the chair's board, the
resident's tiny answer page (idempotent resends, 400 naming the field, 404 across
associations, page weight, query counts)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from circulars import safety, services
from circulars.models import Circular, Receipt, ReceiptMethod, SafetyReport, SafetyStatus
from circulars.services import CircularData
from communities.models import Member
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory

pytestmark = pytest.mark.django_db

# The whole answer page as a phone fetches it on a first visit: HTML, its CSS and script,
# and the service worker the script registers.
PAGE_WEIGHT_LIMIT = 30 * 1024


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def url(town: Town, name: str, *args: object) -> str:
    return reverse(f"circulars:{name}", args=[town.community.slug, *args])


def start(town: Town, *, drill: bool = True, **kwargs: Any) -> Circular:
    return safety.safety_check_start(
        community=town.community, author=town.chair, drill=drill, **kwargs
    )


def answer(
    client: Client, town: Town, check: Circular, *, json_reply: bool = False, **data: Any
) -> Any:
    fields = {"status": "safe", "key": str(uuid.uuid4()), **data}
    headers = {"Accept": "application/json"} if json_reply else {}
    return client.post(url(town, "safety_answer", check.pk), fields, headers=headers)


def reports(check: Circular) -> list[SafetyReport]:
    return list(SafetyReport.objects.filter(circular=check).order_by("id"))


# --- Starting -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["resident1", "leader1", "helper2", "other_chair"])
def test_only_chair_and_officers_may_start(town: Town, who: str) -> None:
    client = client_for(getattr(town, who))
    assert client.get(url(town, "safety_start")).status_code == 404
    assert client.post(url(town, "safety_start"), {"mode": "drill"}).status_code == 404
    assert not Circular.objects.exists()


def test_starting_asks_drill_or_real_then_confirms_before_sending(town: Town) -> None:
    client = client_for(town.officer)
    page = client.get(url(town, "safety_start"))
    assert page.status_code == 200
    assert b'name="mode" value="drill"' in page.content
    assert b"checked" not in page.content.split(b'name="mode"')[1][:80]  # no default

    missing = client.post(url(town, "safety_start"), {"audience": "all"})
    assert missing.status_code == 200
    assert missing.context["form"].errors["mode"]

    ask = client.post(
        url(town, "safety_start"),
        {"mode": "drill", "message": "震度5強の訓練です", "audience": "all"},
    )
    assert ask.status_code == 200
    assert ask.context["drill"] is True
    assert ask.context["households"] == 2
    assert 'name="confirmed" value="1"' in ask.content.decode()
    assert not Circular.objects.exists(), "nothing is sent before the confirmation"

    sent = client.post(
        url(town, "safety_start"),
        {"mode": "drill", "message": "震度5強の訓練です", "audience": "all", "confirmed": "1"},
    )
    check = Circular.objects.get()
    assert sent.status_code == 302
    assert sent["Location"] == url(town, "safety_board", check.pk)
    assert (check.drill, check.title, check.body) == (True, "【訓練】安否確認", "震度5強の訓練です")


def test_chosen_blocks_only(town: Town) -> None:
    client = client_for(town.chair)
    empty = client.post(
        url(town, "safety_start"), {"mode": "real", "audience": "chosen", "confirmed": "1"}
    )
    assert empty.context["form"].errors["blocks"]
    client.post(
        url(town, "safety_start"),
        {"mode": "real", "audience": "chosen", "blocks": [town.block2.pk], "confirmed": "1"},
    )
    check = Circular.objects.get()
    assert check.drill is False
    assert list(Receipt.objects.filter(circular=check).values_list("household_id", flat=True)) == [
        town.household2.pk
    ]


def test_another_associations_block_is_refused(town: Town) -> None:
    from communities.models import Block

    foreign = Block.objects.get(community=town.other_community)
    response = client_for(town.chair).post(
        url(town, "safety_start"),
        {"mode": "real", "audience": "chosen", "blocks": [foreign.pk], "confirmed": "1"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["blocks"]
    assert not Circular.objects.exists()


def test_officers_see_the_red_start_link(town: Town) -> None:
    link = url(town, "safety_start").encode()
    assert link in client_for(town.chair).get(url(town, "list")).content
    assert link in client_for(town.chair).get("/").content
    assert link not in client_for(town.leader1).get(url(town, "list")).content
    assert link not in client_for(town.leader1).get("/").content


# --- The board ----------------------------------------------------------------------------


def test_board_shows_totals_and_needs_help_first(town: Town) -> None:
    check = start(town)
    safety.safety_report(
        circular=check,
        household=town.household2,
        status=SafetyStatus.HELP,
        note="足を怪我しています",
        method=ReceiptMethod.APP,
    )
    response = client_for(town.chair).get(url(town, "safety_board", check.pk))
    assert response.status_code == 200
    board = response.context["board"]
    assert board.totals.as_dict() == {"households": 2, "safe": 0, "help": 1, "unknown": 1}
    html = response.content.decode()
    assert 'class="drill-banner"' in html
    assert 'data-safety-count="help">1<' in html
    # The needs-help list comes before the blocks and names the household and its note.
    needs_help = html.index('id="needs-help"')
    assert needs_help < html.index('id="safety-block-')
    assert html.index("田中", needs_help) < html.index('id="safety-block-')
    assert "足を怪我しています" in html
    # Live: the ledger's socket, refreshed on safety events.
    assert f'data-live-ws="/ws/c/{town.community.slug}/circulars/{check.pk}/ledger/"' in html
    assert "kairan:changed from:body" in html  # coalesced: one fetch per burst of events


def test_board_partial_for_htmx(town: Town) -> None:
    check = start(town)
    response = client_for(town.chair).get(
        url(town, "safety_board", check.pk), headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="board-body"')
    assert "<html" not in html


def test_block_leader_sees_own_block_only(town: Town) -> None:
    check = start(town)
    response = client_for(town.leader1).get(url(town, "safety_board", check.pk))
    assert response.status_code == 200
    assert [item.block.pk for item in response.context["board"].blocks] == [town.block1.pk]
    assert "田中" not in response.content.decode()


@pytest.mark.parametrize("who", ["resident1", "other_chair", "other_resident"])
def test_board_is_hidden_from_others(town: Town, who: str) -> None:
    check = start(town)
    assert client_for(getattr(town, who)).get(url(town, "safety_board", check.pk)).status_code == (
        404
    )


def test_board_of_an_ordinary_circular_is_404(town: Town) -> None:
    circular = services.circular_publish(
        circular=services.circular_create(
            community=town.community, author=town.chair, data=CircularData(title="清掃")
        )
    )
    assert client_for(town.chair).get(url(town, "safety_board", circular.pk)).status_code == 404


def test_board_renders_in_a_constant_number_of_queries(town: Town) -> None:
    chair = client_for(town.chair)

    def queries(check: Circular) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = chair.get(url(town, "safety_board", check.pk))
        assert response.status_code == 200
        return len(captured)

    small = queries(start(town))
    for index in range(30):
        household = HouseholdFactory.create(
            block=town.block1 if index % 2 else town.block2, label=f"世帯{index}"
        )
        if index % 3 == 0:
            MemberFactory.create(household=household)
    check = start(town)
    for index, receipt in enumerate(Receipt.objects.filter(circular=check)[:20]):
        assert receipt.household is not None
        safety.safety_report(
            circular=check,
            household=receipt.household,
            status=[SafetyStatus.SAFE, SafetyStatus.HELP][index % 2],
            method=ReceiptMethod.APP,
        )
    big = queries(check)
    assert big == small, f"{small} queries for 2 households, {big} for 32"


# --- The resident's answer page -----------------------------------------------------------


def test_answer_page_is_tiny_and_standalone(town: Town) -> None:
    check = start(town, message="震度5強の地震を想定した訓練です。")
    response = client_for(town.resident1).get(url(town, "safety_answer", check.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "【訓練】安否確認" in html
    assert 'class="drill"' in html
    assert "震度5強の地震を想定した訓練です。" in html
    assert 'name="status" value="safe"' in html and 'name="status" value="help"' in html
    for text in safety.NOTE_SUGGESTIONS:
        assert f'value="{text}"' in html
    assert "<img" not in html and "htmx" not in html and "kairan.css" not in html
    assert "<script>" not in html  # only the external, CSP-allowed script
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
    assert sorted(assets) == ["/static/css/safety.css", "/static/js/safety.js"]
    weights = {"html": len(response.content)}
    for asset in assets:
        found = finders.find(asset.removeprefix(settings.STATIC_URL))
        assert isinstance(found, str)
        weights[asset] = Path(found).stat().st_size
    worker = client_for(town.resident1).get("/sw.js")
    weights["/sw.js"] = len(worker.content)
    total = sum(weights.values())
    print(f"answer page weight: {weights} total {total} bytes")
    assert total < PAGE_WEIGHT_LIMIT, weights


def test_opening_records_the_open_but_not_an_answer(town: Town) -> None:
    check = start(town)
    client_for(town.resident1).get(url(town, "safety_answer", check.pk))
    receipt = Receipt.objects.get(circular=check, household=town.household1)
    assert receipt.opened_at is not None and receipt.confirmed_at is None
    assert reports(check) == []


def test_form_post_records_and_redirects_to_the_status(town: Town) -> None:
    check = start(town)
    client = client_for(town.resident1)
    response = answer(client, town, check, status="help", pick="避難しました", note="2階にいます")
    assert response.status_code == 302
    assert response["Location"] == url(town, "safety_answer", check.pk)
    [report] = reports(check)
    assert (report.status, report.note, report.method) == (
        SafetyStatus.HELP,
        "避難しました、2階にいます",
        ReceiptMethod.APP,
    )
    assert report.member == Member.objects.get(user=town.resident1)
    page = client.get(url(town, "safety_answer", check.pk)).content.decode()
    when = timezone.localtime(report.reported_at).strftime("%H:%M")
    assert "✓ " in page and when in page
    receipt = Receipt.objects.get(circular=check, household=town.household1)
    assert receipt.confirmed_at is not None, "answering confirms"


def test_json_post_and_an_idempotent_resend(town: Town) -> None:
    check = start(town)
    client = client_for(town.resident1)
    key = str(uuid.uuid4())
    first = answer(client, town, check, json_reply=True, key=key)
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "safe" and body["replay"] is False and body["text"]
    again = answer(client, town, check, json_reply=True, key=key, status="help")
    assert again.status_code == 200
    assert again.json()["replay"] is True
    assert again.json()["status"] == "safe", "a resend changes nothing"
    assert len(reports(check)) == 1


def test_a_queued_answer_keeps_its_tap_time(town: Town) -> None:
    check = start(town)
    tapped = timezone.now() - timedelta(minutes=20)
    client = client_for(town.resident1)
    answer(client, town, check, at=str(int(tapped.timestamp() * 1000)))
    [report] = reports(check)
    assert report.reported_at == max(
        check.published_at or tapped, tapped.replace(microsecond=tapped.microsecond // 1000 * 1000)
    )
    assert report.reported_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "fine"}, "status"),
        ({"status": "absent"}, "status"),
        ({"key": "not-a-uuid"}, "key"),
        ({"at": "yesterday"}, "at"),
        ({"at": "9" * 20}, "at"),
        ({"pick": "何でも"}, "pick"),
        ({"note": "あ" * 201}, "note"),
    ],
)
def test_malformed_answers_are_400_naming_the_field(
    town: Town, data: dict[str, str], field: str
) -> None:
    check = start(town)
    client = client_for(town.resident1)
    as_json = answer(client, town, check, json_reply=True, **data)
    assert as_json.status_code == 400
    assert as_json.json()["field"] == field
    assert as_json.json()["error"]
    as_form = answer(client, town, check, json_reply=False, **data)
    assert as_form.status_code == 400
    assert f'data-field="{field}"' in as_form.content.decode()
    assert reports(check) == []


def test_a_key_from_another_household_is_400(town: Town) -> None:
    check = start(town)
    key = str(uuid.uuid4())
    answer(client_for(town.resident1), town, check, key=key)
    response = answer(client_for(town.resident2), town, check, json_reply=True, key=key)
    assert response.status_code == 400
    assert response.json()["field"] == "key"


@pytest.mark.parametrize("who", ["other_resident", "other_chair", "chair"])
def test_households_that_cannot_see_the_check_get_404(town: Town, who: str) -> None:
    check = start(town)
    client = client_for(getattr(town, who))
    assert client.get(url(town, "safety_answer", check.pk)).status_code == 404
    assert answer(client, town, check).status_code == 404
    assert reports(check) == []


def test_a_check_for_other_blocks_is_404(town: Town) -> None:
    check = start(town, blocks=[town.block2])
    client = client_for(town.resident1)
    assert client.get(url(town, "safety_answer", check.pk)).status_code == 404
    assert answer(client, town, check).status_code == 404


def test_an_ordinary_circular_has_no_answer_page(town: Town) -> None:
    circular = services.circular_publish(
        circular=services.circular_create(
            community=town.community, author=town.chair, data=CircularData(title="清掃")
        )
    )
    client = client_for(town.resident1)
    assert client.get(url(town, "safety_answer", circular.pk)).status_code == 404
    assert answer(client, town, circular).status_code == 404


def test_answers_are_rate_limited_like_confirm(town: Town) -> None:
    check = start(town)
    client = client_for(town.resident1)
    statuses = [answer(client, town, check, status="x").status_code for _ in range(61)]
    assert statuses[:60] == [400] * 60
    assert statuses[60] == 429


def test_answer_page_reads_the_same_in_english(town: Town) -> None:
    """The page must render in the person's chosen language too (no hard-coded words)."""
    check = start(town)
    client = client_for(town.resident1)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    response = client.get(url(town, "safety_answer", check.pk))
    assert response.status_code == 200
    assert '<html lang="en"' in response.content.decode()


# --- Reaching the answer page -------------------------------------------------------------


def test_inbox_puts_the_check_first_marks_the_drill_and_links_to_the_answer(town: Town) -> None:
    older = start(town)
    answer(client_for(town.resident1), town, older)
    urgent = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title="断水のお知らせ", priority="urgent"),
    )
    services.circular_publish(circular=urgent)
    client = client_for(town.resident1)
    response = client.get(url(town, "inbox"))
    items = response.context["items"]
    assert items[0].circular == older, "an answered check from today still leads the list"
    html = response.content.decode()
    assert f'href="{url(town, "safety_answer", older.pk)}"' in html
    first_card = html[html.index('class="inbox-card') :]
    first_card = first_card[: first_card.index("</a>")]
    assert "【訓練】安否確認" in first_card
    assert "badge-important" in first_card  # 訓練


def test_circular_page_leads_to_the_answer_page(town: Town) -> None:
    check = start(town)
    html = client_for(town.resident1).get(url(town, "detail", check.pk)).content.decode()
    assert url(town, "safety_answer", check.pk) in html
    assert url(town, "confirm", check.pk) not in html, "answering confirms; no separate button"
    assert "drill-notice" in html
    staff = client_for(town.chair).get(url(town, "detail", check.pk)).content.decode()
    assert url(town, "safety_board", check.pk) in staff


def test_mail_subject_says_drill(town: Town) -> None:
    from notifications.email import _circular_subject

    subject = _circular_subject(circular=start(town), community=town.community, kind="new")
    # 【さくら町内会】【訓練】安否確認：… — the drill mark right after the association's name.
    assert re.match(r"^\W?さくら町内会\W{1,2}【訓練】安否確認", subject), subject
    real = _circular_subject(
        circular=start(town, drill=False), community=town.community, kind="new"
    )
    assert "訓練" not in real


def test_push_says_drill_and_opens_the_answer_page(
    town: Town, django_capture_on_commit_callbacks: Any
) -> None:
    from notifications.models import Delivery, DeliveryStatus
    from tests.fakes.push_service import FakePushService
    from tests.notifications.test_ladder import give_push

    with FakePushService() as service:
        browser = service.subscribe()
        give_push(town.household1, browser)
        with django_capture_on_commit_callbacks(execute=True):
            check = start(town)
        row = Delivery.objects.get(
            circular=check, receipt__household=town.household1, channel="push"
        )
        assert row.status == DeliveryStatus.SENT
        [message] = service.pending(browser.id)
        payload = json.loads(browser.decrypt(message.body))
    assert payload == {
        "type": "safety",
        "id": check.pk,
        "url": url(town, "safety_answer", check.pk),
        "urgent": True,
        "drill": True,
    }
    worker = Path(str(finders.find("js/sw.js"))).read_text(encoding="utf-8")
    assert 'return "【訓練】" + titleFor(' in worker


def test_a_household_with_mail_only_answers_from_the_mails_link(town: Town) -> None:
    from django.core import mail

    from notifications.email import email_send_circular
    from tests.notifications.test_ladder import give_email

    give_email(town.household2, "tanaka@example.jp")
    check = start(town, message="震度5強の訓練です")
    mail.outbox = []
    receipt = Receipt.objects.get(circular=check, household=town.household2)
    email_send_circular(receipt=receipt, kind="new")
    [message] = mail.outbox
    assert "【訓練】安否確認" in message.subject
    assert "震度5強の訓練です" in str(message.body)
    link = re.search(r"https?://\S+/e/\S+/", str(message.body))
    assert link is not None
    path = link.group(0).split("://", 1)[1].split("/", 1)[1]
    phone = Client(enforce_csrf_checks=True)  # not logged in: the token is the credential
    page = phone.get("/" + path)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="status" value="help"' in html and 'class="drill"' in html
    token = phone.cookies["csrftoken"].value
    key = str(uuid.uuid4())
    for _ in range(2):  # a resend records nothing new
        response = phone.post(
            "/" + path, {"csrfmiddlewaretoken": token, "status": "help", "key": key}
        )
        assert response.status_code == 302
    [report] = reports(check)
    assert (report.status, report.method, report.receipt_id) == (
        SafetyStatus.HELP,
        ReceiptMethod.EMAIL,
        receipt.pk,
    )
    bad = phone.post("/" + path, {"csrfmiddlewaretoken": token, "status": "?", "key": key})
    assert bad.status_code == 400
    assert 'data-field="status"' in bad.content.decode()


def test_ledger_of_a_drill_says_so_and_links_to_the_board(town: Town) -> None:
    check = start(town)
    html = client_for(town.chair).get(url(town, "ledger", check.pk)).content.decode()
    assert "drill-notice" in html
    assert url(town, "safety_board", check.pk) in html
    real = start(town, drill=False)
    html = client_for(town.chair).get(url(town, "ledger", real.pk)).content.decode()
    assert "drill-notice" not in html
