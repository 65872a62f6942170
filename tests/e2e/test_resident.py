"""A resident on a phone: home with the live socket, display settings, my data, a new phone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.live_browser import BrowserTestCase, ja, text_re
from tests.factories import BlockFactory, CommunityFactory, HouseholdFactory, MemberFactory

pytestmark = pytest.mark.browser


class ResidentTests(BrowserTestCase):
    def setUp(self) -> None:
        super().setUp()
        community = CommunityFactory.create(name="さくら町内会", slug="sakura-e2e")
        block = BlockFactory.create(community=community, name="1班")
        household = HouseholdFactory.create(block=block, label="山田", address="桜町1-2-3")
        self.member = MemberFactory.create(household=household, display_name="山田 花子")

    def visit_my_pages(self, page: Page, suffix: str) -> None:
        page.goto(self.url("/"))
        expect(page.locator("[data-live-ws]")).to_have_attribute("data-live-state", "open")
        self.page_check(page, f"home-resident{suffix}")

        page.get_by_role("link", name=ja("My data")).click()
        page.wait_for_url(self.url("/me/"))
        expect(page.locator("main")).to_contain_text("山田 花子")
        self.page_check(page, f"me{suffix}")

        page.get_by_role("button", name=ja("Add a phone or family member")).click()
        page.wait_for_url(self.url("/me/add-device/"))
        expect(page.locator("main img.qr")).to_be_visible()
        self.page_check(page, f"add-device{suffix}")

    def test_resident_pages_live_socket_and_display_settings(self) -> None:
        page = self.new_page(user=self.member.user)
        self.visit_my_pages(page, "")
        expect(page.locator("main")).not_to_contain_text(text_re("Live updates: reconnecting"))

        page.goto(self.url("/"))
        html = page.locator("html")
        page.get_by_role("button", name=ja("Larger text")).click()
        expect(html).to_have_class(re.compile(r"\blarge-text\b"))
        page.get_by_role("button", name=ja("High contrast")).click()
        expect(html).to_have_class(re.compile(r"\bhigh-contrast\b"))
        expect(html).to_have_class(re.compile(r"\blarge-text\b"))
        expect(page.get_by_role("button", name=ja("Larger text"))).to_have_attribute(
            "aria-pressed", "true"
        )
        expect(page.get_by_role("button", name=ja("High contrast"))).to_have_attribute(
            "aria-pressed", "true"
        )
        # Both settings follow the person to every page.
        self.visit_my_pages(page, "-large-contrast")
        self.assert_clean_console()
