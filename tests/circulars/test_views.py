"""Circular pages through the Django test client: write, publish, read, confirm, 配布状況."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Protocol

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from circulars import services
from circulars.models import (
    Attachment,
    AttachmentKind,
    Circular,
    CircularStatus,
    Priority,
    Receipt,
    ReceiptMethod,
)
from circulars.services import CircularData
from communities.models import Block, DeliveryMode, Household
from tests.communities.test_views import ja
from tests.conftest import Town

CONFIRM_BUTTON = "確認しました"
CONFIRMED = "確認済み"
LEDGER = "配布状況"


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def url(town: Town, name: str, *args: object) -> str:
    return reverse(f"circulars:{name}", args=[town.community.slug, *args])


class Page(Protocol):
    @property
    def content(self) -> bytes: ...


def text_of(response: Page) -> str:
    """The page's visible text: tags removed, whitespace collapsed."""
    html = response.content.decode()
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def ledger_rows(response: Page) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-ledger-row="(\d+)"', response.content.decode())]


def publish(
    town: Town, title: str = "ごみ収集日の変更について", blocks: list[Block] | None = None
) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(
            title=title,
            body="4月から燃えるごみは火曜と金曜です。\n詳しくは https://example.jp/gomi を。",
            all_blocks=blocks is None,
            blocks=blocks or [],
        ),
    )
    return services.circular_publish(circular=circular)


# --- Writing and publishing -------------------------------------------------------------


def test_writing_flow_starter_draft_preview_publish(town: Town) -> None:
    chair = client_for(town.chair)
    page = chair.get(url(town, "new") + "?starter=cleanup")
    assert page.status_code == 200
    assert "地域清掃のお知らせ" in page.content.decode()
    assert "軍手" in page.content.decode()

    response = chair.post(
        url(town, "new"),
        {
            "title": "地域清掃のお知らせ",
            "body": "日曜の朝8時から。\r\n軍手をお持ちください。",
            "priority": Priority.NORMAL,
            "audience": "all",
            "due_date": "",
        },
    )
    circular = Circular.objects.get(community=town.community)
    assert response.status_code == 302
    assert response["Location"] == url(town, "draft", circular.pk)
    assert circular.status == CircularStatus.DRAFT
    assert circular.author == town.chair
    assert circular.body == "日曜の朝8時から。\n軍手をお持ちください。"

    draft_page = chair.get(url(town, "draft", circular.pk))
    assert draft_page.status_code == 200
    assert url(town, "preview", circular.pk) in draft_page.content.decode()

    preview = chair.get(url(town, "preview", circular.pk))
    assert preview.status_code == 200
    assert "プレビュー" in text_of(preview)
    assert CONFIRM_BUTTON in text_of(preview)
    assert not Receipt.objects.exists()

    response = chair.post(url(town, "draft", circular.pk), {"when": "now"})
    assert response.status_code == 302
    assert response["Location"] == url(town, "detail", circular.pk)
    circular.refresh_from_db()
    assert circular.status == CircularStatus.PUBLISHED
    assert Receipt.objects.filter(circular=circular).count() == 2


def test_publish_later_schedules(town: Town) -> None:
    chair = client_for(town.chair)
    circular = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="夏祭り")
    )
    later = timezone.localtime(timezone.now() + timedelta(days=3)).replace(second=0, microsecond=0)
    response = chair.post(
        url(town, "draft", circular.pk),
        {"when": "later", "publish_at": later.strftime("%Y-%m-%dT%H:%M")},
    )
    assert response.status_code == 302
    assert response["Location"] == url(town, "draft", circular.pk)
    circular.refresh_from_db()
    assert circular.status == CircularStatus.SCHEDULED
    assert circular.publish_at == later
    assert not Receipt.objects.filter(circular=circular).exists()

    # "Later" without a time is a form error, not a publish.
    other = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="別件")
    )
    response = chair.post(url(town, "draft", other.pk), {"when": "later", "publish_at": ""})
    assert response.status_code == 200
    other.refresh_from_db()
    assert other.status == CircularStatus.DRAFT


