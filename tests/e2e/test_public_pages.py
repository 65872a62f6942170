"""Pages anyone can open before logging in: landing, help, the code form, allauth login."""

from __future__ import annotations

import pytest

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
        self.page_check(page, "account-login")
        self.assert_clean_console()
