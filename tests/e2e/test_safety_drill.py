"""A 安否確認 drill in real Chromium, step by step: the chair starts it from the phone, a
resident answers 無事 on theirs, the 班長 finds the paper household on the follow-up list and
records 支援が必要 from a phone call, and the chair's per-block view is right after each step.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from circulars.models import Circular, Receipt, ReceiptMethod, SafetyReport, SafetyStatus
from communities.models import Block, DeliveryMode, Household, RoleKind
from tests.e2e.live_browser import BrowserTestCase, ja
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

LIVE_MS = 8_000


class SafetyDrillTests(BrowserTestCase):
    block1: Block
    block2: Block
    yamada: Household  # app, answers on the phone
    tanaka: Household  # paper, the 班長 calls
    suzuki: Household  # app, never answers during the test
    sato: Household  # block 2
    chair: User
    leader: User
    resident: User

    def setUp(self) -> None:
        super().setUp()
        community = CommunityFactory.create(name="さくら町内会", slug="sakura-drill")
        self.block1 = BlockFactory.create(community=community, name="1班", position=1)
        self.block2 = BlockFactory.create(community=community, name="2班", position=2)
        self.yamada = HouseholdFactory.create(block=self.block1, label="山田", circulation_order=1)
        self.tanaka = HouseholdFactory.create(
            block=self.block1,
            label="田中",
            circulation_order=2,
            delivery_mode=DeliveryMode.PAPER,
            phone="03-1111-2222",
            helper_note="一人暮らし",
        )
        self.suzuki = HouseholdFactory.create(block=self.block1, label="鈴木", circulation_order=3)
        self.sato = HouseholdFactory.create(block=self.block2, label="佐藤", circulation_order=1)
        self.resident = MemberFactory.create(household=self.yamada, display_name="山田 花子").user
        MemberFactory.create(household=self.suzuki)
        MemberFactory.create(household=self.sato)
        self.chair = UserFactory.create(first_name="会長")
        give_role(user=self.chair, community=community, role=RoleKind.CHAIR)
        mfa_enable(self.chair)
        self.leader = UserFactory.create(first_name="班長の森")
        give_role(
            user=self.leader, community=community, role=RoleKind.BLOCK_LEADER, block=self.block1
        )

    # --- the chair's per-block view -------------------------------------------------------

    def block_rows(self, board: Page, block: Block) -> dict[str, str]:
        """household label → data-status, as the board's block section shows them."""
        section = board.locator(f"section:has(#safety-block-{block.pk})")
        rows = section.locator("[data-safety-row]")
        return {
            rows.nth(index).locator("strong").first.inner_text(): str(
                rows.nth(index).get_attribute("data-status")
            )
            for index in range(rows.count())
        }

    def expect_block(self, board: Page, block: Block, statuses: dict[str, str]) -> None:
        for household, status in statuses.items():
            row = board.locator(
                f"section:has(#safety-block-{block.pk}) [data-safety-row]",
                has=board.locator("strong", has_text=household),
            )
            expect(row).to_have_attribute("data-status", status, timeout=LIVE_MS)
        self.assertEqual(self.block_rows(board, block), statuses)

    # --- the journey ----------------------------------------------------------------------

    def test_drill_from_start_to_the_block_leaders_phone_call(self) -> None:
        slug = self.block1.community.slug

        # 1. The chair starts a drill on the phone: choose 訓練, check, send.
        board = self.new_page(user=self.chair)
        board.goto(self.url(f"/c/{slug}/circulars/"))
        board.get_by_role("link", name=ja("Start a safety check")).click()
        board.get_by_label(ja("Drill (practice)")).check()
        board.get_by_role("button", name=ja("Check before sending")).click()
        board.get_by_role("button", name=ja("Send the drill")).click()
        expect(board.locator("#board-body")).to_be_visible()
        check = Circular.objects.get()
        self.assertTrue(check.drill)
        self.assertIn("訓練", check.title)
        expect(board.locator(".drill-banner")).to_be_visible()
        expect(board.locator("[data-live-ws]")).to_have_attribute(
            "data-live-state", "open", timeout=LIVE_MS
        )
        board.evaluate("window.__marker = 1")
        self.expect_block(
            board, self.block1, {"山田": "unknown", "田中": "unknown", "鈴木": "unknown"}
        )
        self.expect_block(board, self.block2, {"佐藤": "unknown"})
        self.page_check(board, "drill-board-started")

        # 2. 山田 answers 無事 on their phone.
        phone = self.new_page(user=self.resident)
        phone.goto(self.url(f"/c/{slug}/circulars/{check.pk}/safety/answer/"))
        expect(phone.locator(".drill")).to_be_visible()
        phone.get_by_role("button", name=ja("Safe"), exact=True).click()
        expect(phone.locator("[data-status]")).to_contain_text("✓", timeout=LIVE_MS)
        # The board follows without reloading: the block shows 山田 safe, the rest unknown.
        self.expect_block(
            board, self.block1, {"山田": "safe", "田中": "unknown", "鈴木": "unknown"}
        )
        self.expect_block(board, self.block2, {"佐藤": "unknown"})
        self.assertEqual(board.evaluate("window.__marker"), 1, "the board was reloaded")
        self.page_check(board, "drill-board-resident-safe")

        # 3. The 班長 opens the follow-up list: the paper household comes first, at once.
        leader = self.new_page(user=self.leader)
        leader.goto(self.url(f"/c/{slug}/followup/"))
        card = leader.locator(".followup-safety")
        expect(card).to_contain_text(check.title)
        expect(card.locator(".record-drill")).to_be_visible()
        names = card.locator(".followup-safety-list a").all_inner_texts()
        self.assertEqual(names, ["田中", "鈴木"])  # paper first; 山田 answered
        self.assertNotIn("佐藤", card.inner_text())  # another block
        self.page_check(leader, "drill-followup")
        card.get_by_role("link", name=ja("Record safety for %(name)s") % {"name": "1班"}).click()

        # 4. On the recording screen: unknown households first, 山田 (safe) last.
        expect(leader.locator("h1")).to_contain_text("1班")
        rows = leader.locator(".record-list > li")
        self.assertEqual(
            [rows.nth(i).locator(".record-name").inner_text().split()[0] for i in range(3)],
            ["田中", "鈴木", "山田"],
        )
        tanaka = leader.locator(f"#household-{self.tanaka.pk}")
        expect(tanaka.locator(".record-tel")).to_have_attribute("href", "tel:03-1111-2222")
        self.page_check(leader, "drill-record-before")

        # The 班長 calls 田中: chooses 電話 once (remembered), writes a note, taps 支援が必要.
        leader.get_by_role("button", name=ja("Phone call")).click()
        expect(leader.get_by_role("button", name="✓ " + ja("Phone call"))).to_have_attribute(
            "aria-pressed", "true"
        )
        leader.evaluate("window.__marker = 1")
        tanaka = leader.locator(f"#household-{self.tanaka.pk}")
        tanaka.locator("summary").first.click()
        tanaka.get_by_label(ja("Note (write it, then tap a button below)")).fill("薬が切れそう")
        tanaka.locator("button[value=help]").click()
        tanaka = leader.locator(f"#household-{self.tanaka.pk}")
        expect(tanaka.locator(".record-saved")).to_be_visible(timeout=LIVE_MS)
        expect(tanaka.locator(".record-status")).to_contain_text(ja("Needs help"))
        expect(tanaka).to_contain_text("薬が切れそう")
        expect(tanaka).to_contain_text(ja("Phone call"))
        expect(tanaka).to_contain_text("班長の森")
        expect(tanaka.locator("button[value=help]")).to_have_attribute("aria-pressed", "true")
        expect(leader.locator("#record-counts strong")).to_have_text(["1", "1", "1"])
        self.assertEqual(leader.evaluate("window.__marker"), 1, "the screen was reloaded")
        # The row stays where it was while the 班長 works down the list.
        self.assertEqual(
            leader.locator(".record-list > li").first.get_attribute("id"),
            f"household-{self.tanaka.pk}",
        )
        self.page_check(leader, "drill-record-after")
        report = SafetyReport.objects.get(receipt__household=self.tanaka)
        self.assertEqual(
            (report.status, report.method, report.note, report.recorded_by),
            (SafetyStatus.HELP, ReceiptMethod.PROXY_PHONE, "薬が切れそう", self.leader),
        )
        receipt = Receipt.objects.get(circular=check, household=self.tanaka)
        self.assertEqual(receipt.method, ReceiptMethod.PROXY_PHONE)

        # 5. The chair's board: 田中 needs help (first on the needs-help list), live.
        self.expect_block(board, self.block1, {"田中": "help", "鈴木": "unknown", "山田": "safe"})
        self.expect_block(board, self.block2, {"佐藤": "unknown"})
        expect(board.locator(".needs-help")).to_contain_text("田中")
        expect(board.locator(".needs-help")).to_contain_text("薬が切れそう")
        self.assertEqual(board.evaluate("window.__marker"), 1, "the board was reloaded")
        self.page_check(board, "drill-board-leader-help")

        # 6. From the ledger the chair reaches each block's recording screen too.
        board.goto(self.url(f"/c/{slug}/circulars/{check.pk}/ledger/"))
        link = board.get_by_role("link", name=ja("Record safety") + " 2班")
        expect(link).to_have_attribute(
            "href", f"/c/{slug}/circulars/{check.pk}/safety/{self.block2.pk}/"
        )
        self.page_check(board, "drill-ledger")
        self.maxDiff = None
        self.assert_clean_console()
