"""Circulars on a phone: the chair writes and publishes (scenario 1), a resident's inbox
shows it live, the resident reads and confirms once (scenario 2), and inbox search.

Every page of the flow must fit 375 px without sideways scrolling and keep its main
controls at least 44×44 px: the chair posts from her phone, residents are often 70+.
"""

from __future__ import annotations

import io
import re
from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageDraw
from playwright.sync_api import FilePayload, Locator, Page, expect

from circulars.attachments import attachment_add
from circulars.models import Circular, CircularStatus, Receipt
from circulars.services import CircularData, circular_create, circular_publish
from communities.models import Community, DeliveryMode, Household, RoleKind
from tests.e2e.live_browser import PHONE, BrowserTestCase, ja, text_re
from tests.factories import (
    BlockFactory,
    CommunityFactory,
    HouseholdFactory,
    MemberFactory,
    UserFactory,
    give_role,
    mfa_enable,
)

pytestmark = pytest.mark.browser

TITLE = "ごみ収集日の変更について"
BODY = (
    "4月から燃やすごみの収集日が月曜日と木曜日に変わります。\n"
    "市のお知らせを写真で付けました。詳しくは https://www.city.example.jp/gomi をご覧ください。"
)
OTHER_TITLE = "夏祭りのお知らせ"
# A live event reaches an open page in well under a second.
LIVE_MS = 5_000
MIN_TARGET = 44


def notice_photo() -> bytes:
    """A phone photo of the city's notice: a JPEG with something drawn on it."""
    image = Image.new("RGB", (1200, 900), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 100, 1100, 800), outline=(20, 60, 140), width=12)
    for line in range(6):
        draw.line((160, 220 + line * 90, 1040, 220 + line * 90), fill=(40, 40, 40), width=8)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


class CircularScene(BrowserTestCase):
    """さくら町内会: three blocks, a resident household with the app, a chair with MFA."""

    community: Community
    household: Household
    resident: User
    chair: User

    def setUp(self) -> None:
        super().setUp()
        self.community = CommunityFactory.create(name="さくら町内会", slug="sakura-circ")
        blocks = [
            BlockFactory.create(community=self.community, name=f"{n}班", position=n)
            for n in (1, 2, 3)
        ]
        self.household = HouseholdFactory.create(block=blocks[0], label="山田", address="桜町1-2")
        HouseholdFactory.create(block=blocks[1], label="田中", delivery_mode=DeliveryMode.PAPER)
        HouseholdFactory.create(block=blocks[2], label="佐藤", delivery_mode=DeliveryMode.PAPER)
        self.resident = MemberFactory.create(
            household=self.household, display_name="山田 花子"
        ).user
        self.chair = UserFactory.create(first_name="会長")
        give_role(user=self.chair, community=self.community, role=RoleKind.CHAIR)
        mfa_enable(self.chair)

    def base(self) -> str:
        return f"/c/{self.community.slug}"

    def publish(self, title: str, body: str = "", *, photo: bool = False) -> Circular:
        circular = circular_create(
            community=self.community,
            author=self.chair,
            data=CircularData(title=title, body=body, due_date=date.today() + timedelta(days=7)),
        )
        if photo:
            upload = SimpleUploadedFile("お知らせ.jpg", notice_photo(), content_type="image/jpeg")
            attachment_add(circular=circular, upload=upload)
        return circular_publish(circular=circular)

    # --- phone-fit checks ----------------------------------------------------------------

    def assert_fits_phone(self, page: Page, name: str) -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(width, PHONE["width"], f"{name}: the page scrolls sideways")

    def assert_tappable(self, control: Locator, what: str) -> None:
        expect(control).to_be_visible()
        control.scroll_into_view_if_needed()
        box = control.bounding_box()
        assert box is not None, what
        self.assertGreaterEqual(box["width"], MIN_TARGET, f"{what}: too narrow ({box})")
        self.assertGreaterEqual(box["height"], MIN_TARGET, f"{what}: too low ({box})")
        # Inside the screen's width: reachable without sideways scrolling.
        self.assertGreaterEqual(box["x"], 0, what)
        self.assertLessEqual(box["x"] + box["width"], PHONE["width"], what)

    def assert_image_shown(self, page: Page) -> None:
        """The photo is inline and has really loaded (it is lazy: scroll to it first)."""
        image = page.locator("figure.attachment-image img")
        expect(image).to_have_count(1)
        image.scroll_into_view_if_needed()
        expect(image).to_be_visible()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )

    def phone_check(self, page: Page, name: str, controls: dict[str, Locator]) -> None:
        self.page_check(page, name)
        self.assert_fits_phone(page, name)
        for what, control in controls.items():
            self.assert_tappable(control, f"{name}: {what}")


