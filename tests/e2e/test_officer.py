"""An officer with two-step login: importing the roster from Excel's CSV, and the staff pages."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import FilePayload, Page, expect

from communities.models import Block, Community, DeliveryMode, Household, RoleKind
from tests.e2e.live_browser import BrowserTestCase, ja
from tests.factories import (
    BlockFactory,
    CommunityFactory,
    HouseholdFactory,
    UserFactory,
    give_role,
    mfa_enable,
)

pytestmark = pytest.mark.browser

HEADER = "世帯名,班,住所,電話,配布方法,備考\r\n"
BAD_ROWS = (
    "山田,1班,桜町1-1,03-1111-2222,紙,\r\n"  # line 2: fine
    "鈴木,9班,桜町9-9,,アプリ,\r\n"  # line 3: no such block
    ",1班,桜町1-3,,紙,\r\n"  # line 4: no name
    "佐藤,2班,,,FAX,\r\n"  # line 5: unknown delivery
    "山田,1班,桜町1-1,,紙,\r\n"  # line 6: twice in the file
)
CLEAN_ROWS = (
    "山田,1班,桜町1-1,03-1111-2222,紙,ベルが鳴りません\r\n"
    "高橋,2班,桜町2-5,,両方,\r\n"
    "田中,2班,桜町2-1,,アプリ,\r\n"  # already on the roster: updated
)


def cp932(text: str) -> bytes:
    """What Excel in Japan writes when asked for CSV."""
    return text.encode("cp932")


class OfficerTests(BrowserTestCase):
    community: Community
    block1: Block
    block2: Block
    officer: User

    def setUp(self) -> None:
        super().setUp()
        self.community = CommunityFactory.create(name="さくら町内会", slug="sakura-e2e")
        self.block1 = BlockFactory.create(community=self.community, name="1班", position=1)
        self.block2 = BlockFactory.create(community=self.community, name="2班", position=2)
        HouseholdFactory.create(block=self.block2, label="田中", delivery_mode=DeliveryMode.PAPER)
        self.officer = UserFactory.create(first_name="役員")
        give_role(user=self.officer, community=self.community, role=RoleKind.OFFICER)
        mfa_enable(self.officer)

    def households(self) -> int:
        return Household.objects.filter(community=self.community).count()

    def upload(self, page: Page, *, name: str, data: bytes) -> None:
        upload: FilePayload = {"name": name, "mimeType": "text/csv", "buffer": data}
        page.get_by_label(ja("Roster file (CSV)")).set_input_files(files=upload)
        page.get_by_role("button", name=ja("Check the file")).click()
        page.wait_for_url(re.compile(r"/roster/import/\d+/$"))

    def test_roster_import_shows_every_error_then_saves_a_clean_file(self) -> None:
        page = self.new_page(user=self.officer)
        page.goto(self.url(f"/c/{self.community.slug}/"))
        self.page_check(page, "dashboard")
        page.get_by_role("link", name=ja("Import roster (CSV)")).click()
        page.wait_for_url("**/roster/import/")
        self.page_check(page, "import")

        before = self.households()
        self.upload(page, name="名簿.csv", data=cp932(HEADER + BAD_ROWS))
        main = page.locator("main")
        expect(main).to_contain_text("Shift_JIS")
        rows = page.locator("main table tbody tr")
        expect(rows).to_have_count(5)
        expected = {
            3: ja("Unknown block '%(block)s'. Add the block first or correct the name.")
            % {"block": "9班"},
            4: ja("The household name is empty."),
            5: ja("Unknown delivery '%(mode)s': write アプリ, 紙 or 両方.") % {"mode": "FAX"},
            6: ja("This household appears twice in the file."),
        }
        for line, error in expected.items():
            row = rows.filter(has=page.locator("td").first.get_by_text(str(line), exact=True))
            expect(row).to_have_class(re.compile(r"\brow-error\b"))
            expect(row.locator(".errorlist")).to_contain_text(error)
        expect(rows.first).not_to_have_class(re.compile(r"\brow-error\b"))
        expect(page.get_by_role("alert")).to_be_visible()
        expect(page.get_by_role("button", name=ja("Save all rows to the roster"))).to_have_count(0)
        self.page_check(page, "import-preview-errors")
        self.assertEqual(self.households(), before)

        page.get_by_role("link", name=ja("Upload another file")).click()
        page.wait_for_url("**/roster/import/")
        self.upload(page, name="名簿.csv", data=cp932(HEADER + CLEAN_ROWS))
        summary = (
            "No errors: %(add)s to add, %(update)s to update. Nothing is saved until you confirm."
        )
        expect(page.locator("main")).to_contain_text(ja(summary) % {"add": 2, "update": 1})
        self.page_check(page, "import-preview-clean")
        self.assertEqual(self.households(), before)
        page.get_by_role("button", name=ja("Save all rows to the roster")).click()
        page.wait_for_url("**/households/")
        expect(page.get_by_role("status")).to_contain_text(
            ja("%(count)s households were imported.") % {"count": 3}
        )
        self.page_check(page, "households")

        self.assertEqual(self.households(), 3)
        yamada = Household.objects.get(community=self.community, label="山田")
        self.assertEqual(
            (yamada.block, yamada.phone, yamada.delivery_mode, yamada.helper_note),
            (self.block1, "03-1111-2222", DeliveryMode.PAPER, "ベルが鳴りません"),
        )
        tanaka = Household.objects.get(community=self.community, label="田中")
        self.assertEqual(tanaka.delivery_mode, DeliveryMode.APP)
        self.assertEqual(
            Household.objects.get(community=self.community, label="高橋").delivery_mode,
            DeliveryMode.BOTH,
        )
        self.assert_clean_console()

    def test_staff_pages_are_accessible(self) -> None:
        HouseholdFactory.create(block=self.block1, label="山田", address="桜町1-1")
        leader = UserFactory.create(first_name="班長", email="hancho@example.jp")
        give_role(
            user=leader, community=self.community, role=RoleKind.BLOCK_LEADER, block=self.block1
        )
        page = self.new_page(user=self.officer)
        slug = self.community.slug

        page.goto(self.url(f"/c/{slug}/"))
        page.locator("main").get_by_role("link", name=ja("Blocks"), exact=True).click()
        page.wait_for_url(f"**/c/{slug}/blocks/")
        self.page_check(page, "blocks")

        page.locator("main").get_by_role("link", name="1班").click()
        page.wait_for_url(f"**/blocks/{self.block1.pk}/")
        expect(page.get_by_role("heading", level=1)).to_have_text("1班")
        self.page_check(page, "block-detail")

        page.get_by_role("link", name=ja("Add a household")).click()
        page.wait_for_url(f"**/households/new/?block={self.block1.pk}")
        self.page_check(page, "household-form")

        page.goto(self.url(f"/c/{slug}/roles/"))
        expect(page.locator("main")).to_contain_text("班長")
        self.page_check(page, "roles")

        page.get_by_role("link", name=ja("Start a new year")).click()
        page.wait_for_url(f"**/c/{slug}/rollover/")
        expect(page.get_by_label(ja("Block leaders")).first).to_have_value("hancho@example.jp")
        self.page_check(page, "rollover")
        self.assert_clean_console()
