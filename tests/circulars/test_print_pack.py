"""The print pack, read back: pdftotext, pdffonts, pypdf and QR codes decoded from pixels.

Every test renders a real pack with WeasyPrint and inspects the PDF the way a helper
would see it printed: which pages, in which order, with which text and which codes.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import zxingcpp
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ContentStream, DictionaryObject

from circulars import services
from circulars.attachments import attachment_add
from circulars.models import Circular
from circulars.print_pack import PackResult, print_pack_pdf
from circulars.services import CircularData
from communities import services as community_services
from communities.models import Block, DeliveryMode, Household, PaperDistribution
from tests.conftest import Town
from tests.factories import HouseholdFactory, MemberFactory

BASE = "https://kairan.example.jp"
TITLE = "ごみ収集日の変更について"
BODY = "4月から燃えるごみは火曜と金曜です。\n収集場所は公民館の前です。"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def keep_artifact(path: Path, name: str) -> None:
    """A copy under test-artifacts/ to look at after the run (whichever test runs first)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)


# Paper households, created out of order: the pack must follow circulation_order.
PAPER = [("青木", 30), ("石井", 10), ("上田", 70), ("江藤", 20), ("大野", 60), ("加藤", 50)]
APP = ["佐々木", "鈴木", "高橋"]


# --- Reading a PDF back -----------------------------------------------------------------


@dataclass
class Pdf:
    path: Path
    pages: list[str]  # pdftotext -layout, one string per page

    def kinds(self) -> list[str]:
        return [page_kind(text) for text in self.pages]


def read_back(result: PackResult, tmp_path: Path, name: str = "pack.pdf") -> Pdf:
    path = tmp_path / name
    path.write_bytes(result.pdf)
    text = run("pdftotext", "-layout", str(path), "-")
    pages = text.split("\f")
    if pages and not pages[-1].strip():
        pages.pop()
    assert len(PdfReader(io.BytesIO(result.pdf)).pages) == result.pages
    assert len(pages) == result.pages
    return Pdf(path=path, pages=pages)


def run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def page_kind(text: str) -> str:
    """What a page is, from its visible text (the pack is always in Japanese)."""
    if cover := re.search(r"お手伝いの方へ: (\S+班)", text):
        return f"cover:{cover.group(1)}"
    if invite := re.search(r"(\S+)様へ", text):
        return f"invite:{invite.group(1)}"
    if "確認印" in text and "日付" in text and "回覧表" in text:
        return "sheet"
    if "この回覧はスマホでも読めます" in text:
        return "circular"
    return "other"


def fonts(path: Path) -> list[tuple[str, str]]:
    """(name, embedded) for every font pdffonts lists."""
    lines = run("pdffonts", str(path)).splitlines()[2:]
    rows = []
    for line in lines:
        parts = line.split()
        # name type... encoding emb sub uni object-id generation
        rows.append((parts[0], parts[-5]))
    return rows


def qr_codes(path: Path, page: int) -> set[str]:
    prefix = path.parent / f"{path.stem}-qr-{page}"
    run("pdftoppm", "-png", "-r", "150", "-f", str(page), "-l", str(page), str(path), str(prefix))
    [png] = path.parent.glob(f"{prefix.name}*.png")
    with Image.open(png) as image:
        return {code.text for code in zxingcpp.read_barcodes(image)}


@dataclass(frozen=True)
class Word:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float


def words(path: Path, page: int) -> list[Word]:
    """pdftotext -bbox-layout: every word with its box (y grows downwards)."""
    xhtml = run("pdftotext", "-bbox-layout", "-f", str(page), "-l", str(page), str(path), "-")
    root = ET.fromstring(xhtml)  # noqa: S314 (our own pdftotext output)
    return [
        Word(
            element.text or "",
            float(element.attrib["xMin"]),
            float(element.attrib["yMin"]),
            float(element.attrib["xMax"]),
            float(element.attrib["yMax"]),
        )
        for element in root.iter()
        if element.tag.endswith("word")
    ]


# --- Building the data ------------------------------------------------------------------


def publish(
    town: Town,
    *,
    mode: str = "",
    blocks: list[Block] | None = None,
    uploads: list[SimpleUploadedFile] | None = None,
    body: str = BODY,
) -> Circular:
    circular = services.circular_create(
        community=town.community,
        author=town.chair,
        data=CircularData(title=TITLE, body=body, all_blocks=blocks is None, blocks=blocks or []),
    )
    if mode:
        circular.paper_distribution = mode
        circular.save(update_fields=["paper_distribution"])
    for upload in uploads or []:
        attachment_add(circular=circular, upload=upload)
    return services.circular_publish(circular=circular)


