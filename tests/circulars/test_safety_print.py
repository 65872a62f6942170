"""The door-to-door checklist of a safety check, read back from the PDF as a helper sees it:
pdftotext for the words and their order, pdffonts for the embedded font, QR codes decoded
from the rendered pixels."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse

from circulars import safety
from circulars.models import Circular, PrintRecord, ReceiptMethod, SafetyStatus
from circulars.print_pack import print_pack_pdf
from circulars.safety_print import safety_checklist_pdf
from communities.models import DeliveryMode, Household, Member, RoleKind
from tests.circulars.test_print_pack import (
    Pdf,
    Word,
    fonts,
    keep_artifact,
    qr_codes,
    read_back,
    run,
    words,
)
from tests.circulars.test_safety_record import client_for, ja
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory, UserFactory, give_role

pytestmark = pytest.mark.django_db

BASE = "https://kairan.example.jp"
TOKYO = ZoneInfo("Asia/Tokyo")
STARTED = datetime(2026, 6, 10, 10, 0, tzinfo=TOKYO)
PRINTED = datetime(2026, 6, 10, 10, 30, tzinfo=TOKYO)
A4_BOTTOM_MARGIN_TOP = (297 - 14) / 25.4 * 72  # pt: the checklist's bottom margin is 14 mm


class Block1:
    """block1's round: 石井 (paper), 山田 (app), 上田 (paper), 青木 (app)."""

    def __init__(self, town: Town) -> None:
        town.household1.circulation_order = 2
        town.household1.save(update_fields=["circulation_order"])
        self.ishii = HouseholdFactory.create(
            block=town.block1,
            label="石井",
            circulation_order=1,
            delivery_mode=DeliveryMode.PAPER,
            address="桜町1-2-3",
            helper_note="裏口から",
        )
        self.yamada = town.household1
        self.ueda = HouseholdFactory.create(
            block=town.block1, label="上田", circulation_order=3, delivery_mode=DeliveryMode.PAPER
        )
        self.aoki = HouseholdFactory.create(block=town.block1, label="青木", circulation_order=4)
        MemberFactory.create(household=self.aoki)
        self.in_order = [self.ishii, self.yamada, self.ueda, self.aoki]


def leader_named(town: Town, name: str) -> None:
    town.leader1.first_name, town.leader1.last_name = name, ""
    town.leader1.save(update_fields=["first_name", "last_name"])


def start_with_answers(town: Town, block1: Block1, *, drill: bool = True) -> Circular:
    """10:00 the check starts; 10:05 山田 answers 無事 on the app; 10:12 the 班長 hears on
    the phone that 上田 needs help; 10:20 nobody opens at 石井."""
    check = safety.safety_check_start(
        community=town.community, author=town.chair, drill=drill, now=STARTED
    )
    safety.safety_report(
        circular=check,
        household=block1.yamada,
        status=SafetyStatus.SAFE,
        method=ReceiptMethod.APP,
        member=Member.objects.get(user=town.resident1),
        now=STARTED + timedelta(minutes=5),
    )
    safety.safety_report(
        circular=check,
        household=block1.ueda,
        status=SafetyStatus.HELP,
        note="足を怪我しています",
        method=ReceiptMethod.PROXY_PHONE,
        recorded_by=town.leader1,
        now=STARTED + timedelta(minutes=12),
    )
    safety.safety_report(
        circular=check,
        household=block1.ishii,
        status=SafetyStatus.ABSENT,
        method=ReceiptMethod.PROXY_VISIT,
        recorded_by=town.leader1,
        now=STARTED + timedelta(minutes=20),
    )
    return check


def record_url(check: Circular, block_id: int) -> str:
    return BASE + reverse(
        "circulars:safety_record", args=[check.community.slug, check.pk, block_id]
    )


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def reading_order(pdf: Pdf) -> list[str]:
    """Each page's text as drawn (cell by cell), not laid out in columns: a status that
    wraps in its cell still reads as one phrase."""
    pages = run("pdftotext", str(pdf.path), "-").split("\f")
    return [flat(text) for text in pages if text.strip()]


def status_cells(pdf: Pdf, page: int, labels: list[str]) -> dict[str, str]:
    """The 「status when printed」 cell of each household's row, read by position: the
    words between that column's header and the boxes' column, from the household's name
    down to the next household's."""
    found = words(pdf.path, page)
    first_row = min(w.y0 for w in found if w.text in labels)

    def header(message: str) -> Word:
        """The column's header word (it may wrap: its first line is a prefix)."""
        text = ja(message)
        return max(
            (w for w in found if w.y0 < first_row and len(w.text) >= 2 and text.startswith(w.text)),
            key=lambda w: w.y0,
        )

    status_head, check_head = header("Status when printed"), header("Check")
    names = sorted(
        (
            (next(w for w in found if w.text == label and w.x1 < status_head.x0), label)
            for label in labels
        ),
        key=lambda pair: pair[0].y0,
    )
    cells = {}
    for index, (name, label) in enumerate(names):
        # The last row ends where the page's bottom margin (the footer) begins.
        bottom = names[index + 1][0].y0 if index + 1 < len(names) else A4_BOTTOM_MARGIN_TOP
        inside = [
            w
            for w in found
            if name.y0 - 3 <= w.y0 < bottom - 3 and status_head.x0 - 3 <= w.x0 < check_head.x0 - 3
        ]
        inside.sort(key=lambda w: (round(w.y0), w.x0))
        cells[label] = " ".join(w.text for w in inside)
    return cells