def test_block_leader_writes_only_when_allowed_and_only_for_own_blocks(town: Town) -> None:
    leader = client_for(town.leader1)
    assert leader.get(url(town, "new")).status_code == 404
    assert leader.post(url(town, "new"), {"title": "x", "audience": "all"}).status_code == 404

    town.community.allow_block_leader_posts = True
    town.community.save()
    assert leader.get(url(town, "new")).status_code == 200
    base = {"title": "1班のお知らせ", "body": "", "priority": Priority.NORMAL, "due_date": ""}

    # Someone else's block, or every block: refused with the form shown again.
    response = leader.post(
        url(town, "new"), {**base, "audience": "chosen", "blocks": [town.block2.pk]}
    )
    assert response.status_code == 200
    response = leader.post(url(town, "new"), {**base, "audience": "all"})
    assert response.status_code == 200
    assert not Circular.objects.exists()

    response = leader.post(
        url(town, "new"), {**base, "audience": "chosen", "blocks": [town.block1.pk]}
    )
    assert response.status_code == 302
    circular = Circular.objects.get()
    assert circular.author == town.leader1
    assert list(circular.blocks.all()) == [town.block1]

    # A helper is not a 班長 and does not write, even when leaders may.
    assert client_for(town.helper2).get(url(town, "new")).status_code == 404
    assert client_for(town.resident1).get(url(town, "new")).status_code == 404


def test_correcting_a_published_circular_shows_the_correction(town: Town) -> None:
    circular = publish(town)
    chair = client_for(town.chair)
    response = chair.post(
        url(town, "edit", circular.pk),
        {
            "title": "ごみ収集日の変更（訂正）",
            "body": "火曜と土曜",
            "priority": "normal",
            "audience": "all",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == url(town, "detail", circular.pk)
    page = client_for(town.resident1).get(url(town, "detail", circular.pk))
    assert "訂正" in text_of(page)
    assert Receipt.objects.filter(circular=circular).count() == 2


# --- Reading and confirming -------------------------------------------------------------


def test_resident_page_records_opened_and_shows_the_button(town: Town) -> None:
    circular = publish(town)
    page = client_for(town.resident1).get(url(town, "detail", circular.pk))
    assert page.status_code == 200
    text = text_of(page)
    assert CONFIRM_BUTTON in text
    assert circular.title in text
    assert 'href="https://example.jp/gomi"' in page.content.decode()
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.opened_at is not None
    assert receipt.confirmed_at is None
    assert LEDGER not in text  # residents have no way to the ledger
    other = Receipt.objects.get(circular=circular, household=town.household2)
    assert other.opened_at is None


def test_confirm_records_once_and_says_so(town: Town) -> None:
    circular = publish(town)
    resident = client_for(town.resident1)
    resident.get(url(town, "detail", circular.pk))

    response = resident.post(url(town, "confirm", circular.pk), {"key": str(uuid.uuid4())})
    assert response.status_code == 302
    assert response["Location"] == url(town, "detail", circular.pk)
    page = resident.get(response["Location"])
    text = text_of(page)
    assert CONFIRMED in text
    assert "確認を記録しました" in text
    assert "button-confirm" not in page.content.decode()
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.method == ReceiptMethod.APP
    assert receipt.confirmed_by is not None
    assert receipt.confirmed_by.user == town.resident1

    again = resident.post(
        url(town, "confirm", circular.pk), {"key": str(uuid.uuid4())}, follow=True
    )
    assert again.status_code == 200
    assert "もう確認済みです" in text_of(again)
    assert Receipt.objects.filter(circular=circular, household=town.household1).count() == 1
    assert Receipt.objects.filter(circular=circular, confirmed_at__isnull=False).count() == 1


def test_confirm_replay_with_the_same_key_reads_as_recorded(town: Town) -> None:
    circular = publish(town)
    resident = client_for(town.resident1)
    key = str(uuid.uuid4())
    resident.post(url(town, "confirm", circular.pk), {"key": key})
    replay = resident.post(url(town, "confirm", circular.pk), {"key": key}, follow=True)
    assert "確認を記録しました" in text_of(replay)
    assert Receipt.objects.filter(circular=circular, confirmed_at__isnull=False).count() == 1


@pytest.mark.parametrize("key", ["", "not-a-uuid", "12345", "<script>"])
def test_confirm_with_a_garbage_key_is_a_400_with_a_message(town: Town, key: str) -> None:
    circular = publish(town)
    response = client_for(town.resident1).post(url(town, "confirm", circular.pk), {"key": key})
    assert response.status_code == 400
    assert "確認を受け取れませんでした" in response.content.decode()
    assert not Receipt.objects.filter(confirmed_at__isnull=False).exists()


def test_confirm_outside_the_households_circulars_is_a_404(town: Town) -> None:
    block2_only = publish(town, "2班だけ", blocks=[town.block2])
    everyone = publish(town, "全体")
    draft = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="下書き")
    )
    key = {"key": str(uuid.uuid4())}
    resident1 = client_for(town.resident1)
    assert resident1.post(url(town, "confirm", block2_only.pk), key).status_code == 404
    assert resident1.post(url(town, "confirm", draft.pk), key).status_code == 404
    assert resident1.get(url(town, "detail", block2_only.pk)).status_code == 404
    # Another association's resident: not through the town, not through their own slug.
    stranger = client_for(town.other_resident)
    assert stranger.post(url(town, "confirm", everyone.pk), key).status_code == 404
    own = reverse("circulars:confirm", args=[town.other_community.slug, everyone.pk])
    assert stranger.post(own, key).status_code == 404
    # Staff without a household cannot confirm for anyone.
    assert client_for(town.chair).post(url(town, "confirm", everyone.pk), key).status_code == 404
    # GET never confirms.
    assert resident1.get(url(town, "confirm", everyone.pk)).status_code == 405
    assert not Receipt.objects.filter(confirmed_at__isnull=False).exists()


