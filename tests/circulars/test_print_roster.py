"""Stamped rosters (circulars/print_roster.py): the helper's list on the cover and the 回覧表,
assembled from sample rows, must print exactly what WeasyPrint lays out in full.

Every test prints a real pack twice, once as it ships and once with the rosters laid out
row by row (``roster_plan`` switched off), and compares what a helper would get: the text
pdftotext reads and the pages as pdftoppm draws them.
"""

from __future__ import annotations

import io
import logging
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from pypdf import PdfReader

from circulars import print_pack, services
from circulars.models import Circular, ReceiptMethod
from circulars.print_pack import PackResult, print_pack_pdf
from circulars.services import CircularData
from communities.models import Block, DeliveryMode, Household, PaperDistribution
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory

BASE = "https://kairan.example.jp/"
SURNAMES = ["青木", "石井", "上田", "江藤", "大野", "加藤", "菊池", "工藤", "小林", "佐藤"]
NOTES = ["", "", "郵便受けへ", "", "インターホン不可", "", "", "2階 (階段)", "", ""]


def run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def publish(town: Town, mode: str = "") -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title="防災訓練のお知らせ", body="9月1日に防災訓練を行います。"),
    )
    if mode:
        circular.paper_distribution = mode
        circular.save(update_fields=["paper_distribution"])
    return services.circular_publish(circular=circular)


def paper_households(block: Block, count: int) -> list[Household]:
    return [
        HouseholdFactory.create(
            block=block,
            label=f"{SURNAMES[n % len(SURNAMES)]} {n + 1}",
            helper_note=NOTES[n % len(NOTES)],
            circulation_order=n,
            delivery_mode=DeliveryMode.PAPER,
        )
        for n in range(count)
    ]


def pack(circular: Circular, blocks: list[Block]) -> PackResult:
    return print_pack_pdf(circular=circular, blocks=blocks, base_url=BASE, printed_by=None)


def full_layout(circular: Circular, blocks: list[Block]) -> PackResult:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(print_pack, "roster_plan", lambda **_kwargs: None)
        return pack(circular, blocks)


def stamped_pages(result: PackResult) -> list[int]:
    """Pages (from 1) that have stamped roster rows on them."""
    return [
        number
        for number, page in enumerate(PdfReader(io.BytesIO(result.pdf)).pages, start=1)
        if (contents := page.get_contents()) is not None and b"/KairanRow" in contents.get_data()
    ]


