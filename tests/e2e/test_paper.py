"""Scenario 3, the paper path: block 3's helper prints the pack on her phone, opens the
sign-off screen from the QR on the 回覧表, and taps in the returned sheet while the chair's
配布状況 follows live on a wider screen.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from django.contrib.auth.models import User
from PIL import Image
from playwright.sync_api import Page, Route, expect

from circulars.models import Circular, Receipt, ReceiptMethod
from circulars.services import CircularData, circular_create, circular_publish
from communities.models import Block, DeliveryMode, Household, RoleKind
from tests.e2e.live_browser import PHONE, SCREENSHOTS, BrowserTestCase, ja
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
BODY = "4月から燃やすごみの収集日が月曜日と木曜日に変わります。"
# Block 3's paper households, in circulation order; 小林 reads on the app.
PAPER = ("山本", "佐々木", "井上")
LIVE_MS = 5_000
DESK = {"width": 1024, "height": 900}


def pdf_text(pdf: Path) -> str:
    result = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout


def qr_urls(pdf: Path) -> dict[str, Path]:
    """Every QR on every page, rendered at print resolution as a printer would: url → page."""
    prefix = pdf.with_suffix("")
    subprocess.run(["pdftoppm", "-png", "-r", "150", str(pdf), str(prefix)], check=True, timeout=60)
    urls: dict[str, Path] = {}
    for png in sorted(pdf.parent.glob(f"{prefix.name}-*.png")):
        with Image.open(png) as image:
            for code in zxingcpp.read_barcodes(image):
                if code.format == zxingcpp.BarcodeFormat.QRCode:
                    urls.setdefault(code.text, png)
    return urls


class PaperRoundTests(BrowserTestCase):
    block: Block
    households: list[Household]
    helper: User
    chair: User
    circular: Circular

    def setUp(self) -> None:
        super().setUp()
        community = CommunityFactory.create(name="さくら町内会", slug="sakura-paper")
        block1 = BlockFactory.create(community=community, name="1班", position=1)
        self.block = BlockFactory.create(community=community, name="3班", position=3)
        HouseholdFactory.create(block=block1, label="田中", delivery_mode=DeliveryMode.PAPER)
        self.households = [
            HouseholdFactory.create(
                block=self.block,
                label=label,
                circulation_order=order,
                delivery_mode=DeliveryMode.PAPER,
            )
            for order, label in enumerate(PAPER, start=1)
        ]
        app_household = HouseholdFactory.create(block=self.block, label="小林", circulation_order=9)
        MemberFactory.create(household=app_household, display_name="小林 一郎")
        self.helper = UserFactory.create(first_name="手伝")
        give_role(user=self.helper, community=community, role=RoleKind.HELPER, block=self.block)
        self.chair = UserFactory.create(first_name="会長")
        give_role(user=self.chair, community=community, role=RoleKind.CHAIR)
        mfa_enable(self.chair)
        circular = circular_create(
            community=community, author=self.chair, data=CircularData(title=TITLE, body=BODY)
        )
        self.circular = circular_publish(circular=circular)

    def circular_path(self) -> str:
        return f"/c/{self.circular.community.slug}/circulars/{self.circular.pk}/"

    def assert_fits(self, page: Page, name: str, width: int) -> None:
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(scroll_width, width, f"{name}: the page scrolls sideways")

    # --- the helper's phone --------------------------------------------------------------

    def make_pack(self, page: Page) -> Path:
        """Circular page → 「紙の世帯用に印刷」 → 3班 → the PDF, kept as a download."""
        page.goto(self.url(self.circular_path()))
        page.locator("main").get_by_role("link", name=ja("Print for paper households")).click()
        page.wait_for_url(f"**{self.circular_path()}paper/")
        expect(page.get_by_role("heading", level=1)).to_have_text(ja("Print for paper households"))
        # A helper sees her own block only, and no all-blocks pack.
        expect(page.get_by_role("radio")).to_have_count(1)
        expect(page.get_by_role("radio", name="3班")).to_be_checked()
        make = page.get_by_role("button", name=ja("Make the print pack (PDF)"))
        self.page_check(page, "paper-print")
        self.assert_fits(page, "paper-print", PHONE["width"])
        box = make.bounding_box()
        assert box is not None
        self.assertGreaterEqual(box["height"], 44)

        # The view sends the PDF inline (to print from the phone's viewer); the test
        # relabels that one response as an attachment to keep it.
        def as_attachment(route: Route) -> None:
            if route.request.method != "POST":
                route.continue_()
                return
            response = route.fetch()
            headers = {**response.headers, "content-disposition": "attachment; filename=p.pdf"}
            route.fulfill(response=response, headers=headers)

        page.route("**/paper/", as_attachment)
        with page.expect_download() as download_info:
            make.click()
        download = download_info.value
        self.assertIsNone(download.failure())
        folder = tempfile.TemporaryDirectory(prefix="kairan-e2e-")
        self.addCleanup(folder.cleanup)
        target = Path(folder.name) / "pack.pdf"
        download.save_as(target)
        self.assertTrue(target.read_bytes().startswith(b"%PDF"))
        page.unroute("**/paper/")
        return target

    def toggle(self, page: Page, label: str) -> Any:
        return page.locator("main button.signoff-toggle", has_text=label)

    # --- the chair's desk ----------------------------------------------------------------

    def open_ledger(self) -> Page:
        context = self.new_context(user=self.chair)
        page = context.new_page()
        page.set_viewport_size(DESK)  # type: ignore[arg-type]
        page.goto(self.url(f"{self.circular_path()}ledger/"))
        expect(page.locator("[data-live-ws]")).to_have_attribute(
            "data-live-state", "open", timeout=LIVE_MS
        )
        expect(self.total(page)).to_have_text("0")
        page.evaluate("window.__marker = 1")
        return page

    def paper_status(self, printed: int, collected: int) -> str:
        message = ja("Paper: printed %(printed)s / collected %(collected)s")
        return message % {"printed": printed, "collected": collected}

    def row(self, page: Page, household: Household) -> Any:
        return page.locator(f'li[data-ledger-row="{household.pk}"]')

    def total(self, page: Page) -> Any:
        return page.locator('[data-counts-for="total"] [data-count="confirmed"]')

    def block_total(self, page: Page) -> Any:
        return page.locator(f'[data-counts-for="block-{self.block.pk}"] [data-count="confirmed"]')

    def assert_ledger(self, page: Page, confirmed: list[Household], count: int) -> None:
        for household in self.households:
            status = "confirmed" if household in confirmed else "not_yet"
            expect(self.row(page, household)).to_have_attribute(
                "data-status", status, timeout=LIVE_MS
            )
        expect(self.total(page)).to_have_text(str(count), timeout=LIVE_MS)
        expect(self.block_total(page)).to_have_text(str(count), timeout=LIVE_MS)
        self.assertEqual(page.evaluate("window.__marker"), 1, "the ledger page was reloaded")

    # --- the round -----------------------------------------------------------------------

    def test_helper_prints_block_3_and_taps_the_returned_sheet_into_the_live_ledger(self) -> None:
        phone = self.new_page(user=self.helper)
        pdf = self.make_pack(phone)

        text = pdf_text(pdf)
        self.assertIn(TITLE, text)
        positions = [text.find(label) for label in PAPER]
        self.assertNotIn(-1, positions, text)
        self.assertEqual(positions, sorted(positions), "households out of circulation order")
        self.assertNotIn("田中", text, "another block's household is in block 3's pack")

        signoff_path = f"{self.circular_path()}paper/{self.block.pk}/"
        urls = qr_urls(pdf)
        self.assertIn(self.url(signoff_path), urls)
        # The 回覧表 page as printed, for a look by eye.
        shutil.copyfile(urls[self.url(signoff_path)], SCREENSHOTS / "paper-pack-sheet.png")

        ledger = self.open_ledger()
        # The print is logged: 「紙: 印刷済 3 / 回収 0」 for block 3.
        expect(ledger.locator("main")).to_contain_text(self.paper_status(3, 0))
        self.page_check(ledger, "paper-ledger")
        self.assert_fits(ledger, "paper-ledger", DESK["width"])

        # The helper scans the sheet's QR: the sign-off screen for block 3.
        phone.goto(self.url(signoff_path))
        expect(phone.get_by_role("heading", level=1)).to_have_text(
            ja("Sign-off sheet: %(name)s") % {"name": "3班"}
        )
        toggles = phone.locator("main button.signoff-toggle")
        expect(toggles).to_have_count(len(PAPER))
        for index, label in enumerate(PAPER):
            expect(toggles.nth(index)).to_contain_text(label)
        self.page_check(phone, "paper-signoff")
        self.assert_fits(phone, "paper-signoff", PHONE["width"])
        for index in range(len(PAPER)):
            box = toggles.nth(index).bounding_box()
            assert box is not None
            self.assertGreaterEqual(min(box["width"], box["height"]), 44, box)

        yamamoto, sasaki, _inoue = self.households
        for household in (yamamoto, sasaki):
            self.toggle(phone, household.label).click()
            expect(self.toggle(phone, household.label)).to_have_attribute("aria-pressed", "true")
        self.assert_ledger(ledger, [yamamoto, sasaki], 2)
        self.page_check(phone, "paper-signoff-two")
        self.page_check(ledger, "paper-ledger-two")

        # A mistaken tap is undone; the chair's page follows.
        self.toggle(phone, sasaki.label).click()
        expect(self.toggle(phone, sasaki.label)).to_have_attribute("aria-pressed", "false")
        self.assert_ledger(ledger, [yamamoto], 1)

        # 「全員確認」, after the confirmation prompt, records the rest.
        everyone = phone.get_by_role("button", name=ja("Everyone confirmed"))
        questions: list[str] = []

        def accept(dialog: Any) -> None:
            questions.append(dialog.message)
            dialog.accept()

        phone.once("dialog", accept)
        everyone.click()
        for household in self.households:
            expect(self.toggle(phone, household.label)).to_have_attribute("aria-pressed", "true")
        self.assertEqual(questions, [ja("Record every remaining household as confirmed?")])
        expect(everyone).to_have_count(0)
        self.assert_ledger(ledger, self.households, len(PAPER))
        ledger.reload()
        expect(ledger.locator("main")).to_contain_text(self.paper_status(3, 3))
        self.page_check(phone, "paper-signoff-all")
        self.page_check(ledger, "paper-ledger-all")

        receipts = Receipt.objects.filter(circular=self.circular, household__in=self.households)
        self.assertEqual(receipts.count(), len(PAPER))
        self.assertEqual(
            set(receipts.values_list("method", "recorded_by")),
            {(ReceiptMethod.PAPER, self.helper.pk)},
        )
        # The app household is still the chair's to follow up: not touched by paper.
        kobayashi = Receipt.objects.get(circular=self.circular, household__label="小林")
        self.assertIsNone(kobayashi.confirmed_at)
        self.assert_clean_console()
