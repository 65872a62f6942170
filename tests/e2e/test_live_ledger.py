"""The live 配布状況: residents confirm on their phones, the chair's ledger follows.

First with the server's own channel layer (in-memory in the embedded run, Redis when
``REDIS_URL`` is set); then against a private Redis that the test stops and restarts: the
page falls back to polling, still shows new confirmations, and goes live again by itself.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, ClassVar

import pytest
import redis
from channels.layers import channel_layers
from django.contrib.auth.models import User
from django.test import override_settings
from playwright.sync_api import Page, expect

from circulars.models import Circular, Receipt
from circulars.services import CircularData, circular_create, circular_publish
from communities.models import Household, RoleKind
from tests.conftest import service_unavailable
from tests.e2e.live_browser import SCREENSHOTS, BrowserTestCase, ja, text_re
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

# A live event arrives in well under a second; polling every 2 s shows a change within 4 s.
LIVE_MS = 5_000
POLL_MS = 8_000
# The watchdog probes every 5 s and gives a probe 3 s: the socket closes within ~8 s.
OUTAGE_NOTICED_MS = 12_000
# Reconnection backs off up to 15 s between attempts while Redis is away.
BACK_LIVE_MS = 30_000


class LedgerScene(BrowserTestCase):
    """A community with three households in two blocks, a chair and a published circular."""

    chair: User
    households: list[Household]
    residents: list[User]
    circular: Circular

    def setUp(self) -> None:
        super().setUp()
        community = CommunityFactory.create(name="さくら町内会", slug="sakura-live")
        block1 = BlockFactory.create(community=community, name="1班", position=1)
        block2 = BlockFactory.create(community=community, name="2班", position=2)
        self.households = [
            HouseholdFactory.create(block=block, label=label, circulation_order=order)
            for order, (block, label) in enumerate(
                ((block1, "山田"), (block1, "田中"), (block2, "佐藤")), start=1
            )
        ]
        self.residents = [
            MemberFactory.create(household=household, display_name=f"{household.label} 花子").user
            for household in self.households
        ]
        self.chair = UserFactory.create(first_name="会長")
        give_role(user=self.chair, community=community, role=RoleKind.CHAIR)
        mfa_enable(self.chair)  # the ledger lists the roster: two-step login first
        circular = circular_create(
            community=community, author=self.chair, data=CircularData(title="ごみ収集日の変更")
        )
        self.circular = circular_publish(circular=circular)

    def circular_path(self) -> str:
        return f"/c/{self.circular.community.slug}/circulars/{self.circular.pk}/"

    def open_ledger(self) -> Page:
        """The chair's 配布状況, live; marked so that a reload would show."""
        page = self.new_page(user=self.chair)
        # The socket's first open fetches a fresh snapshot and swaps the ledger's body: wait
        # for it, or a row the test is about to use could be swapped out under its click.
        with page.expect_response(
            lambda answer: (
                answer.url.endswith("/ledger/")
                and answer.request.headers.get("hx-request") == "true"
            ),
            timeout=LIVE_MS,
        ):
            page.goto(self.url(f"{self.circular_path()}ledger/"))
            expect(page.locator("[data-live-ws]")).to_have_attribute(
                "data-live-state", "open", timeout=LIVE_MS
            )
        expect(self.total(page)).to_have_text("0")
        page.evaluate("window.__marker = 1")
        return page

    def confirm_on_phone(self, index: int) -> None:
        """Resident ``index`` opens the circular on their phone and taps 「確認しました」."""
        phone = self.new_page(user=self.residents[index])
        phone.goto(self.url(self.circular_path()))
        phone.get_by_role("button", name=ja("I have read it")).click()
        expect(phone.locator(".confirmed-badge")).to_contain_text(ja("Confirmed"))
        phone.context.close()
        receipt = Receipt.objects.get(circular=self.circular, household=self.households[index])
        self.assertIsNotNone(receipt.confirmed_at, "the confirmation must be in the database")

    def row(self, page: Page, index: int) -> Any:
        return page.locator(f'li[data-ledger-row="{self.households[index].pk}"]')

    def total(self, page: Page) -> Any:
        return page.locator('[data-counts-for="total"] [data-count="confirmed"]')

    def assert_shows_confirmed(self, page: Page, index: int, count: int, timeout: int) -> None:
        expect(self.row(page, index)).to_have_attribute("data-status", "confirmed", timeout=timeout)
        expect(self.total(page)).to_have_text(str(count), timeout=timeout)
        self.assertEqual(page.evaluate("window.__marker"), 1, "the ledger page was reloaded")

    def screenshot(self, page: Page, name: str) -> None:
        page.screenshot(path=SCREENSHOTS / f"live-{name}.png", full_page=True)


