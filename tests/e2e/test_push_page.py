"""The notification settings page and the service worker in real Chromium.

Headless Chromium has no push service to subscribe to, so the push *transport* is tested
against the fake service in tests/notifications/test_push.py. Here the browser registers
/sw.js with scope "/", and Chrome DevTools delivers a push message straight to the worker,
which must show the fixed Japanese title and keep nothing else.

What was shown is read from two witnesses that do not race: Chrome's own DevTools record
of displayed notifications (the Application panel's "Notifications" log), and the
arguments the worker passed to ``showNotification``. ``registration.getNotifications()``
is no witness here: Chromium answers it only with the notifications its platform reports
as on screen (and deletes the rest), and a freshly started headless Chromium sometimes
leaves out one it has just displayed, so about one run in ten came back with ``[]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, Worker, expect

from tests.e2e.live_browser import BrowserTestCase, ja
from tests.factories import MemberFactory

pytestmark = pytest.mark.browser

WAIT_SECONDS = 10

# Records what the worker asks to show, then shows it as before.
SPY_ON_SHOW_NOTIFICATION_JS = """
() => {
  const registration = self.registration;
  const show = registration.showNotification.bind(registration);
  self.shownForTest = [];
  registration.showNotification = (title, options) => {
    self.shownForTest.push({title, options});
    return show(title, options);
  };
}
"""


class PushPageTests(BrowserTestCase):
    def wait_for(self, page: Page, what: str, done: Callable[[], bool]) -> None:
        """Let Playwright deliver DevTools events until ``done()``, for at most 10 s."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not done():
            self.assertLess(time.monotonic(), deadline, f"timed out waiting for {what}")
            page.wait_for_timeout(50)

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

        # Listen before enabling: DevTools sends the current state as soon as it is enabled.
        cdp = context.new_cdp_session(page)
        scopes: dict[str, str] = {}
        activated: set[str] = set()
        events: list[dict[str, Any]] = []

        def on_registration(event: dict[str, list[dict[str, str]]]) -> None:
            scopes.update((r["registrationId"], r["scopeURL"]) for r in event["registrations"])

        def on_version(event: dict[str, list[dict[str, str]]]) -> None:
            for version in event["versions"]:
                if version["status"] == "activated":
                    activated.add(version["registrationId"])

        cdp.on("ServiceWorker.workerRegistrationUpdated", on_registration)
        cdp.on("ServiceWorker.workerVersionUpdated", on_version)
        cdp.on(
            "BackgroundService.backgroundServiceEventReceived",
            lambda event: events.append(event["backgroundServiceEvent"]),
        )
        for service in ("pushMessaging", "notifications"):
            cdp.send("BackgroundService.startObserving", {"service": service})
            cdp.send("BackgroundService.setRecording", {"shouldRecord": True, "service": service})
        cdp.send("ServiceWorker.enable")

        def our_registration() -> str | None:
            ids = [i for i, url in scopes.items() if url == scope and i in activated]
            return ids[0] if ids else None

        self.wait_for(
            page, "an activated worker for scope /", lambda: our_registration() is not None
        )
        registration_id = our_registration()

        sw_url = self.url("/sw.js")
        workers: list[Worker] = [w for w in context.service_workers if w.url == sw_url]
        self.assertTrue(workers, "Playwright does not see the running service worker")
        worker = workers[-1]
        worker.evaluate(SPY_ON_SHOW_NOTIFICATION_JS)

        payload = {"type": "circular", "id": 7, "url": "/c/x/circulars/7/", "urgent": True}
        cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": self.live_server_url,
                "registrationId": registration_id,
                "data": json.dumps(payload),
            },
        )

        def logged(service: str, name: str) -> list[dict[str, str]]:
            return [
                {item["key"]: item["value"] for item in event["eventMetadata"]}
                for event in events
                if event["service"] == service and event["eventName"] == name
            ]

        self.wait_for(
            page,
            "the push event to finish",
            lambda: bool(logged("pushMessaging", "Push event completed")),
        )
        self.assertEqual(logged("pushMessaging", "Push event completed"), [{"Status": "Success"}])
        self.assertEqual(
            logged("notifications", "Notification displayed"),
            [{"Title": "緊急の回覧があります", "Body": "タップして開いてください"}],
        )
        shown = worker.evaluate("self.shownForTest")
        self.assertEqual(
            shown,
            [
                {
                    "title": "緊急の回覧があります",
                    "options": {
                        "body": "タップして開いてください",
                        "lang": "ja",
                        "tag": "kairan-circular-7",
                        "renotify": True,
                        "requireInteraction": True,
                        "data": {"url": self.url("/c/x/circulars/7/")},
                    },
                }
            ],
        )
        self.assert_clean_console()