class CircularJourneyTests(CircularScene):
    def open_home_live(self) -> Page:
        """The resident's home (the inbox) with its socket open; marked to catch a reload."""
        home = self.new_page(user=self.resident)
        home.goto(self.url("/"))
        expect(home.locator("[data-live-ws]")).to_have_attribute(
            "data-live-state", "open", timeout=LIVE_MS
        )
        expect(home.locator("main")).to_contain_text(
            text_re("There are no circulars yet. When the association sends one, it appears here.")
        )
        home.evaluate("window.__marker = 1")
        return home

    def write_and_publish_on_phone(self, page: Page) -> Circular:
        """Scenario 1: 回覧 → 回覧を書く → template → text, photo, all blocks, due date →
        draft → preview → publish now."""
        main = page.locator("main")
        page.goto(self.url(f"{self.base()}/"))
        page.locator("nav").get_by_role("link", name=ja("Circulars"), exact=True).click()
        page.wait_for_url(f"**{self.base()}/circulars/")
        write = main.get_by_role("link", name=ja("Write a circular"))
        self.phone_check(page, "circ-list-empty", {"write": write})
        write.click()
        page.wait_for_url(f"**{self.base()}/circulars/new/")

        page.get_by_text(ja("Start from a template")).click()
        main.get_by_role("link", name="清掃活動").click()
        page.wait_for_url("**/circulars/new/?starter=cleanup")
        title = page.get_by_label(ja("Title"))
        expect(title).to_have_value("地域清掃のお知らせ")
        save = main.get_by_role("button", name=ja("Save draft"))
        self.phone_check(page, "circ-new", {"save draft": save})

        title.fill(TITLE)
        page.get_by_label(ja("Text")).fill(BODY)
        page.get_by_role("radio", name=ja("All blocks")).check()
        due = date.today() + timedelta(days=7)
        page.get_by_label(ja("Due date (optional)")).fill(due.isoformat())
        save.click()
        page.wait_for_url(re.compile(r"/circulars/\d+/draft/$"))
        expect(page.get_by_role("status")).to_contain_text(ja("The draft was saved."))
        circular = Circular.objects.get(community=self.community, title=TITLE)
        self.assertEqual(circular.status, CircularStatus.DRAFT)
        self.assertTrue(circular.all_blocks)
        self.assertEqual(circular.due_date, due)

        photo: FilePayload = {
            "name": "市のお知らせ.jpg",
            "mimeType": "image/jpeg",
            "buffer": notice_photo(),
        }
        page.get_by_label(ja("Add a photo or PDF")).set_input_files(files=photo)
        main.get_by_role("button", name=ja("Add the file")).click()
        page.wait_for_url(re.compile(r"/circulars/\d+/draft/$"))
        expect(page.get_by_role("status")).to_contain_text(ja("The file was added."))
        expect(main.locator("img.thumb")).to_have_count(1)
        self.assertEqual(circular.attachments.count(), 1)
        preview = main.get_by_role("link", name=ja("Preview as a resident"))
        publish = main.get_by_role("button", name=ja("Publish"), exact=True)
        self.phone_check(
            page,
            "circ-draft",
            {
                "edit": main.get_by_role("link", name=ja("Edit"), exact=True),
                "preview": preview,
                "add the file": main.get_by_role("button", name=ja("Add the file")),
                "publish": publish,
            },
        )

        preview.click()
        page.wait_for_url(re.compile(r"/circulars/\d+/preview/$"))
        expect(page.get_by_role("heading", level=1)).to_have_text(TITLE)
        expect(main).to_contain_text(
            text_re("Preview: this is how residents will see the circular.")
        )
        self.assert_image_shown(page)
        self.phone_check(
            page, "circ-preview", {"confirm (disabled)": main.locator(".button-confirm")}
        )
        page.go_back()
        page.wait_for_url(re.compile(r"/circulars/\d+/draft/$"))

        expect(page.get_by_role("radio", name=ja("Publish now"))).to_be_checked()
        publish.click()
        page.wait_for_url(re.compile(rf"/circulars/{circular.pk}/$"))
        expect(page.get_by_role("status")).to_contain_text(ja("The circular was published."))
        self.phone_check(
            page,
            "circ-published-chair",
            {
                "delivery status": main.get_by_role("link", name=ja("Delivery status")),
                "print": main.get_by_role("link", name=ja("Print for paper households")),
            },
        )
        circular.refresh_from_db()
        self.assertEqual(circular.status, CircularStatus.PUBLISHED)

        page.locator("nav").get_by_role("link", name=ja("Circulars"), exact=True).click()
        page.wait_for_url(f"**{self.base()}/circulars/")
        row = main.locator("li.circular-row", has_text=TITLE)
        self.phone_check(
            page,
            "circ-list",
            {
                "the circular": row.get_by_role("link", name=TITLE),
                "delivery status": row.get_by_role("link", name=ja("Delivery status")),
            },
        )
        return circular

    def test_chair_publishes_from_her_phone_and_a_resident_confirms_once(self) -> None:
        home = self.open_home_live()
        chair = self.new_page(user=self.chair)
        circular = self.write_and_publish_on_phone(chair)

        # Scenario 2: the new circular appears on the open home page, without a reload.
        card = home.locator("main a.inbox-card", has_text=TITLE)
        expect(card).to_be_visible(timeout=LIVE_MS)
        self.assertEqual(home.evaluate("window.__marker"), 1, "the home page was reloaded")
        expect(card).to_contain_text(ja("Not yet confirmed"))
        self.phone_check(home, "circ-home-resident", {"the new circular": card})

        card.click()
        home.wait_for_url(f"**{self.base()}/circulars/{circular.pk}/")
        expect(home.get_by_role("heading", level=1)).to_have_text(TITLE)
        self.assert_image_shown(home)
        receipt = Receipt.objects.get(circular=circular, household=self.household)
        self.assertIsNotNone(receipt.opened_at, "opening is recorded")
        self.assertIsNone(receipt.confirmed_at, "opening is not confirming")
        confirm = home.get_by_role("button", name=ja("I have read it"))
        self.phone_check(home, "circ-resident-before", {"確認しました": confirm})

        # A double tap: two clicks in a row, then the same form (same key) sent twice more.
        form = home.locator("#confirm-area form")
        fields = {
            name: form.locator(f'input[name="{name}"]').input_value()
            for name in ("csrfmiddlewaretoken", "key")
        }
        action = form.get_attribute("action")
        confirm.dblclick()
        expect(home.locator(".confirmed-badge")).to_contain_text(ja("Confirmed"))
        expect(home.get_by_role("button", name=ja("I have read it"))).to_have_count(0)
        replies: list[dict[str, Any]] = home.evaluate(
            """async ([action, fields]) => {
                const send = () => {
                    const body = new FormData();
                    for (const [name, value] of Object.entries(fields)) body.append(name, value);
                    return fetch(action, {method: "POST", body, headers: {"HX-Request": "true"}});
                };
                const replies = await Promise.all([send(), send()]);
                return Promise.all(
                    replies.map(async r => ({status: r.status, text: await r.text()}))
                );
            }""",
            [action, fields],
        )
        self.assertEqual([reply["status"] for reply in replies], [200, 200])
        for reply in replies:
            self.assertIn(ja("Confirmed"), reply["text"])
        receipts = Receipt.objects.filter(circular=circular, household=self.household)
        self.assertEqual(receipts.count(), 1)
        self.assertIsNotNone(receipts.get().confirmed_at)
        self.phone_check(home, "circ-resident-confirmed", {})

        # After a reload the page still says so, and the button is gone for good.
        home.reload()
        expect(home.locator(".confirmed-badge")).to_contain_text(ja("Confirmed"))
        expect(home.get_by_role("button", name=ja("I have read it"))).to_have_count(0)
        self.assert_clean_console()


