"""The notification settings page and the service worker in real Chromium.

Headless Chromium has no push service to subscribe to, so the push *transport* is tested
against the fake service in tests/notifications/test_push.py. Here the browser registers
/sw.js with scope "/", and Chrome DevTools delivers a push message straight to the worker,
which must show the fixed Japanese title and keep nothing else.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.e2e.live_browser import BrowserTestCase, ja
from tests.factories import MemberFactory

pytestmark = pytest.mark.browser

NOTIFICATIONS_JS = """
async () => {
  const registration = await navigator.serviceWorker.ready;
  for (let i = 0; i < 50; i++) {
    const shown = await registration.getNotifications();
    if (shown.length) {
      return shown.map(n => ({title: n.title, body: n.body, url: n.data && n.data.url}));
    }
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  return [];
}
"""


class PushPageTests(BrowserTestCase):
    def test_settings_page_registers_the_worker_which_shows_a_push(self) -> None:
        member = MemberFactory.create()
        context = self.new_context(user=member.user)
        context.grant_permissions(["notifications"], origin=self.live_server_url)
        page = context.new_page()
        page.goto(self.url("/"))
        page.get_by_role("link", name=ja("Notification settings")).click()
        page.wait_for_url(self.url("/push/"))
        button = page.get_by_role("button", name=ja("Receive notifications"))
        expect(button).to_be_visible()
        self.page_check(page, "push-settings")

        scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
        self.assertEqual(scope, self.url("/"))

        cdp = context.new_cdp_session(page)
        cdp.send("ServiceWorker.enable")
        versions: list[dict[str, object]] = []
        cdp.on("ServiceWorker.workerVersionUpdated", lambda e: versions.extend(e["versions"]))
        page.wait_for_timeout(300)
        registration_id = next(str(v["registrationId"]) for v in versions)
        payload = {"type": "circular", "id": 7, "url": "/c/x/circulars/7/", "urgent": True}
        cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": self.live_server_url,
                "registrationId": registration_id,
                "data": json.dumps(payload),
            },
        )
        shown = page.evaluate(NOTIFICATIONS_JS)
        self.assertEqual(
            shown,
            [
                {
                    "title": "緊急の回覧があります",
                    "body": "タップして開いてください",
                    "url": self.url("/c/x/circulars/7/"),
                }
            ],
        )
        self.assert_clean_console()
