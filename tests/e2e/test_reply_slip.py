"""Returned reply slips: the helper types a household's slip in on the sign-off screen of
her phone, and the chair's answers page (回答の集計) counts it without reloading."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Locator, Page, expect

from circulars import questions
from circulars.models import Answer, Circular, QuestionKind, Receipt, ReceiptMethod
from circulars.questions import QuestionData
from circulars.services import (
    CircularData,
    circular_create,
    circular_publish,
    receipts_sync_for_household,
)
from communities.models import Block, DeliveryMode, Household, RoleKind
from tests.e2e.live_browser import PHONE, BrowserTestCase, ja
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

LIVE_MS = 5_000
DESK = {"width": 1024, "height": 900}


class ReplySlipTests(BrowserTestCase):
    block: Block
    households: list[Household]
    helper: User
    chair: User
    circular: Circular

    def setUp(self) -> None:
        super().setUp()
        community = CommunityFactory.create(name="さくら町内会", slug="sakura-slips")
        self.block = BlockFactory.create(community=community, name="3班", position=3)
        self.households = [
            HouseholdFactory.create(
                block=self.block,
                label=label,
                circulation_order=order,
                delivery_mode=DeliveryMode.PAPER,
            )
            for order, label in enumerate(("山本", "佐々木"), start=1)
        ]
        self.helper = UserFactory.create(first_name="手伝")
        give_role(user=self.helper, community=community, role=RoleKind.HELPER, block=self.block)
        self.chair = UserFactory.create(first_name="会長")
        give_role(user=self.chair, community=community, role=RoleKind.CHAIR)
        mfa_enable(self.chair)
        circular = circular_create(
            community=community,
            author=self.chair,
            data=CircularData(
                title="清掃活動のお知らせ",
                body="公園の清掃をします。",
                due_date=timezone.localdate() + timedelta(days=5),
            ),
        )
        questions.question_add(
            circular=circular,
            data=QuestionData(kind=QuestionKind.ATTENDANCE, prompt="清掃活動に参加しますか"),
        )
        questions.question_add(
            circular=circular,
            data=QuestionData(
                kind=QuestionKind.SINGLE, prompt="集合場所", choices=["公民館", "公園の入口"]
            ),
        )
        self.circular = circular_publish(circular=circular)

    def path(self, tail: str = "") -> str:
        return f"/c/{self.circular.community.slug}/circulars/{self.circular.pk}/{tail}"

    def people_attending(self, page: Page) -> Locator:
        # The attendance card's "people" figure (the second of its three stats).
        return page.locator("#answers-body .stat-grid .stat strong").nth(1)

    def test_helper_enters_a_returned_slip_and_the_chairs_totals_follow(self) -> None:
        desk = self.new_context(user=self.chair).new_page()
        desk.set_viewport_size(DESK)  # type: ignore[arg-type]
        desk.goto(self.url(self.path("answers/summary/")))
        expect(desk.locator("[data-live-ws]")).to_have_attribute(
            "data-live-state", "open", timeout=LIVE_MS
        )
        expect(self.people_attending(desk)).to_have_text("0")
        desk.evaluate("window.__marker = 1")

        phone = self.new_page(user=self.helper)
        phone.goto(self.url(self.path(f"paper/{self.block.pk}/")))
        self.page_check(phone, "reply-slip-signoff")
        yamamoto = self.households[0]
        phone.get_by_role("link", name=f"{ja('Enter the answers')} {yamamoto.label}").click()
        expect(phone.get_by_role("heading", level=1)).to_contain_text(yamamoto.label)
        attending = phone.get_by_role("radio", name=ja("Attending"))
        box = phone.locator("label", has=attending).bounding_box()
        assert box is not None
        self.assertGreaterEqual(box["height"], 48)
        attending.check()
        phone.get_by_label(ja("Number of people attending (if attending)")).fill("2")
        phone.get_by_role("radio", name="公民館").check()
        self.page_check(phone, "reply-slip-entry")
        scroll_width = phone.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(scroll_width, PHONE["width"], "the entry form scrolls sideways")
        phone.get_by_role("button", name=ja("Record the answers")).click()

        # Back on the sign-off screen: the row is confirmed (paper) and shows the answers.
        phone.wait_for_url(f"**{self.path(f'paper/{self.block.pk}/')}")
        toggle = phone.locator("main button.signoff-toggle", has_text=yamamoto.label)
        expect(toggle).to_have_attribute("aria-pressed", "true")
        expect(phone.locator("main")).to_contain_text(ja("Answered"))
        self.page_check(phone, "reply-slip-signoff-after")

        # The chair's page counted it live, without a reload.
        expect(self.people_attending(desk)).to_have_text("2", timeout=LIVE_MS)
        expect(desk.locator("#answers-body")).to_contain_text(yamamoto.label)
        self.assertEqual(desk.evaluate("window.__marker"), 1, "the answers page was reloaded")
        self.page_check(desk, "reply-slip-answers")
        receipt = Receipt.objects.get(circular=self.circular, household=yamamoto)
        self.assertEqual(receipt.method, ReceiptMethod.PAPER)
        self.assertEqual(
            set(Answer.objects.filter(receipt=receipt).values_list("method", flat=True)),
            {ReceiptMethod.PAPER},
        )

        # The chair takes 佐々木's answer by phone from the same page.
        sasaki = self.households[1]
        desk.get_by_role("link", name=f"{ja('Enter')} {sasaki.label}").click()
        desk.get_by_role("radio", name=ja("Phone call")).check()
        desk.get_by_role("radio", name=ja("Not attending")).check()
        self.page_check(desk, "reply-slip-proxy")
        desk.get_by_role("button", name=ja("Record the answers")).click()
        desk.wait_for_url(f"**{self.path('answers/summary/')}")
        expect(desk.locator("#answers-body")).to_contain_text(ja("Phone call"))

        # The ledger row offers the same screen, and comes back to the ledger.
        desk.goto(self.url(self.path("ledger/")))
        link = desk.get_by_role("link", name=f"{ja('Enter answers for them')} {sasaki.label}")
        expect(link).to_be_visible()
        self.page_check(desk, "reply-slip-ledger")

    def test_the_helper_sees_a_card_per_household_on_her_phone(self) -> None:
        phone = self.new_page(user=self.helper)
        phone.goto(self.url(self.path("answers/summary/")))
        rows = phone.locator("main tbody tr")
        expect(rows).to_have_count(len(self.households))
        # No block chosen: each question's totals are out, as on a desk.
        expect(self.people_attending(phone)).to_be_visible()
        self.page_check(phone, "reply-slip-answers-phone")
        scroll_width = phone.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(scroll_width, PHONE["width"], "the answers scroll sideways")
        # The household's name heads its card, above its block; its button fits the screen.
        card = rows.first
        name = card.get_by_role("rowheader").bounding_box()
        block = card.locator("td", has_text=self.block.name).bounding_box()
        assert name is not None and block is not None
        self.assertLess(name["y"], block["y"], "the block comes before the household")
        yamamoto = self.households[0].label
        button = card.get_by_role("link", name=f"{ja('Enter')} {yamamoto}").bounding_box()
        assert button is not None
        self.assertLessEqual(button["x"] + button["width"], PHONE["width"])
        self.assertGreaterEqual(button["height"], 48)

    def test_resident_answers_on_the_phone_with_the_same_fields(self) -> None:
        household = HouseholdFactory.create(block=self.block, label="小林", circulation_order=9)
        resident = MemberFactory.create(household=household, display_name="小林 一郎").user
        receipts_sync_for_household(household=household)  # joined after publishing
        phone = self.new_page(user=resident)
        phone.goto(self.url(self.path()))
        expect(phone.get_by_role("heading", level=2, name=ja("Please answer"))).to_be_visible()
        phone.get_by_role("radio", name=ja("Attending")).check()
        phone.get_by_label(ja("Number of people attending (if attending)")).fill("3")
        phone.get_by_role("radio", name="公園の入口").check()
        self.page_check(phone, "reply-slip-resident-form")
        scroll_width = phone.evaluate("document.documentElement.scrollWidth")
        self.assertLessEqual(scroll_width, PHONE["width"], "the form scrolls sideways")
        phone.get_by_role("button", name=ja("Answer and confirm")).click()
        expect(phone.locator(".confirmed-badge")).to_be_visible()
        receipt = Receipt.objects.get(circular=self.circular, household=household)
        self.assertEqual(receipt.method, ReceiptMethod.APP)
        self.assertEqual(
            sorted(Answer.objects.filter(receipt=receipt).values_list("method", flat=True)),
            [ReceiptMethod.APP, ReceiptMethod.APP],
        )