def test_htmx_confirm_returns_the_partial(town: Town) -> None:
    circular = publish(town)
    response = client_for(town.resident2).post(
        url(town, "confirm", circular.pk), {"key": str(uuid.uuid4())}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="confirm-area"')
    assert "<html" not in html
    assert CONFIRMED in text_of(response)
    assert "確認を記録しました" in text_of(response)
    assert Receipt.objects.get(circular=circular, household=town.household2).confirmed_at


@pytest.mark.parametrize("role", ["chair", "officer", "leader1"])
def test_staff_reach_the_ledger_from_the_circular_page(town: Town, role: str) -> None:
    circular = publish(town)
    page = client_for(getattr(town, role)).get(url(town, "detail", circular.pk))
    assert page.status_code == 200
    link = re.search(
        r'<a [^>]*href="' + re.escape(url(town, "ledger", circular.pk)) + r'"[^>]*>(.*?)</a>',
        page.content.decode(),
    )
    assert link is not None
    assert link.group(1).strip() == LEDGER


def test_inbox_page_and_search(town: Town) -> None:
    publish(town, "ごみ収集日の変更")
    publish(town, "夏祭りのお知らせ")
    resident = client_for(town.resident1)
    page = resident.get(url(town, "inbox"))
    assert page.status_code == 200
    assert "ごみ収集日の変更" in text_of(page)
    assert "夏祭りのお知らせ" in text_of(page)
    found = resident.get(url(town, "inbox"), {"q": "収集"})
    assert "ごみ収集日の変更" in text_of(found)
    assert "夏祭りのお知らせ" not in text_of(found)
    assert client_for(town.chair).get(url(town, "inbox")).status_code == 404


# --- The ledger -------------------------------------------------------------------------


def test_ledger_totals_read_confirmed_n_of_m_households(town: Town) -> None:
    circular = publish(town)
    services.receipt_confirm(circular=circular, household=town.household1, method="app")
    page = client_for(town.chair).get(url(town, "ledger", circular.pk))
    assert page.status_code == 200
    text = text_of(page)
    assert LEDGER in text
    # The wording the guides rely on (issue 3, "Words users will see").
    assert "確認済 1 / 2 世帯" in text, re.findall(r"確認済\S* \d+ / \d+ 世帯", text)


def test_ledger_filters(town: Town) -> None:
    circular = publish(town)
    services.receipt_confirm(
        circular=circular, household=town.household2, method=ReceiptMethod.PROXY_PHONE
    )
    chair = client_for(town.chair)
    ledger_url = url(town, "ledger", circular.pk)
    h1, h2 = town.household1.pk, town.household2.pk
    assert ledger_rows(chair.get(ledger_url)) == [h1, h2]
    assert ledger_rows(chair.get(ledger_url, {"status": "not_yet"})) == [h1]
    assert ledger_rows(chair.get(ledger_url, {"status": "confirmed"})) == [h2]
    assert ledger_rows(chair.get(ledger_url, {"block": town.block1.pk})) == [h1]
    assert ledger_rows(chair.get(ledger_url, {"method": "proxy_phone"})) == [h2]
    assert ledger_rows(chair.get(ledger_url, {"method": "app"})) == []
    # Nonsense filters are ignored, not errors.
    assert ledger_rows(chair.get(ledger_url, {"status": "x", "block": "y", "method": "z"})) == [
        h1,
        h2,
    ]
    partial = chair.get(ledger_url, {"status": "not_yet"}, HTTP_HX_REQUEST="true")
    assert partial.content.decode().lstrip().startswith('<div id="ledger-body"')
    assert ledger_rows(partial) == [h1]


def test_block_staff_see_only_their_blocks_in_the_ledger(town: Town) -> None:
    circular = publish(town)
    leader = client_for(town.leader1).get(url(town, "ledger", circular.pk))
    helper = client_for(town.helper2).get(url(town, "ledger", circular.pk))
    assert ledger_rows(leader) == [town.household1.pk]
    assert ledger_rows(helper) == [town.household2.pk]
    assert town.household2.label not in text_of(leader)
    assert town.household1.label not in text_of(helper)


@pytest.mark.parametrize(
    "method", [ReceiptMethod.PROXY_HAND, ReceiptMethod.PROXY_PHONE, ReceiptMethod.PROXY_VISIT]
)
def test_block_leader_records_a_proxy_confirmation(town: Town, method: str) -> None:
    circular = publish(town)
    leader = client_for(town.leader1)
    proxy_url = url(town, "ledger_proxy", circular.pk, town.household1.pk)
    response = leader.post(proxy_url, {"method": method})
    assert response.status_code == 302
    assert response["Location"] == url(town, "ledger", circular.pk)
    receipt = Receipt.objects.get(circular=circular, household=town.household1)
    assert receipt.confirmed_at is not None
    assert receipt.method == method
    assert receipt.recorded_by == town.leader1
    assert receipt.confirmed_by is None

    again = leader.post(proxy_url, {"method": ReceiptMethod.PROXY_VISIT}, follow=True)
    assert "この世帯はもう確認済みでした" in text_of(again)
    receipt.refresh_from_db()
    assert receipt.method == method


def test_htmx_proxy_returns_the_row(town: Town) -> None:
    circular = publish(town)
    response = client_for(town.helper2).post(
        url(town, "ledger_proxy", circular.pk, town.household2.pk),
        {"method": ReceiptMethod.PROXY_HAND},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith("<li")
    assert ledger_rows(response) == [town.household2.pk]
    assert 'data-status="confirmed"' in html


def test_proxy_outside_ones_blocks_or_role_is_refused(town: Town) -> None:
    circular = publish(town)
    block1_url = url(town, "ledger_proxy", circular.pk, town.household1.pk)
    data = {"method": ReceiptMethod.PROXY_HAND}
    assert client_for(town.helper2).post(block1_url, data).status_code == 404
    assert client_for(town.resident1).post(block1_url, data).status_code == 404
    assert client_for(town.other_chair).post(block1_url, data).status_code == 404
    # App confirmation is not a proxy method.
    response = client_for(town.leader1).post(block1_url, {"method": ReceiptMethod.APP})
    assert response.status_code == 400
    assert not Receipt.objects.filter(confirmed_at__isnull=False).exists()


def test_who_may_open_the_ledger(town: Town) -> None:
    everyone = publish(town)
    block2_only = publish(town, "2班だけ", blocks=[town.block2])
    draft = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="下書き")
    )
    for user in (town.resident1, town.resident2, town.other_chair, town.other_resident):
        assert client_for(user).get(url(town, "ledger", everyone.pk)).status_code == 404
    assert client_for(town.leader1).get(url(town, "ledger", block2_only.pk)).status_code == 404
    assert client_for(town.helper2).get(url(town, "ledger", block2_only.pk)).status_code == 200
    assert client_for(town.chair).get(url(town, "ledger", draft.pk)).status_code == 404
    anonymous = client_for(None).get(url(town, "ledger", everyone.pk))
    assert anonymous.status_code == 302
    assert "/accounts/login/" in anonymous["Location"] or "login" in anonymous["Location"]