def page_texts(result: PackResult, tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(result.pdf)
    return run("pdftotext", "-layout", str(path), "-").split("\f")[: result.pages]


def drawn(result: PackResult, tmp_path: Path, name: str, pages: list[int]) -> list[Image.Image]:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(result.pdf)
    images = []
    for number in pages:
        prefix = tmp_path / f"{name}-{number}"
        run(
            "pdftoppm",
            *("-r", "100", "-gray", "-png", "-f", str(number), "-l", str(number)),
            str(path),
            str(prefix),
        )
        [png] = tmp_path.glob(f"{prefix.name}-*.png")
        with Image.open(png) as image:
            images.append(image.convert("L"))
    return images


def assert_same_pages(
    stamped: PackResult, full: PackResult, tmp_path: Path, pages: list[int] | None = None
) -> None:
    assert stamped.pages == full.pages
    pages = pages or list(range(1, full.pages + 1))
    stamped_text = page_texts(stamped, tmp_path, "stamped")
    full_text = page_texts(full, tmp_path, "full")
    for number in pages:
        assert stamped_text[number - 1] == full_text[number - 1], f"page {number}"
    for number, ours, theirs in zip(
        pages,
        drawn(stamped, tmp_path, "stamped", pages),
        drawn(full, tmp_path, "full", pages),
        strict=True,
    ):
        # Anti-aliasing may differ by a shade at the edge of a glyph; no mark may differ.
        difference = ImageChops.difference(ours, theirs)
        marks = sum(difference.histogram()[48:])
        assert marks == 0, f"page {number}: {marks} pixels differ, within {difference.getbbox()}"


def test_a_long_roster_is_stamped_and_prints_as_laid_out_in_full(
    town: Town, tmp_path: Path
) -> None:
    households = paper_households(town.block1, 45)
    circular = publish(town)
    for household in households[::7]:  # some already stamped: ✓ and スマホで確認済み rows
        services.receipt_confirm(
            circular=circular,
            household=household,
            method=ReceiptMethod.PAPER,
            recorded_by=town.chair,
        )

    stamped = pack(circular, [town.block1])
    full = full_layout(circular, [town.block1])

    # Cover over three pages, the circular, the 回覧表 over several: rows on all of them.
    texts = page_texts(stamped, tmp_path, "read")
    roster = [n for n, text in enumerate(texts, start=1) if "この回覧はスマホでも" not in text]
    assert len(roster) >= 5
    assert stamped_pages(stamped) == roster
    assert stamped_pages(full) == []
    assert "青木 1 ✓" in texts[0]
    assert "インターホン不可" in texts[0]
    assert_same_pages(stamped, full, tmp_path)


@pytest.mark.parametrize("count", [16, 17, 18, 19])
def test_a_roster_ending_near_the_bottom_of_a_page(town: Town, tmp_path: Path, count: int) -> None:
    """Around the first page break, and with the note under the table pushed over it."""
    paper_households(town.block1, count)
    circular = publish(town)

    assert_same_pages(pack(circular, [town.block1]), full_layout(circular, [town.block1]), tmp_path)


def test_both_modes_for_two_blocks(town: Town, tmp_path: Path) -> None:
    """Rows of different shapes: a copy with an invite card, a joined household's copy."""
    first = paper_households(town.block1, 6)
    MemberFactory.create(household=first[2])  # joined, still on paper
    paper_households(town.block2, 3)
    circular = publish(town, mode=PaperDistribution.BOTH)
    blocks = [town.block1, town.block2]

    stamped = pack(circular, blocks)
    full = full_layout(circular, blocks)

    # Every print issues new invite codes: compare all but the invite cards.
    texts = page_texts(stamped, tmp_path, "read")
    same = [n for n, text in enumerate(texts, start=1) if "様へ" not in text]
    rosters = [n for n in same if "お手伝いの方へ" in texts[n - 1] or "確認印" in texts[n - 1]]
    assert len(rosters) == 4
    assert stamped_pages(stamped) == rosters
    assert_same_pages(stamped, full, tmp_path, same)


def test_a_name_too_long_for_its_cell_lays_the_pack_out_in_full(
    town: Town, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_name = "長谷川" * 14
    paper_households(town.block1, 3)
    HouseholdFactory.create(block=town.block1, label=long_name, delivery_mode=DeliveryMode.PAPER)
    circular = publish(town)

    with caplog.at_level(logging.INFO, logger="circulars.print_pack"):
        result = pack(circular, [town.block1])

    assert "needs more than one line" in caplog.text
    assert stamped_pages(result) == []
    assert "長谷川長谷川" in "".join(page_texts(result, tmp_path, "read"))


@pytest.mark.parametrize(
    "label",
    [
        "🌸 田中",  # not in the print font: WeasyPrint takes it from another
        "か\u309aの家",  # か + combining semi-voiced mark: the font joins them into one glyph
        "田\u200b中",  # a zero-width space: shaping hides it
    ],
)
def test_words_only_shaping_can_draw_keep_their_block_in_full(
    town: Town, tmp_path: Path, label: str
) -> None:
    paper_households(town.block1, 3)
    HouseholdFactory.create(block=town.block2, label=label, delivery_mode=DeliveryMode.PAPER)
    circular = publish(town)
    blocks = [town.block1, town.block2]

    stamped = pack(circular, blocks)
    full = full_layout(circular, blocks)

    texts = page_texts(stamped, tmp_path, "read")
    block1 = [n for n, text in enumerate(texts, start=1) if "1班" in text and "確認印" in text]
    assert set(stamped_pages(stamped)) == {1, *block1}  # 1班 stamped, 2班 not
    assert_same_pages(stamped, full, tmp_path)