def block_of_ten(town: Town) -> tuple[list[Household], list[Household]]:
    """block1: six paper households (no member) + 山田 (mode paper, joined) on paper, and
    three app households with members (plus the fixture's 山田, app with a member)."""
    paper = [
        HouseholdFactory.create(block=town.block1, label=label, circulation_order=order)
        for label, order in PAPER
    ]
    town.household1.delivery_mode = DeliveryMode.PAPER
    town.household1.circulation_order = 40
    town.household1.save()
    paper.append(town.household1)
    app = []
    for order, label in enumerate(APP):
        household = HouseholdFactory.create(
            block=town.block1, label=label, circulation_order=15 + order * 20
        )
        MemberFactory.create(household=household)
        app.append(household)
    paper.sort(key=lambda household: household.circulation_order)
    return paper, app


def pack(
    circular: Circular, blocks: list[Block], *, furigana: bool = False, large: bool = False
) -> PackResult:
    return print_pack_pdf(
        circular=circular,
        blocks=blocks,
        base_url=BASE + "/",
        printed_by=None,
        furigana=furigana,
        large=large,
    )


def circular_url(circular: Circular) -> str:
    return BASE + reverse("circulars:detail", args=[circular.community.slug, circular.pk])


def signoff_url(circular: Circular, block: Block) -> str:
    return BASE + reverse(
        "circulars:paper_signoff", args=[circular.community.slug, circular.pk, block.pk]
    )


# --- 回覧 -------------------------------------------------------------------------------


def test_circulate_pack_for_one_block(town: Town, tmp_path: Path) -> None:
    paper, _ = block_of_ten(town)
    circular = publish(town)

    result = pack(circular, [town.block1])
    pdf = read_back(result, tmp_path)

    # Cover slip, the circular (one page here), the 回覧表.
    assert pdf.kinds() == ["cover:1班", "circular", "sheet"]
    assert "回覧は1ページです" in pdf.pages[0]
    assert result.household_ids == [household.pk for household in paper]
    text = "".join(pdf.pages)
    assert TITLE in text
    assert "しゅうしゅう" not in text  # no furigana unless asked for
    assert "燃えるごみは火曜と金曜です" in pdf.pages[1]

    sheet = pdf.pages[2]
    assert "確認印" in sheet
    assert "日付" in sheet
    assert TITLE in sheet
    positions = [sheet.find(household.label) for household in paper]
    assert all(position >= 0 for position in positions), positions
    assert positions == sorted(positions)
    for label in APP:
        assert label not in text
    # The cover lists the same households in the same order.
    cover_positions = [pdf.pages[0].find(household.label) for household in paper]
    assert all(position >= 0 for position in cover_positions)
    assert cover_positions == sorted(cover_positions)

    embedded = fonts(pdf.path)
    assert embedded, "no fonts at all"
    assert any("BIZ-UDGothic" in name for name, _ in embedded)
    assert all(flag == "yes" for _, flag in embedded), embedded
    assert all("BIZ-UDGothic" in name for name, _ in embedded), embedded

    assert qr_codes(pdf.path, 2) == {circular_url(circular)}
    assert qr_codes(pdf.path, 3) == {signoff_url(circular, town.block1)}


def test_sheet_marks_households_that_confirmed_on_the_phone(town: Town, tmp_path: Path) -> None:
    both = HouseholdFactory.create(
        block=town.block1, label="江藤", delivery_mode=DeliveryMode.BOTH, circulation_order=1
    )
    member = MemberFactory.create(household=both)
    HouseholdFactory.create(block=town.block1, label="青木", circulation_order=2)
    circular = publish(town)
    services.receipt_confirm(circular=circular, household=both, method="app", member=member)

    pdf = read_back(pack(circular, [town.block1]), tmp_path)

    sheet = pdf.pages[pdf.kinds().index("sheet")]
    # Both stay on the sheet; the stamp box of the one that confirmed says so (once).
    compact = re.sub(r"\s+", "", sheet)
    assert compact.count("スマホで確認済") == 1
    assert compact.index("スマホで確認済") < compact.index("2青木")  # in row 1, not row 2


# --- 各戸配布 and both -------------------------------------------------------------------