def test_ledger_query_count_does_not_grow_with_households(town: Town) -> None:
    chair = client_for(town.chair)

    def add_households(count: int) -> None:
        blocks = [town.block1, town.block2]
        start = Household.objects.count()
        Household.objects.bulk_create(
            [
                Household(
                    community=town.community,
                    block=blocks[n % 2],
                    label=f"世帯{start + n}",
                    circulation_order=1000 + start + n,
                    delivery_mode=DeliveryMode.PAPER if n % 3 else DeliveryMode.APP,
                )
                for n in range(count)
            ],
            batch_size=500,
        )

    def queries_for_ledger(circular: Circular, query: str = "") -> int:
        chair.get(url(town, "ledger", circular.pk) + query)  # warm the session and caches
        with CaptureQueriesContext(connection) as captured:
            response = chair.get(url(town, "ledger", circular.pk) + query)
        assert response.status_code == 200
        return len(captured)

    add_households(8)
    small = publish(town, "小さな回覧")
    services.receipt_confirm(circular=small, household=town.household1, method="app")
    assert Receipt.objects.filter(circular=small).count() == 10
    small_count = queries_for_ledger(small)

    add_households(1990)
    large = publish(town, "大きな回覧")
    services.receipt_confirm(circular=large, household=town.household1, method="app")
    assert Receipt.objects.filter(circular=large).count() == 2000
    large_count = queries_for_ledger(large)
    one_block = f"?block={town.block1.pk}"
    block_count = queries_for_ledger(large, one_block)
    # Over PAGE_ROWS_MAX households: every block's totals, rows one block at a time.
    page = chair.get(url(town, "ledger", large.pk))
    assert len(ledger_rows(page)) == 0
    assert ja("No households match.") not in page.content.decode()  # 1,000 in each block
    assert page.content.decode().count(one_block) == 1
    assert "1,000" in page.content.decode() or ">1000<" in page.content.decode()
    page = chair.get(url(town, "ledger", large.pk) + one_block)
    assert len(ledger_rows(page)) == 1000

    assert block_count == small_count
    assert large_count <= small_count


