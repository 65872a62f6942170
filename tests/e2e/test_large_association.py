"""A large association (more households than ``PAGE_ROWS_MAX``) on an officer's phone: the
household list and the answers fold into one line per block, each opening that block."""

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


class LargeAssociationTests(BrowserTestCase):
    community: Community
    blocks: list[Block]
    chair: User
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
        for household in Household.objects.filter(block=self.blocks[2]).order_by("pk")[:3]:
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