def test_each_household_pack_has_copies_and_invite_cards(town: Town, tmp_path: Path) -> None:
    town.community.paper_distribution = PaperDistribution.EACH
    town.community.save()
    unjoined = [
        HouseholdFactory.create(block=town.block1, label=label, circulation_order=order)
        for label, order in PAPER[:3]
    ]
    unjoined.sort(key=lambda household: household.circulation_order)
    # Joined but asked for paper: a copy, no invite card.
    town.household1.delivery_mode = DeliveryMode.PAPER
    town.household1.circulation_order = 99
    town.household1.save()
    leaving = MemberFactory.create(
        household=HouseholdFactory.create(block=town.block1, label="菊池", circulation_order=100)
    )
    circular = publish(town)

    first = pack(circular, [town.block1])
    pdf = read_back(first, tmp_path, "first.pdf")

    expected = ["cover:1班"]
    for household in unjoined:
        expected += [f"invite:{household.label}", "circular"]
    expected += ["circular"]  # 山田: own copy only
    assert pdf.kinds() == expected
    assert "sheet" not in pdf.kinds()
    assert first.household_ids == [*(h.pk for h in unjoined), town.household1.pk]

    # Each invite page's QR is a working join link for that household.
    client = Client()
    links = {}
    for index, kind in enumerate(pdf.kinds(), start=1):
        if not kind.startswith("invite:"):
            continue
        [url] = qr_codes(pdf.path, index)
        assert url.startswith(BASE + "/join/"), url
        path = url.removeprefix(BASE)
        assert re.fullmatch(r"/join/[^/]+/", path), path
        page = client.get(path)
        assert page.status_code == 200
        label = kind.removeprefix("invite:")
        assert label in page.content.decode()
        links[label] = path
    assert set(links) == {h.label for h in unjoined}

    # One more paper household (its only member left): the pack grows by its card and its
    # copy, and printing again replaces every card (the old links stop working).
    community_services.member_remove(member=leaving)
    second = pack(circular, [town.block1])
    assert second.pages == first.pages + 2
    assert leaving.household_id in second.household_ids
    for path in links.values():
        assert client.get(path).status_code == 410


def test_both_modes_for_all_blocks(town: Town, tmp_path: Path) -> None:
    # Blocks in their position order, whatever the creation order.
    town.block1.position, town.block2.position = 2, 1
    town.block1.save()
    town.block2.save()
    aoki = HouseholdFactory.create(block=town.block1, label="青木", circulation_order=2)
    ishii = HouseholdFactory.create(block=town.block1, label="石井", circulation_order=1)
    ueda = HouseholdFactory.create(block=town.block2, label="上田", circulation_order=1)
    MemberFactory.create(household=ueda, user__is_active=True)
    ueda.delivery_mode = DeliveryMode.BOTH  # joined, still wants paper too
    ueda.save()
    circular = publish(town, mode=PaperDistribution.BOTH)
    blocks = list(Block.objects.filter(community=town.community).order_by("position"))
    assert blocks == [town.block2, town.block1]

    result = pack(circular, blocks)
    pdf = read_back(result, tmp_path)

    assert pdf.kinds() == [
        "cover:2班",
        "circular",
        "sheet",
        "circular",  # 上田 has joined: a copy without a card
        "cover:1班",
        "circular",
        "sheet",
        "invite:石井",
        "circular",
        "invite:青木",
        "circular",
    ]
    assert result.household_ids == [ueda.pk, ishii.pk, aoki.pk]
    sheets = [text for text in pdf.pages if page_kind(text) == "sheet"]
    assert "上田" in sheets[0] and "石井" not in sheets[0]
    assert sheets[1].find("石井") < sheets[1].find("青木")
    assert "田中" not in "".join(pdf.pages)  # 2班's app household
    assert qr_codes(pdf.path, 7) == {signoff_url(circular, town.block1)}


# --- Attachments and photos -------------------------------------------------------------


def pdf_upload(name: str, sizes: list[tuple[int, int]]) -> SimpleUploadedFile:
    writer = PdfWriter()
    for width, height in sizes:
        writer.add_blank_page(width=width, height=height)
    buffer = io.BytesIO()
    writer.write(buffer)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/pdf")