# --- Attachments --------------------------------------------------------------------------


@pytest.fixture
def attachment(town: Town) -> Iterator[Attachment]:
    circular = publish(town, blocks=[town.block1])
    name = default_storage.save(
        f"attachments/test/{uuid.uuid4().hex}.jpg", ContentFile(b"\xff\xd8\xff\xe0fake-jpeg")
    )
    item = Attachment.objects.create(
        circular=circular,
        kind=AttachmentKind.IMAGE,
        file=name,
        original_name="<お知らせ>.jpg",
        size=14,
        width=1,
        height=1,
    )
    yield item
    default_storage.delete(name)


def test_attachment_is_served_inert_to_members(town: Town, attachment: Attachment) -> None:
    file_url = url(town, "attachment_file", attachment.pk, "display")
    for user in (town.resident1, town.chair, town.leader1):
        response = client_for(user).get(file_url)
        assert response.status_code == 200, user
        assert b"".join(response.streaming_content) == b"\xff\xd8\xff\xe0fake-jpeg"  # type: ignore[attr-defined]
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Type"] == "image/jpeg"
        assert response["Content-Disposition"] == f'inline; filename="{attachment.pk}.jpg"'
        assert "sandbox" in response["Content-Security-Policy"]
        assert "default-src 'none'" in response["Content-Security-Policy"]
    # The thumbnail falls back to the display file when there is none.
    thumb = client_for(town.resident1).get(url(town, "attachment_file", attachment.pk, "thumb"))
    assert thumb.status_code == 200
    b"".join(thumb.streaming_content)  # type: ignore[attr-defined]


