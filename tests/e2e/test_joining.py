"""Joining a household with a printed invite card, and a card that was already used."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
import zxingcpp
from django.contrib.auth.models import User
from PIL import Image
from playwright.sync_api import Page, Route, expect

from communities.models import Block, Community, Household, Member, RoleKind
from communities.selectors import InviteStatus, household_invite_lookup
from tests.e2e.live_browser import BrowserTestCase, ja, text_re
from tests.factories import (
    BlockFactory,
    CommunityFactory,
    HouseholdFactory,
    UserFactory,
    give_role,
)

pytestmark = pytest.mark.browser


def qr_urls_on_first_page(pdf: Path) -> list[str]:
    """Render page 1 at print resolution and read every QR, top to bottom, left to right."""
    prefix = pdf.with_suffix("")
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "150",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(pdf),
            str(prefix),
        ],
        check=True,
        timeout=30,
    )
    with Image.open(prefix.with_suffix(".png")) as image:
        barcodes = zxingcpp.read_barcodes(image)
    barcodes.sort(key=lambda code: (code.position.top_left.y // 50, code.position.top_left.x))
    return [code.text for code in barcodes if code.format == zxingcpp.BarcodeFormat.QRCode]


class InviteCardJoinTests(BrowserTestCase):
    community: Community
    block: Block
    households: list[Household]
    leader: User

    def setUp(self) -> None:
        super().setUp()
        self.community = CommunityFactory.create(name="さくら町内会", slug="sakura-e2e")
        self.block = BlockFactory.create(community=self.community, name="1班", position=1)
        self.households = [
            HouseholdFactory.create(block=self.block, label=label, circulation_order=order)
            for order, label in enumerate(("山田", "田中"), start=1)
        ]
        self.leader = UserFactory.create(first_name="班長")
        give_role(
            user=self.leader,
            community=self.community,
            role=RoleKind.BLOCK_LEADER,
            block=self.block,
        )

    def print_cards(self, page: Page) -> Path:
        """The block leader's path to the PDF: block page, invite cards, the button."""
        page.goto(self.url(f"/c/{self.community.slug}/blocks/{self.block.pk}/"))
        self.page_check(page, "block-detail-leader")
        page.get_by_role("link", name=ja("Print invite cards")).click()
        page.wait_for_url(f"**/blocks/{self.block.pk}/invite-cards/")
        expect(page.get_by_role("heading", level=1)).to_contain_text(self.block.name)
        self.page_check(page, "invite-cards")

        # The view sends the PDF inline (to print from the phone's viewer); Chromium would
        # show it, so the test relabels that one response as an attachment to keep it.
        def as_attachment(route: Route) -> None:
            if route.request.method != "POST":
                route.continue_()
                return
            response = route.fetch()
            headers = {**response.headers, "content-disposition": "attachment; filename=c.pdf"}
            route.fulfill(response=response, headers=headers)

        page.route("**/invite-cards/", as_attachment)
        with page.expect_download() as download_info:
            page.get_by_role("button", name=ja("Make the cards (PDF)")).click()
        download = download_info.value
        self.assertIsNone(download.failure())
        folder = tempfile.TemporaryDirectory(prefix="kairan-e2e-")
        self.addCleanup(folder.cleanup)
        target = Path(folder.name) / "cards.pdf"
        download.save_as(target)
        self.assertTrue(target.read_bytes().startswith(b"%PDF"))
        return target

    def test_join_by_card_without_password_then_card_is_refused(self) -> None:
        leader_page = self.new_page()
        self.login_with_link(leader_page, self.leader)
        pdf = self.print_cards(leader_page)

        urls = qr_urls_on_first_page(pdf)
        join_urls = [
            url for url in urls if url.startswith(self.url("/join/")) and url != self.url("/join/")
        ]
        self.assertEqual(len(join_urls), 2, urls)
        tokens = [url.rstrip("/").rsplit("/", 1)[1] for url in join_urls]
        lookups = [household_invite_lookup(token=token) for token in tokens]
        self.assertEqual([lookup.status for lookup in lookups], [InviteStatus.OK] * 2)
        self.assertEqual(
            {lookup.invite.household_id for lookup in lookups if lookup.invite},
            {household.pk for household in self.households},
        )
        card_url = join_urls[0]
        household = lookups[0].invite.household if lookups[0].invite else None
        assert household is not None

        # A resident's phone opens the card's URL: no account, no password.
        phone = self.new_page()
        response = phone.goto(card_url)
        assert response is not None
        self.assertEqual(response.status, 200)
        main = phone.locator("main")
        expect(main).to_contain_text(self.community.name)
        expect(main).to_contain_text(household.label)
        self.page_check(phone, "join-confirm")

        phone.get_by_label(ja("Your name")).fill("山田 花子")
        phone.get_by_label(ja("I agree to the use of the roster as described above.")).check()
        phone.get_by_role("button", name=ja("Join"), exact=True).click()
        phone.wait_for_url(self.url("/"))
        expect(phone.locator("main")).to_contain_text(
            text_re("There are no circulars yet. When the association sends one, it appears here.")
        )
        expect(phone.get_by_role("button", name=ja("Log out"))).to_be_visible()
        self.assertEqual(phone.locator("input[type=password]").count(), 0)
        expect(phone.locator("[data-live-ws]")).to_have_attribute("data-live-state", "open")
        self.page_check(phone, "home-after-join")
        member = Member.objects.get(household=household, display_name="山田 花子")
        self.assertFalse(member.user.has_usable_password())

        # The same card on another phone: refused, with the way forward.
        other = self.new_page()
        response = other.goto(card_url)
        assert response is not None
        self.assertEqual(response.status, 410)
        main = other.locator("main")
        expect(main).to_contain_text(
            text_re("This card has already been used. Each card works only once.")
        )
        expect(main).to_contain_text(text_re("Please ask your block leader for a new card."))
        expect(main).to_contain_text(self.leader.first_name)
        self.page_check(other, "join-refused")
        self.assertEqual(Member.objects.filter(household=household).count(), 1)
        self.assert_clean_console()