def test_attached_pdfs_are_appended_and_unreadable_ones_listed(town: Town, tmp_path: Path) -> None:
    HouseholdFactory.create(block=town.block1, label="青木")
    circular = publish(
        town,
        uploads=[
            pdf_upload("地図.pdf", [(300, 400), (400, 300)]),
            pdf_upload("壊れた資料.pdf", [(200, 200)]),
        ],
    )
    broken = circular.attachments.get(original_name="壊れた資料.pdf")
    Path(broken.file.path).write_bytes(b"this is no longer a PDF at all")

    result = pack(circular, [town.block1])
    pdf = read_back(result, tmp_path)

    assert result.unmerged == ["壊れた資料.pdf"]
    assert pdf.kinds() == ["cover:1班", "circular", "other", "other", "sheet"]
    reader = PdfReader(io.BytesIO(result.pdf))
    sizes = [(round(p.mediabox.width), round(p.mediabox.height)) for p in reader.pages]
    assert sizes[2:4] == [(300, 400), (400, 300)]
    a4 = (595, 842)
    assert sizes[:2] == [a4, a4] and sizes[4] == a4
    circular_page = pdf.pages[1]
    assert "壊れた資料.pdf" in circular_page
    assert "印刷できませんでした" in circular_page
    # The readable one is announced as following; the broken one is not.
    announce = next(line for line in circular_page.splitlines() if "添付資料があります" in line)
    assert "地図.pdf" in announce and "壊れた資料" not in announce
    # The cover counts the appended pages for the helper.
    assert "添付資料: 2ページ" in pdf.pages[0]


def image_boxes(result: PackResult) -> list[list[tuple[float, float, float, float]]]:
    """Per page, the box (x0, y0, x1, y1 in points) of every image drawn on it."""
    reader = PdfReader(io.BytesIO(result.pdf))
    pages = []
    for page in reader.pages:
        resources = page["/Resources"].get_object()
        assert isinstance(resources, DictionaryObject)
        xobjects = resources.get("/XObject", DictionaryObject()).get_object()
        ctm = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        stack: list[list[float]] = []
        boxes = []
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"q":
                stack.append(ctm)
            elif operator == b"Q":
                ctm = stack.pop()
            elif operator == b"cm":
                a, b, c, d, e, f = (float(value) for value in operands)
                ctm = [
                    a * ctm[0] + b * ctm[2],
                    a * ctm[1] + b * ctm[3],
                    c * ctm[0] + d * ctm[2],
                    c * ctm[1] + d * ctm[3],
                    e * ctm[0] + f * ctm[2] + ctm[4],
                    e * ctm[1] + f * ctm[3] + ctm[5],
                ]
            elif operator == b"Do":
                xobject = xobjects[operands[0]].get_object()
                if xobject.get("/Subtype") != "/Image":
                    continue
                corners = [
                    (x * ctm[0] + y * ctm[2] + ctm[4], x * ctm[1] + y * ctm[3] + ctm[5])
                    for x, y in ((0, 0), (1, 0), (0, 1), (1, 1))
                ]
                xs, ys = [x for x, _ in corners], [y for _, y in corners]
                boxes.append((min(xs), min(ys), max(xs), max(ys)))
        pages.append(boxes)
    return pages


def photo(number: int) -> SimpleUploadedFile:
    image = Image.new("RGB", (4000, 3000), (230, 200 - number * 10, 120 + number * 10))
    draw = ImageDraw.Draw(image)
    draw.rectangle((400, 300, 3600, 2700), outline=(0, 0, 0), width=60)
    draw.line((400, 300, 3600, 2700), fill=(0, 0, 0), width=30)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return SimpleUploadedFile(f"写真{number}.jpg", buffer.getvalue(), content_type="image/jpeg")


def test_ten_twelve_megapixel_photos_fit_their_pages(town: Town, tmp_path: Path) -> None:
    HouseholdFactory.create(block=town.block1, label="青木")
    circular = publish(town, uploads=[photo(n) for n in range(10)])

    result = pack(circular, [town.block1])
    pdf = read_back(result, tmp_path)

    kinds = pdf.kinds()
    assert kinds[0] == "cover:1班" and kinds[-1] == "sheet"
    circular_pages = len(kinds) - 2
    # Two photos fit on a page; ten need five or six pages, not one per photo.
    assert 4 <= circular_pages <= 7, kinds
    boxes = image_boxes(result)
    reader = PdfReader(io.BytesIO(result.pdf))
    photos = 0
    for page, page_boxes in zip(reader.pages, boxes, strict=True):
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        for x0, y0, x1, y1 in page_boxes:
            assert -0.5 <= x0 < x1 <= width + 0.5, (x0, x1, width)
            assert -0.5 <= y0 < y1 <= height + 0.5, (y0, y1, height)
            if x1 - x0 > 200:  # a photo, not a QR code
                photos += 1
                # Landscape photos keep their shape: 4:3.
                assert abs((x1 - x0) / (y1 - y0) - 4 / 3) < 0.02
    assert photos == 10
    # Each photo is embedded once, scaled down (not 10 × 12 MP).
    assert len(result.pdf) < 5_000_000


# --- Large print and furigana -----------------------------------------------------------


def word_height(path: Path, page: int, text: str) -> float:
    found = [word for word in words(path, page) if text in word.text]
    assert found, text
    return found[0].y1 - found[0].y0