class ResidentReadingTests(CircularScene):
    def test_inbox_search_finds_gomi(self) -> None:
        self.publish(TITLE, BODY)
        self.publish(OTHER_TITLE, "今年も○○祭りを開催します。")
        page = self.new_page(user=self.resident)
        page.goto(self.url("/"))
        page.locator("main").get_by_role("link", name=ja("All circulars and search")).click()
        page.wait_for_url(f"**{self.base()}/inbox/")
        cards = page.locator("main a.inbox-card")
        expect(cards).to_have_count(2)
        search = page.locator("main").get_by_role("button", name=ja("Search"))
        self.phone_check(page, "circ-inbox", {"search": search})

        page.get_by_role("searchbox", name=ja("Search")).fill("ごみ")
        search.click()
        page.wait_for_url(f"**{self.base()}/inbox/?q=*")
        expect(cards).to_have_count(1)
        expect(cards.first).to_contain_text(TITLE)
        expect(page.get_by_role("searchbox", name=ja("Search"))).to_have_value("ごみ")
        self.phone_check(page, "circ-inbox-search", {"result": cards.first})

        page.get_by_role("searchbox", name=ja("Search")).fill("回覧板にない言葉")
        search.click()
        expect(cards).to_have_count(0)
        expect(page.locator("main")).to_contain_text(ja("Nothing found."))
        self.assert_clean_console()

    def test_circular_page_with_furigana_large_text_and_high_contrast(self) -> None:
        circular = self.publish(TITLE, BODY, photo=True)
        page = self.new_page(user=self.resident)
        path = self.url(f"{self.base()}/circulars/{circular.pk}/")
        page.goto(path)
        main = page.locator("main")
        furigana = main.get_by_role("button", name=ja("Furigana"))
        confirm = main.get_by_role("button", name=ja("I have read it"))
        expect(furigana).to_have_attribute("aria-pressed", "false")
        expect(main.locator("ruby")).to_have_count(0)
        expect(
            main.locator(".circular-body a[href='https://www.city.example.jp/gomi']")
        ).to_be_visible()
        self.assert_image_shown(page)
        self.phone_check(page, "circ-resident", {"確認しました": confirm, "ふりがな": furigana})

        furigana.click()
        page.wait_for_url(path)
        expect(furigana).to_have_attribute("aria-pressed", "true")
        expect(main.locator("h1 ruby").first).to_be_visible()
        expect(main.locator(".circular-body ruby rt").first).to_be_visible()
        # Web addresses stay links with furigana on, as without.
        expect(
            main.locator(".circular-body a[href='https://www.city.example.jp/gomi']")
        ).to_be_visible()
        self.phone_check(page, "circ-resident-furigana", {"確認しました": confirm})

        html = page.locator("html")
        page.get_by_role("button", name=ja("Larger text")).click()
        expect(html).to_have_class(re.compile(r"\blarge-text\b"))
        page.get_by_role("button", name=ja("High contrast")).click()
        expect(html).to_have_class(re.compile(r"\bhigh-contrast\b"))
        expect(html).to_have_class(re.compile(r"\blarge-text\b"))
        self.phone_check(page, "circ-resident-furigana-large-contrast", {"確認しました": confirm})

        furigana.click()
        page.wait_for_url(path)
        expect(furigana).to_have_attribute("aria-pressed", "false")
        expect(main.locator("ruby")).to_have_count(0)
        self.assert_image_shown(page)
        self.phone_check(page, "circ-resident-large-contrast", {"確認しました": confirm})
        self.assert_clean_console()