def test_a_drill_checklist_for_one_block(town: Town, tmp_path: Path) -> None:
    block1 = Block1(town)
    leader_named(town, "鈴木班長")
    check = start_with_answers(town, block1)

    with time_machine.travel(PRINTED, tick=False):
        result = safety_checklist_pdf(circular=check, blocks=[town.block1], base_url=BASE + "/")

    pdf = read_back(result, tmp_path, "checklist.pdf")
    keep_artifact(pdf.path, "safety-checklist-drill.pdf")
    assert result.pages == 1
    [page] = reading_order(pdf)
    assert "【訓練】安否確認" in page
    assert ja("This is a drill, not a real disaster.") in page
    assert page.count(ja("Drill")) >= 2  # the page header's mark and the banner
    assert "さくら町内会" in page and "1班" in page
    assert f"{ja('Block leader')}: 鈴木班長" in page
    assert "2026年6月10日 10:30" in page
    # Every household of the block, in round order (paper or not).
    labels = [h.label for h in block1.in_order]
    found = [page.find(label) for label in labels]
    assert -1 not in found and found == sorted(found)
    assert "田中" not in page  # block 2
    # What was known at print time, so helpers skip those who answered.
    assert status_cells(pdf, 1, labels) == {
        "石井": f"{ja('Not known yet')} 不在 (訪問 10:20)",
        "山田": "無事 (アプリ 10:05)",
        "上田": "支援が必要 (電話 10:12) 足を怪我しています",
        "青木": ja("Not known yet"),
    }
    assert "桜町1-2-3" in page and "裏口から" in page
    # The boxes, once per household.
    assert page.count("□無事") == page.count("□支援が必要") == page.count("□不在") == len(labels)
    assert result.household_ids == [h.pk for h in block1.in_order]
    # The font is embedded, and the QR code opens the block's recording screen.
    listed = fonts(pdf.path)
    assert listed and all("BIZ-UDGothic" in name and embedded == "yes" for name, embedded in listed)
    assert qr_codes(pdf.path, 1) == {record_url(check, town.block1.pk)}


def test_every_page_of_a_long_block_says_drill(town: Town, tmp_path: Path) -> None:
    for order in range(30):
        HouseholdFactory.create(
            block=town.block1, label=f"世帯{order:02d}", circulation_order=order
        )
    check = safety.safety_check_start(community=town.community, author=town.chair, drill=True)

    result = safety_checklist_pdf(circular=check, blocks=[town.block1], base_url=BASE)

    pdf = read_back(result, tmp_path)
    keep_artifact(pdf.path, "safety-checklist-long.pdf")
    assert result.pages >= 2
    pages = reading_order(pdf)
    for number, text in enumerate(pages, start=1):
        assert ja("Drill") in text
        assert f"1班 {number} / {len(pages)}" in text  # the page footer
        assert "□" in text  # rows continue on every page
        assert ja("Status when printed") in text  # the table header repeats
    everything = " ".join(pages)
    found = [everything.find(f"世帯{order:02d}") for order in range(30)]
    assert -1 not in found and found == sorted(found)


def test_a_real_check_for_all_blocks_has_no_drill_mark(town: Town, tmp_path: Path) -> None:
    block1 = Block1(town)
    check = start_with_answers(town, block1, drill=False)

    result = safety_checklist_pdf(circular=check, blocks=[town.block1, town.block2], base_url=BASE)

    pdf = read_back(result, tmp_path)
    pages = reading_order(pdf)
    assert len(pages) == 2
    assert all("訓練" not in text and ja("Drill") not in text for text in pages)
    assert "安否確認" in pages[0] and "1班" in pages[0] and "上田" in pages[0]
    assert "田中" in pages[1] and "2班" in pages[1] and "上田" not in pages[1]
    assert qr_codes(pdf.path, 2) == {record_url(check, town.block2.pk)}


def test_the_print_page_makes_a_checklist_and_logs_it(town: Town) -> None:
    block1 = Block1(town)
    check = start_with_answers(town, block1)
    client = client_for(town.leader1)
    url = reverse("circulars:paper_print", args=[town.community.slug, check.pk])

    form = client.get(url)
    assert form.status_code == 200
    html = form.content.decode()
    record = reverse(
        "circulars:safety_record", args=[town.community.slug, check.pk, town.block1.pk]
    )
    assert f'href="{record}"' in html
    assert 'name="furigana"' not in html  # no circular to read: no reading options
    response = client.post(url, {"block": town.block1.pk})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    logged = PrintRecord.objects.get(circular=check)
    assert logged.block == town.block1
    assert logged.printed_by == town.leader1
    assert logged.household_ids == [h.pk for h in block1.in_order]
    assert logged.pages == 1
    # The same dispatch serves every caller of the print pack.
    assert print_pack_pdf(
        circular=check, blocks=[town.block1], base_url=BASE, printed_by=None
    ).household_ids == [h.pk for h in block1.in_order]


def test_a_block_leader_of_another_block_cannot_print_this_one(town: Town) -> None:
    Block1(town)
    check = safety.safety_check_start(community=town.community, author=town.chair, drill=True)
    leader2 = UserFactory.create()
    give_role(user=leader2, community=town.community, role=RoleKind.BLOCK_LEADER, block=town.block2)
    url = reverse("circulars:paper_print", args=[town.community.slug, check.pk])
    assert client_for(leader2).post(url, {"block": town.block1.pk}).status_code == 404
    assert not PrintRecord.objects.exists()
    assert Household.objects.filter(block=town.block1).count() == 4
