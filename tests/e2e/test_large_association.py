"""A large association (more households than ``PAGE_ROWS_MAX``) on an officer's phone: the
household list and the answers fold into one line per block, each opening that block; a
block's own page starts with its households and its answers are cards, not a wide table."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Locator, Page, expect

from circulars import questions
from circulars.models import Circular, QuestionKind, ReceiptMethod
from circulars.questions import QuestionData
from circulars.services import CircularData, circular_create, circular_publish
from communities.models import Block, Community, DeliveryMode, Household, RoleKind
from communities.selectors import PAGE_ROWS_MAX
from tests.e2e.live_browser import PHONE, BrowserTestCase, ja
from tests.factories import (
    BlockFactory,
    CommunityFactory,
    MemberFactory,
    UserFactory,
    give_role,
    mfa_enable,
)

pytestmark = pytest.mark.browser

BLOCKS = 8
PER_BLOCK = PAGE_ROWS_MAX // BLOCKS + 5  # just over the limit in all
MIN_TARGET = 44
ANSWERED = 3  # households of the third block that answered (and so confirmed)
DESKTOP = {"width": 1280, "height": 900}
# A block's first household must show on a phone's first screen: it was at 1,387 px (the
# ledger) and 1,516 px (the answers), below the title, the filters and the totals.
FIRST_ROW_TOP_MAX = 700


class LargeAssociationTests(BrowserTestCase):
    community: Community
    blocks: list[Block]
    chair: User
    leader: User
    circular: Circular

    def setUp(self) -> None:
        super().setUp()
        self.community = CommunityFactory.create(name="さくら台町内会", slug="sakura-large")
        # One long name: the block's line must wrap on a phone, not push the page sideways.
        names = [f"{n}班" for n in range(1, BLOCKS)] + ["東町三丁目 第12班（旧さくら台団地）"]
        self.blocks = [
            BlockFactory.create(community=self.community, name=name, position=n)
            for n, name in enumerate(names, start=1)
        ]
        Household.objects.bulk_create(
            [
                Household(
                    community=self.community,
                    block=block,
                    label=f"{block.name}-{n:02d}",
                    circulation_order=n,
                    delivery_mode=DeliveryMode.PAPER if n % 3 == 0 else DeliveryMode.APP,
                )
                for block in self.blocks
                for n in range(1, PER_BLOCK + 1)
            ]
        )
        # Some households of the first blocks have a phone; the rest get paper.
        for household in Household.objects.filter(block__in=self.blocks[:2])[::2]:
            MemberFactory.create(household=household)
        self.chair = UserFactory.create(first_name="会長")
        give_role(user=self.chair, community=self.community, role=RoleKind.CHAIR)
        mfa_enable(self.chair)
        self.leader = UserFactory.create(first_name="班長")
        give_role(
            user=self.leader,
            community=self.community,
            role=RoleKind.BLOCK_LEADER,
            block=self.blocks[2],
        )
        circular = circular_create(
            community=self.community,
            author=self.chair,
            data=CircularData(title="夏祭りのお知らせ", body="8月に夏祭りをします。"),
        )
        single = questions.question_add(
            circular=circular,
            data=QuestionData(
                kind=QuestionKind.SINGLE, prompt="お手伝いできますか", choices=["はい", "いいえ"]
            ),
        )
        questions.question_add(
            circular=circular,
            data=QuestionData(kind=QuestionKind.ATTENDANCE, prompt="夏祭りに参加しますか"),
        )
        self.circular = circular_publish(circular=circular)
        for household in Household.objects.filter(block=self.blocks[2]).order_by("pk")[:ANSWERED]:
            self.answer(household, single.pk)

    def answer(self, household: Household, question_id: int) -> None:
        questions.answers_submit(
            circular=self.circular,
            household=household,
            values={question_id: "0"},
            member=None,
            recorded_by=self.chair,
            method=ReceiptMethod.PROXY_PHONE,
        )

    def assert_fits_phone(self, page: Page, name: str) -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(width, PHONE["width"], f"{name}: the page scrolls sideways")

    def assert_tappable(self, control: Locator, what: str) -> None:
        control.scroll_into_view_if_needed()
        box = control.bounding_box()
        assert box is not None, what
        self.assertGreaterEqual(box["height"], MIN_TARGET, f"{what}: too low ({box})")
        self.assertGreaterEqual(box["width"], MIN_TARGET, f"{what}: too narrow ({box})")
        self.assertLessEqual(box["x"] + box["width"], PHONE["width"], what)

    def test_household_list_folds_by_block(self) -> None:
        page = self.new_page(user=self.chair)
        page.goto(self.url(f"/c/{self.community.slug}/households/"))
        main = page.locator("main")
        links = main.get_by_role("link", name=ja("See this block's households"))
        expect(links).to_have_count(BLOCKS)
        expect(main).not_to_contain_text(f"{self.blocks[0].name}-01")
        self.page_check(page, "large-households-folded")
        self.assert_fits_phone(page, "large-households-folded")
        self.assert_tappable(links.last, "the last block's link")

        main.get_by_role("link", name=f"{ja("See this block's households")} 3班").click()
        page.wait_for_url(f"**/households/?block={self.blocks[2].pk}")
        expect(main.locator("ol li")).to_have_count(PER_BLOCK)
        expect(main).to_contain_text("3班-01")
        expect(main).not_to_contain_text("2班-01")
        self.page_check(page, "large-households-block")
        self.assert_fits_phone(page, "large-households-block")
        main.get_by_role("link", name=ja("Back to all blocks")).click()
        expect(links).to_have_count(BLOCKS)
        self.assert_clean_console()

    def test_answers_fold_by_block_and_a_block_stays_chosen_when_it_refreshes(self) -> None:
        page = self.new_page(user=self.chair)
        summary = f"/c/{self.community.slug}/circulars/{self.circular.pk}/answers/summary/"
        page.goto(self.url(summary))
        main = page.locator("main")
        links = main.get_by_role("link", name=ja("See this block's answers"))
        expect(links).to_have_count(BLOCKS)
        expect(main.locator("table")).to_have_count(0)
        self.page_check(page, "large-answers-folded")
        self.assert_fits_phone(page, "large-answers-folded")
        self.assert_tappable(links.first, "the first block's link")

        main.get_by_role("link", name=f"{ja("See this block's answers")} 3班").click()
        page.wait_for_url(f"**/answers/summary/?block={self.blocks[2].pk}")
        rows = main.locator("tbody tr")
        expect(rows).to_have_count(PER_BLOCK)
        self.page_check(page, "large-answers-block")
        self.assert_fits_phone(page, "large-answers-block")

        # A new answer in the block arrives: the refresh keeps the block's rows.
        late = Household.objects.filter(block=self.blocks[2]).order_by("pk")[5]
        self.answer(late, self.circular.questions.order_by("position")[0].pk)
        with page.expect_response(lambda response: "answers/summary/?block=" in response.url):
            page.evaluate("document.body.dispatchEvent(new Event('kairan:answers-changed'))")
        expect(rows).to_have_count(PER_BLOCK)
        expect(main).to_contain_text(
            ja("Answered %(answered)s / %(total)s households") % {"answered": 4, "total": PER_BLOCK}
        )
        self.assert_clean_console()

    def top_of(self, element: Locator) -> float:
        """Where ``element`` starts, in CSS pixels from the top of the page."""
        top: float = element.evaluate("e => e.getBoundingClientRect().top + window.scrollY")
        return top

    def ax_roles(self, page: Page) -> list[str]:
        """The roles in Chromium's own accessibility tree (Playwright's role queries compute
        roles from the markup, so they would not see CSS dropping a table's semantics)."""
        session = page.context.new_cdp_session(page)
        nodes = session.send("Accessibility.getFullAXTree")["nodes"]
        session.detach()
        return [node["role"]["value"] for node in nodes if not node.get("ignored")]

    def open_block_on_phone(self, path: str, rows: str, name: str) -> tuple[Page, Locator]:
        """The block leader opens their block's page: the households (``rows``) come first."""
        page = self.new_page(user=self.leader)
        page.goto(self.url(f"{path}?block={self.blocks[2].pk}"))
        found = page.locator("main").locator(rows)
        expect(found).to_have_count(PER_BLOCK)
        self.page_check(page, name)
        self.assert_fits_phone(page, name)
        top = self.top_of(found.first)
        print(f"{name}: the first household starts at {top:.0f} px")
        self.assertLessEqual(top, FIRST_ROW_TOP_MAX, "the block's households start too far down")
        return page, found

    def test_a_block_leader_sees_the_blocks_households_first_on_a_phone(self) -> None:
        block = self.blocks[2]
        ledger = f"/c/{self.community.slug}/circulars/{self.circular.pk}/ledger/"
        page, rows = self.open_block_on_phone(
            ledger, "[data-ledger-row]", "large-ledger-block-phone"
        )
        main = page.locator("main")

        # The filters are one tap away, and say which block is shown while folded.
        status = main.locator("#f-status")
        summary = main.locator("summary", has_text=ja("Filter households"))
        expect(summary).to_contain_text(block.name)
        expect(status).to_be_hidden()
        self.assert_tappable(summary, "the filters' summary")
        summary.click()
        status.select_option("not_yet")
        main.locator(".filters").get_by_role("button", name=ja("Show")).click()
        page.wait_for_url("**status=not_yet**")
        # A status filter is on: the form stays open, showing it.
        expect(status).to_be_visible()
        expect(status).to_have_value("not_yet")
        expect(main.locator("#f-block")).to_have_value(str(block.pk))
        not_yet = PER_BLOCK - ANSWERED  # answering confirmed the first three
        expect(rows).to_have_count(not_yet)

        # A live resync still re-fetches the ledger's body with the filters, and keeps it.
        with page.expect_response(lambda response: "status=not_yet" in response.url):
            page.evaluate("document.body.dispatchEvent(new Event('kairan:resync'))")
        expect(rows).to_have_count(not_yet)
        expect(status).to_be_visible()
        self.page_check(page, "large-ledger-block-filtered-phone")

        # On a desk the filters are always out, without the summary.
        page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
        page.goto(self.url(f"{ledger}?block={block.pk}"))
        expect(status).to_be_visible()
        expect(summary).to_be_hidden()
        self.assertGreaterEqual(self.ax_roles(page).count("combobox"), 3, "filters not exposed")
        self.page_check(page, "large-ledger-block-desktop")
        self.assert_clean_console()

    def test_a_blocks_answers_are_cards_on_a_phone_and_a_table_on_a_desk(self) -> None:
        block = self.blocks[2]
        summary = f"/c/{self.community.slug}/circulars/{self.circular.pk}/answers/summary/"
        page, rows = self.open_block_on_phone(summary, "tbody tr", "large-answers-block-phone")
        main = page.locator("main")
        first = rows.first

        # The household's button is on screen and full width, without scrolling sideways.
        change = first.get_by_role("link", name=f"{ja('Change')} {block.name}-01")
        box = change.bounding_box()
        assert box is not None
        right = box["x"] + box["width"]
        print(f"large-answers-block-phone: the 変更 button ends at {right:.0f} px")
        self.assertLessEqual(right, PHONE["width"], "the button is off-screen")
        self.assertGreaterEqual(box["width"], PHONE["width"] * 0.75, "the button is not full width")
        self.assertGreaterEqual(box["height"], MIN_TARGET)
        wrap = main.locator(".table-wrap")
        self.assertFalse(
            wrap.evaluate("e => e.scrollWidth > e.clientWidth"), "the answers scroll sideways"
        )
        # Each answer is shown with its question; the household's name comes first.
        first_box = first.bounding_box()
        name_box = first.get_by_role("rowheader").bounding_box()
        assert first_box is not None and name_box is not None
        self.assertLess(name_box["y"] - first_box["y"], MIN_TARGET, "the name is not first")
        labels = first.locator("td").evaluate_all(
            "cells => cells.map(cell => getComputedStyle(cell, '::before').content)"
        )
        self.assertIn("お手伝いできますか", labels[0])
        self.assertIn("夏祭りに参加しますか", labels[1])
        # Chromium still tells a screen reader it is a table with headers.
        roles = self.ax_roles(page)
        self.assertEqual(roles.count("table"), 1)
        self.assertEqual(roles.count("rowheader"), PER_BLOCK)
        self.assertGreaterEqual(roles.count("columnheader"), 3)
        self.assertGreaterEqual(roles.count("cell"), PER_BLOCK * 3)

        # Each question's totals are one tap away, and stay out when a new answer arrives.
        question_totals = main.locator("summary", has_text=ja("Totals for each question"))
        people = main.get_by_text(ja("People attending"))
        expect(people).to_be_hidden()
        self.assert_tappable(question_totals, "the question totals' summary")
        question_totals.click()
        expect(people).to_be_visible()
        with page.expect_response(lambda response: "answers/summary/?block=" in response.url):
            page.evaluate("document.body.dispatchEvent(new Event('kairan:answers-changed'))")
        expect(people).to_be_visible()

        first.get_by_role("link", name=f"{ja('Change')} {block.name}-01").click()
        page.wait_for_url(f"**/answers/{first_household(block).pk}/**")

        # On a desk the answers stay a table, its headers showing.
        page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
        page.goto(self.url(f"{summary}?block={block.pk}"))
        header = main.locator("thead th", has_text=ja("Household"))
        expect(header).to_be_visible()
        expect(first).to_have_css("display", "table-row")
        self.page_check(page, "large-answers-block-desktop")
        self.assert_clean_console()


def first_household(block: Block) -> Household:
    return Household.objects.filter(block=block).order_by("circulation_order", "pk")[0]
