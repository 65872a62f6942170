"""Pages anyone can open before logging in: landing, help, the code form, allauth login."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.live_browser import BrowserTestCase, ja

pytestmark = pytest.mark.browser


class PublicPagesTests(BrowserTestCase):
    def test_public_pages_are_accessible(self) -> None:
        page = self.new_page()
        page.goto(self.url("/"))
        self.page_check(page, "landing")

        page.get_by_role("link", name=ja("Help")).first.click()
        page.wait_for_url(self.url("/help/"))
        self.page_check(page, "help")

        page.goto(self.url("/join/"))
        self.page_check(page, "join-code")

        page.goto(self.url("/accounts/login/"))
        self.page_check(page, "account-login", allow_password=True)

        # Logged out, the display settings live in a cookie and still apply everywhere.
        page.goto(self.url("/"))
        html = page.locator("html")
        page.get_by_role("button", name=ja("Larger text")).click()
        expect(html).to_have_class(re.compile(r"\blarge-text\b"))
        page.get_by_role("button", name=ja("High contrast")).click()
        expect(html).to_have_class(re.compile(r"\bhigh-contrast\b"))
        expect(html).to_have_class(re.compile(r"\blarge-text\b"))
        self.page_check(page, "landing-large-contrast")
        page.goto(self.url("/join/"))
        expect(html).to_have_class(re.compile(r"\bhigh-contrast\b"))
        self.page_check(page, "join-code-large-contrast")
        self.assert_clean_console()