def test_pdf_attachment_downloads(town: Town) -> None:
    circular = publish(town)
    name = default_storage.save(
        f"attachments/test/{uuid.uuid4().hex}.pdf", ContentFile(b"%PDF-1.4\n%%EOF\n")
    )
    try:
        item = Attachment.objects.create(
            circular=circular, kind=AttachmentKind.PDF, file=name, original_name="案内.pdf", size=15
        )
        response = client_for(town.resident2).get(url(town, "attachment_file", item.pk, "display"))
        assert response.status_code == 200
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
        assert response["Content-Type"] == "application/pdf"
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in response["Content-Security-Policy"]
    finally:
        default_storage.delete(name)


def test_attachment_is_hidden_from_everyone_else(town: Town, attachment: Attachment) -> None:
    file_url = url(town, "attachment_file", attachment.pk, "display")
    # Anonymous: sent to log in, never the file.
    anonymous = client_for(None).get(file_url)
    assert anonymous.status_code == 302
    assert "login" in anonymous["Location"]
    # The circular went to block1 only: household2's resident and block2's helper get 404.
    for user in (town.resident2, town.helper2, town.other_chair, town.other_resident):
        assert client_for(user).get(file_url).status_code == 404, user
    # Through the stranger's own association's slug as well.
    own = reverse(
        "circulars:attachment_file", args=[town.other_community.slug, attachment.pk, "display"]
    )
    assert client_for(town.other_chair).get(own).status_code == 404
    # Unknown variants are 404, not a fallback.
    bad = url(town, "attachment_file", attachment.pk, "original")
    assert client_for(town.resident1).get(bad).status_code == 404


def test_draft_attachment_is_hidden_from_residents(town: Town) -> None:
    circular = services.circular_create(
        community=town.community, author=town.chair, data=CircularData(title="下書き")
    )
    name = default_storage.save(f"attachments/test/{uuid.uuid4().hex}.jpg", ContentFile(b"x"))
    try:
        item = Attachment.objects.create(
            circular=circular, kind=AttachmentKind.IMAGE, file=name, original_name="a.jpg", size=1
        )
        file_url = url(town, "attachment_file", item.pk, "display")
        assert client_for(town.resident1).get(file_url).status_code == 404
        assert client_for(town.leader1).get(file_url).status_code == 404
        response = client_for(town.officer).get(file_url)
        assert response.status_code == 200
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
    finally:
        default_storage.delete(name)