class LiveLedgerTests(LedgerScene):
    def test_confirmation_on_a_phone_updates_the_chairs_ledger_without_reload(self) -> None:
        ledger = self.open_ledger()
        self.page_check(ledger, "live-ledger-before")
        expect(self.row(ledger, 0)).to_have_attribute("data-status", "not_yet")

        self.confirm_on_phone(0)
        self.assert_shows_confirmed(ledger, 0, 1, LIVE_MS)
        expect(self.row(ledger, 0).locator('[data-field="status"]')).to_contain_text(
            ja("Confirmed")
        )
        expect(ledger.locator("main")).to_contain_text(text_re("Live updates: on"))
        expect(self.row(ledger, 1)).to_have_attribute("data-status", "not_yet")
        self.page_check(ledger, "live-ledger-after")
        self.assert_clean_console()

    def test_a_refused_tap_says_so(self) -> None:
        """htmx swaps nothing on an error answer: the page must say the tap did not work.
        The household is removed after the ledger opened, so the server answers 404."""
        ledger = self.open_ledger()
        Household.objects.filter(pk=self.households[1].pk).delete()
        row = self.row(ledger, 1)
        row.get_by_role("button", name=text_re("Handed over")).click()
        problem = ledger.locator("#request-problem")
        expect(problem).to_be_visible(timeout=LIVE_MS)
        expect(problem).to_have_text(ja("That did not work. Please reload the page and try again."))
        self.screenshot(ledger, "refused-tap")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A throwaway redis-server that this test may stop and start again on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_unavailable("redis-server is not installed")
        self.binary = str(binary)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = tempfile.TemporaryDirectory(prefix="kairan-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                self.folder.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        service_unavailable(f"redis-server did not start on port {self.port}")
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Kill it, as a crash would: no goodbye to the clients."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        self.folder.cleanup()


class RedisOutageTests(LedgerScene):
    """The live server uses a private Redis, set before the server process forks."""

    private_redis: ClassVar[PrivateRedis]
    layer_settings: ClassVar[override_settings]

    @classmethod
    def setUpClass(cls) -> None:
        cls.private_redis = PrivateRedis()
        cls.private_redis.start()
        cls.layer_settings = override_settings(
            CHANNEL_LAYERS={
                "default": {
                    "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                    "CONFIG": {"hosts": [cls.private_redis.url]},
                }
            },
            # The cache lives on the same Redis as in production, so its outage is tested too.
            CACHES={
                "default": {
                    "BACKEND": "config.resilient_cache.ResilientRedisCache",
                    "LOCATION": cls.private_redis.url,
                    "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
                }
            },
            REDIS_URL=cls.private_redis.url,
            KAIRAN_POLL_SECONDS=2,
            # As in production: counts leave apart from rows, coalesced ("ledger.counts").
            KAIRAN_LEDGER_COUNTS_SECONDS=0.25,
        )
        cls.layer_settings.enable()
        # The forked server must build its layer from these settings, not inherit one.
        channel_layers.backends = {}
        try:
            super().setUpClass()
        except BaseException:
            cls.layer_settings.disable()
            channel_layers.backends = {}
            cls.private_redis.cleanup()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            cls.layer_settings.disable()
            channel_layers.backends = {}
            cls.private_redis.cleanup()

    def test_ledger_polls_while_redis_is_down_and_goes_live_again(self) -> None:
        ledger = self.open_ledger()
        root = ledger.locator("[data-live-ws]")
        status = ledger.locator("[data-live-status]")
        expect(ledger.locator("body")).to_have_attribute("data-poll-ms", "2000")

        # Live through Redis. The counts arrive apart from the row (coalesced): the
        # block's and the totals both follow.
        self.confirm_on_phone(0)
        self.assert_shows_confirmed(ledger, 0, 1, LIVE_MS)
        block1 = ledger.locator(f'[data-counts-for="block-{self.households[0].block_id}"]')
        expect(block1.locator('h2 [data-count="confirmed"]')).to_have_text("1", timeout=LIVE_MS)
        expect(status).to_have_text(ja("Live updates: on"))
        self.screenshot(ledger, "redis-1-live")

        # Redis dies: the watchdog closes the socket and the page says it is reconnecting.
        self.private_redis.stop()
        expect(root).to_have_attribute("data-live-state", "polling", timeout=OUTAGE_NOTICED_MS)
        expect(status).to_have_text(ja("Live updates: reconnecting"))
        self.screenshot(ledger, "redis-2-down")

        # Confirming still works (the database is the truth) and the ledger shows it by
        # polling, while the socket cannot come back.
        self.confirm_on_phone(1)
        self.assert_shows_confirmed(ledger, 1, 2, POLL_MS)
        expect(root).to_have_attribute("data-live-state", "polling")
        self.screenshot(ledger, "redis-3-polled")

        # Redis returns: the page reconnects by itself and is live again.
        self.private_redis.start()
        expect(root).to_have_attribute("data-live-state", "open", timeout=BACK_LIVE_MS)
        expect(status).to_have_text(ja("Live updates: on"))
        self.confirm_on_phone(2)
        self.assert_shows_confirmed(ledger, 2, 3, LIVE_MS)
        expect(root).to_have_attribute("data-live-state", "open")
        self.screenshot(ledger, "redis-4-live-again")
        self.page_check(ledger, "live-ledger-redis-back")
        self.assert_clean_console()
