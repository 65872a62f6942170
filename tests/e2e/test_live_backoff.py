"""How a live page comes back after its socket drops: kairan.js in a real browser.

The server side of the socket is Playwright's (``route_web_socket``), so the test decides
when a socket opens and drops, and the page's clock is Playwright's too, so 30 s of being
open take no time. The page itself, its kairan.js and its session are real. Each
``new WebSocket`` the page makes is stamped with the page's own (fake) time.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute

from tests.e2e.live_browser import BrowserTestCase
from tests.factories import BlockFactory, CommunityFactory, HouseholdFactory, MemberFactory

pytestmark = pytest.mark.browser

STAMP_ATTEMPTS = """
(() => {
  const Inner = window.WebSocket;
  window.__attempts = [];
  window.WebSocket = function (url, protocols) {
    window.__attempts.push(Date.now());
    return protocols === undefined ? new Inner(url) : new Inner(url, protocols);
  };
  window.WebSocket.prototype = Inner.prototype;
})();
"""
FIRST_CAP_MS = 2_000  # the first retry after a socket that was fine: random, within 2 s
STABLE_MS = 30_000  # open this long, a socket has proved itself


class ReconnectBackoffTests(BrowserTestCase):
    def setUp(self) -> None:
        super().setUp()
        community = CommunityFactory.create(name="さくら町内会", slug="sakura-backoff")
        household = HouseholdFactory.create(
            block=BlockFactory.create(community=community, name="1班"), label="山田"
        )
        self.resident = MemberFactory.create(household=household).user
        self.sockets: list[WebSocketRoute] = []

    def open_home(self, *, init_script: str = "") -> Page:
        """The resident's home page (the live inbox), its sockets served by the test."""
        page = self.new_page(user=self.resident)
        page.route_web_socket(re.compile(r"/ws/inbox/$"), self.serve)
        page.add_init_script(STAMP_ATTEMPTS + init_script)
        page.clock.install()
        page.goto(self.url("/"))
        self.wait_for_sockets(page, 1)
        # From here the page's time moves only when the test moves it.
        page.clock.pause_at(int(page.evaluate("Date.now()")) + 1_000)
        return page

    def serve(self, socket: WebSocketRoute) -> None:
        # Not connected on to the server: the page's socket opens, and the test holds it.
        self.sockets.append(socket)

    def wait_for_sockets(self, page: Page, count: int) -> None:
        # Each call into the page lets Playwright hand over the sockets the page opened.
        for _ in range(200):
            if len(self.sockets) >= count and self.state(page) == "open":
                return
            page.wait_for_timeout(20)
        self.fail(f"{count} sockets expected, the page opened {len(self.sockets)}")

    def state(self, page: Page) -> Any:
        return page.locator("[data-live-ws]").get_attribute("data-live-state")

    def drop(self, page: Page) -> int:
        """The server drops the newest socket; returns the page's time when it noticed."""
        self.sockets[-1].close(code=1012, reason="restart")
        for _ in range(200):
            if self.state(page) == "polling":
                return int(page.evaluate("Date.now()"))
            page.wait_for_timeout(20)
        raise AssertionError("the page did not notice the drop")

    def next_attempt_after(self, page: Page, dropped_at: int, within_ms: int) -> int:
        """Run the page's clock until its next ``new WebSocket``; the delay in ms."""
        before, served = len(page.evaluate("window.__attempts")), len(self.sockets)
        page.clock.run_for(within_ms + 50)
        attempts: list[int] = page.evaluate("window.__attempts")
        self.assertEqual(len(attempts), before + 1, f"one reconnect within {within_ms} ms")
        self.wait_for_sockets(page, served + 1)
        return attempts[-1] - dropped_at

    def test_pages_dropped_together_come_back_spread_over_two_seconds(self) -> None:
        """Each drop of a socket that had been open a while is followed by one retry at a
        random moment within 2 s: twenty drops, twenty different moments."""
        page = self.open_home()
        delays = []
        for _ in range(20):
            page.clock.run_for(STABLE_MS + 1_000)
            dropped_at = self.drop(page)
            delays.append(self.next_attempt_after(page, dropped_at, FIRST_CAP_MS))
        self.assertTrue(all(0 <= delay <= FIRST_CAP_MS for delay in delays), delays)
        self.assertGreater(max(delays) - min(delays), FIRST_CAP_MS / 2, delays)
        self.assertGreater(len(set(delays)), 15, delays)
        self.assert_clean_console()

    def test_backoff_grows_while_sockets_keep_dropping_and_starts_over_once_stable(self) -> None:
        """With the random draw pinned near its top, the waits show their caps: 2, 4, 8 and
        15 s while every socket drops at once (a busy server accepting then closing counts
        as a failure too), and 2 s again after a socket stayed open for 30 s."""
        page = self.open_home(init_script="Math.random = () => 0.99;")
        waits = []
        for cap in (2_000, 4_000, 8_000, 15_000, 15_000):
            dropped_at = self.drop(page)
            waits.append(self.next_attempt_after(page, dropped_at, cap))
        self.assertEqual(waits, [1_980, 3_960, 7_920, 14_850, 14_850])

        page.clock.run_for(STABLE_MS + 1_000)
        dropped_at = self.drop(page)
        self.assertEqual(self.next_attempt_after(page, dropped_at, FIRST_CAP_MS), 1_980)

        # Open, but not for long: the next drop keeps the count (2 s, then 4 s, not 2 again).
        page.clock.run_for(5_000)
        dropped_at = self.drop(page)
        self.assertEqual(self.next_attempt_after(page, dropped_at, 4_000), 3_960)
        self.assert_clean_console()
