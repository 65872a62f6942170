"""The browser suite's base class: a live Daphne server, system Chromium and page checks.

Each test class gets one server process and one browser; each test opens its own contexts
(one per person or phone). Every page a test looks at goes through ``page_check``: a
screenshot for the lead, axe-core for accessibility, and no password field anywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

from axe_playwright_python.sync_playwright import Axe
from channels.testing import ChannelsLiveServerTestCase
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client
from django.utils import translation
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    sync_playwright,
)

from communities import services

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 812}
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
AXE_REPORTS = ARTIFACTS / "axe"
BLOCKING_IMPACTS = {"serious", "critical"}
# A page must render well before axe runs; nothing here should take this long.
TIMEOUT_MS = 10_000

_axe = Axe()


def ja(message: str) -> str:
    """The Japanese UI text for a msgid, as the server renders it (English if untranslated)."""
    with translation.override("ja"):
        return translation.gettext(message)


def text_re(message: str) -> re.Pattern[str]:
    """Match a UI string whether or not the template wrapped it across lines."""
    words = [re.escape(word) for word in ja(message).split()]
    return re.compile(r"\s+".join(words))


def _close_database_pools() -> None:
    """Close connections (and psycopg pools) so the forked server opens its own."""
    for connection in connections.all():
        connection.close()
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()


class BrowserTestCase(ChannelsLiveServerTestCase):
    host = "127.0.0.1"

    playwright: ClassVar[Playwright]
    browser: ClassVar[Browser]

    @classmethod
    def setUpClass(cls) -> None:
        _close_database_pools()
        super().setUpClass()
        try:
            cls.playwright = sync_playwright().start()
            cls.browser = cls.playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
        except BaseException:
            super().tearDownClass()
            raise
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        AXE_REPORTS.mkdir(parents=True, exist_ok=True)

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.browser.close()
            cls.playwright.stop()
        finally:
            super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.csp_reports: list[str] = []
        self.page_errors: list[str] = []

    # --- contexts and logging in ---------------------------------------------------------

    def new_context(self, *, user: User | None = None, bypass_csp: bool = False) -> BrowserContext:
        """A phone-sized context in Japanese; logged in as ``user`` if given."""
        context = self.browser.new_context(
            viewport=PHONE,  # type: ignore[arg-type]
            locale="ja-JP",
            accept_downloads=True,
            bypass_csp=bypass_csp,
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", self._watch)
        self.addCleanup(context.close)
        if user is not None:
            client = Client()
            client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME]
            context.add_cookies(
                [{"name": cookie.key, "value": cookie.value, "url": self.live_server_url}]
            )
        return context

    def new_page(self, *, user: User | None = None) -> Page:
        return self.new_context(user=user).new_page()

    def _watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                self.csp_reports.append(f"{page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.page_errors.append(f"{page.url}: {error}"))

    def login_with_link(self, page: Page, user: User) -> None:
        """Log in the way an emailed one-time link does: open it, press 「ログイン」."""
        token = services.login_link_issue(user=user)
        page.goto(f"{self.live_server_url}/login/link/{token}/")
        self.page_check(page, "login-link")
        page.locator("main").get_by_role("button", name=ja("Log in")).click()
        page.wait_for_url(f"{self.live_server_url}/")

    def url(self, path: str) -> str:
        return f"{self.live_server_url}{path}"

    # --- checks --------------------------------------------------------------------------

    def page_check(self, page: Page, name: str, *, allow_password: bool = False) -> None:
        """Screenshot, accessibility and password checks for the page as it is now.

        Only the officers' allauth login may offer a password; no resident page does.
        """
        page.wait_for_load_state("load")
        if not allow_password:
            self.assertEqual(
                page.locator("input[type=password]").count(), 0, f"{name}: a password field"
            )
        page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
        self.axe_check(page, name)

    def axe_check(self, page: Page, name: str) -> None:
        """Run axe-core: serious or critical violations fail the test; others are printed."""
        try:
            results = _axe.run(page, options={"resultTypes": ["violations", "incomplete"]})
        except Error as error:  # pragma: no cover - only if a CSP ever blocks injection
            self.fail(f"{name}: axe-core could not run: {error}")
        violations: list[dict[str, Any]] = results.response["violations"]
        incomplete: list[dict[str, Any]] = results.response["incomplete"]
        (AXE_REPORTS / f"{name}.json").write_text(
            json.dumps(
                {"violations": violations, "incomplete": incomplete}, ensure_ascii=False, indent=2
            ),
            encoding="utf-8",
        )
        blocking = []
        for violation in violations:
            targets = [str(node.get("target")) for node in violation["nodes"]][:5]
            line = (
                f"axe {name}: {violation['impact']} {violation['id']}: "
                f"{violation['help']} {targets}"
            )
            if violation["impact"] in BLOCKING_IMPACTS:
                blocking.append(line)
            else:
                print(line)
        # axe files text in the same colour as its background under "needs review" (it
        # might be deliberately hidden); on these pages it is always a bug.
        for item in incomplete:
            for node in item["nodes"] if item["id"] == "color-contrast" else []:
                messages = [check.get("message", "") for check in node.get("any", [])]
                if any("1:1 contrast" in message for message in messages):
                    blocking.append(f"axe {name}: invisible text {node.get('target')}")
        self.assertEqual(blocking, [], f"axe found serious problems on {name}")

    def assert_clean_console(self) -> None:
        self.assertEqual(self.csp_reports, [], "pages logged Content Security Policy violations")
        self.assertEqual(self.page_errors, [], "pages raised JavaScript errors")