def test_large_print_makes_the_body_bigger(town: Town, tmp_path: Path) -> None:
    HouseholdFactory.create(block=town.block1, label="青木")
    long_body = "\n".join(f"第{n}項 燃えるごみは火曜と金曜に出してください。" for n in range(1, 25))
    circular = publish(town, body=long_body)

    normal = read_back(pack(circular, [town.block1]), tmp_path, "normal.pdf")
    large = read_back(pack(circular, [town.block1], large=True), tmp_path, "large.pdf")

    # For BIZ UD Gothic the height pdftotext reports for a word is its font size in points.
    normal_size = word_height(normal.path, 2, "燃えるごみは火曜と金曜に")
    large_size = word_height(large.path, 2, "燃えるごみは火曜と金曜に")
    assert normal_size == pytest.approx(14, abs=0.2)
    assert large_size == pytest.approx(20, abs=0.2)
    assert word_height(large.path, 2, "ごみ収集日") > word_height(normal.path, 2, "ごみ収集日")
    # Bigger text takes more pages of circular; the cover and the sheet stay one page each.
    for pdf in (normal, large):
        assert pdf.kinds()[0] == "cover:1班" and pdf.kinds()[-1] == "sheet"
        assert pdf.kinds()[-2] == "circular"
    assert len(large.pages) > len(normal.pages)


def test_furigana_sit_above_the_kanji(town: Town, tmp_path: Path) -> None:
    HouseholdFactory.create(block=town.block1, label="青木")
    circular = publish(town)

    result = pack(circular, [town.block1], furigana=True)
    pdf = read_back(result, tmp_path)

    assert pdf.kinds() == ["cover:1班", "circular", "sheet"]
    assert "しゅうしゅう" in pdf.pages[1]
    assert "こうみんかん" in pdf.pages[1].replace(" ", "")
    page_words = words(pdf.path, 2)
    bases = [word for word in page_words if word.text == "収集"]
    readings = [word for word in page_words if word.text == "しゅうしゅう"]
    assert len(bases) == 2  # the title and the body
    assert len(readings) == 2
    for base in bases:
        above = [
            reading
            for reading in readings
            if reading.x0 < base.x1
            and base.x0 < reading.x1  # overlapping columns
            and reading.y1 <= base.y0 + 0.5  # reading ends where the kanji start
            and base.y0 - reading.y1 < 6  # and sits right on top of them
        ]
        assert len(above) == 1, (base, readings)
        reading = above[0]
        # Centred over its kanji, and smaller than them.
        assert abs((reading.x0 + reading.x1) / 2 - (base.x0 + base.x1) / 2) < 2
        assert reading.y1 - reading.y0 < base.y1 - base.y0

    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "furigana-page"
    run(
        "pdftoppm",
        "-png",
        "-r",
        "150",
        "-f",
        "2",
        "-l",
        "2",
        "-singlefile",
        str(pdf.path),
        str(target),
    )
    assert (ARTIFACTS / "furigana-page.png").stat().st_size > 10_000


# --- The management command -------------------------------------------------------------


def test_print_pack_command_writes_the_same_pack(town: Town, tmp_path: Path) -> None:
    paper, _ = block_of_ten(town)
    circular = publish(town)
    output = tmp_path / "command.pdf"
    out = io.StringIO()

    call_command(
        "print_pack",
        str(circular.pk),
        "--block",
        str(town.block1.pk),
        "--furigana",
        "--large",
        "-o",
        str(output),
        "--base-url",
        BASE,
        stdout=out,
    )

    direct = pack(circular, [town.block1], furigana=True, large=True)
    written = output.read_bytes()
    assert written.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(written))
    assert len(reader.pages) == direct.pages
    assert f"{direct.pages} pages, {len(paper)} households" in out.getvalue()
    command_pdf = Pdf(path=output, pages=run("pdftotext", "-layout", str(output), "-").split("\f"))
    assert "しゅうしゅう" in command_pdf.pages[1]
    assert word_height(output, 2, "燃えるごみは") > 19.5
    assert qr_codes(output, len(reader.pages)) == {signoff_url(circular, town.block1)}


def test_print_pack_command_refuses_unknown_block(town: Town, tmp_path: Path) -> None:
    from django.core.management.base import CommandError

    circular = publish(town, blocks=[town.block1])
    with pytest.raises(CommandError):
        call_command(
            "print_pack",
            str(circular.pk),
            "--block",
            str(town.block2.pk),
            "-o",
            str(tmp_path / "x"),
        )
    assert not (tmp_path / "x").exists()
