"""The printed invite cards: real PDFs, read back with poppler, pypdf and a QR decoder.

Nothing here is mocked: WeasyPrint renders with the installed BIZ UDGothic font, poppler
reads the fonts and text back, and zxing-cpp scans the QR codes off a 150 dpi raster, as a
phone camera would scan the sheet.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import zxingcpp
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings
from PIL import Image
from pypdf import PdfReader

from communities import pdf as print_pdf
from communities.invite_cards import CARDS_PER_PAGE, invite_cards_pdf
from communities.models import Household
from communities.services import IssuedInvite, household_invites_issue_for_block
from communities.tokens import code_format
from tests.conftest import Town
from tests.factories import BlockFactory, HouseholdFactory

BASE_URL = "https://kairan.example.jp/"
# Surnames as on a real board, and one long label that has to wrap on its card.
LABELS = [
    "青木",
    "石川（コーポさくら201号室）",
    "上田",
    "遠藤",
    "大野",
    "加藤",
    "木村",
    "小林",
    "佐々木",
    "鈴木",
]
TEMPLATES_DIR = Path(__file__).parent / "templates"
RASTER_DPI = 150
QR_MIN_MM = 30.0
PT_PER_MM = 72 / 25.4

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("pdffonts", "pdftotext", "pdftoppm")),
    reason="poppler-utils (pdffonts, pdftotext, pdftoppm) is not installed",
)


@dataclass
class Rendered:
    path: Path
    cards: list[tuple[Household, IssuedInvite]]


@dataclass(frozen=True)
class Box:
    """A rectangle on a page, in PDF points from the top-left corner."""

    page: int
    x0: float
    y0: float
    x1: float
    y1: float
    text: str = ""

    def overlaps(self, other: Box, slack: float = 0.5) -> bool:
        return (
            self.page == other.page
            and min(self.x1, other.x1) - max(self.x0, other.x0) > slack
            and min(self.y1, other.y1) - max(self.y0, other.y0) > slack
        )


@dataclass(frozen=True)
class Cell:
    """One card's slot on the sheet: 2 columns by 4 rows of A4."""

    page: int
    row: int
    col: int

    @staticmethod
    def of(box: Box, width: float, height: float) -> Cell:
        centre_x, centre_y = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        return Cell(box.page, int(centre_y // (height / 4)), int(centre_x // (width / 2)))

    @staticmethod
    def for_card(index: int) -> Cell:
        slot = index % CARDS_PER_PAGE
        return Cell(index // CARDS_PER_PAGE, slot // 2, slot % 2)

    def contains(self, box: Box, width: float, height: float, slack: float = 0.5) -> bool:
        x0, y0 = self.col * width / 2, self.row * height / 4
        return (
            box.x0 >= x0 - slack
            and box.y0 >= y0 - slack
            and box.x1 <= x0 + width / 2 + slack
            and box.y1 <= y0 + height / 4 + slack
        )


@pytest.fixture
def rendered(town: Town, tmp_path: Path) -> Rendered:
    """Ten households in one block, issued and printed as the block leader's button does."""
    block = BlockFactory.create(community=town.community, name="3班", position=3)
    for position, label in enumerate(LABELS):
        HouseholdFactory.create(block=block, label=label, circulation_order=position)
    cards = household_invites_issue_for_block(block=block, created_by=town.leader1)
    path = tmp_path / "cards.pdf"
    path.write_bytes(invite_cards_pdf(community=town.community, cards=cards, base_url=BASE_URL))
    return Rendered(path=path, cards=cards)


def _run(*args: str | Path) -> str:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def _page_images(pdf_path: Path, out_dir: Path) -> list[Path]:
    _run("pdftoppm", "-png", "-r", str(RASTER_DPI), pdf_path, out_dir / "page")
    return sorted(out_dir.glob("page-*.png"))


def _words(pdf_path: Path) -> tuple[list[Box], float, float]:
    """Every word poppler extracts, with its box; and the page size in points."""
    xhtml = _run("pdftotext", "-bbox", pdf_path, "-")
    words: list[Box] = []
    width = height = 0.0
    for page, chunk in enumerate(xhtml.split("<page ")[1:]):
        size = re.match(r'width="([\d.]+)" height="([\d.]+)"', chunk)
        assert size
        width, height = float(size[1]), float(size[2])
        for match in re.finditer(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>',
            chunk,
        ):
            x0, y0, x1, y1 = (float(match[i]) for i in range(1, 5))
            words.append(Box(page, x0, y0, x1, y1, html.unescape(match[5])))
    return words, width, height


def _qr_codes(pages: list[Path]) -> list[tuple[str, Box]]:
    """Decode every QR on the rasterised pages; boxes converted back to PDF points."""
    found: list[tuple[str, Box]] = []
    scale = 72 / RASTER_DPI
    for page_number, page in enumerate(pages):
        with Image.open(page) as image:
            for barcode in zxingcpp.read_barcodes(image):
                corners = barcode.position
                xs = [p.x for p in (corners.top_left, corners.top_right, corners.bottom_left)]
                xs.append(corners.bottom_right.x)
                ys = [p.y for p in (corners.top_left, corners.top_right, corners.bottom_left)]
                ys.append(corners.bottom_right.y)
                box = Box(
                    page_number,
                    min(xs) * scale,
                    min(ys) * scale,
                    max(xs) * scale,
                    max(ys) * scale,
                    barcode.text,
                )
                found.append((barcode.text, box))
    return found


def test_ten_households_fill_two_a4_sheets(rendered: Rendered) -> None:
    reader = PdfReader(rendered.path)
    assert len(reader.pages) == 2 == -(-len(LABELS) // CARDS_PER_PAGE)
    for page in reader.pages:
        width_mm = float(page.mediabox.width) / PT_PER_MM
        height_mm = float(page.mediabox.height) / PT_PER_MM
        assert (round(width_mm), round(height_mm)) == (210, 297)


def test_the_japanese_font_is_embedded(rendered: Rendered) -> None:
    rows = _run("pdffonts", rendered.path).splitlines()[2:]  # skip the two header lines
    assert rows, "the PDF has no fonts at all"
    fonts = [row.split() for row in rows]
    # "ABCDEF+BIZ-UDGothic": a subset tag, then the PostScript name.
    names = {font[0].split("+")[-1].replace("-", "") for font in fonts}
    assert "BIZUDGothic" in names, rows
    for font in fonts:
        # name type [encoding] emb sub uni object-id: the flags sit before the 2 id fields.
        emb, _sub, _uni = font[-5:-2]
        assert emb == "yes", f"font not embedded: {' '.join(font)}"
        assert "Type 3" not in " ".join(font), f"Type 3 font: {' '.join(font)}"


def test_the_cards_show_community_households_and_codes(rendered: Rendered, town: Town) -> None:
    flat = re.sub(r"\s+", "", _run("pdftotext", rendered.path, "-"))
    assert town.community.name in flat
    assert BASE_URL + "join/" in flat  # the fallback address for typing the code

    # Card by card: each slot carries its own household's name and its own code.
    words, width, height = _words(rendered.path)
    by_cell: dict[Cell, list[Box]] = {}
    for word in words:
        by_cell.setdefault(Cell.of(word, width, height), []).append(word)
    assert len(by_cell) == len(LABELS)
    for index, (household, issued) in enumerate(rendered.cards):
        card = sorted(by_cell[Cell.for_card(index)], key=lambda w: (round(w.y0), w.x0))
        text = "".join(word.text for word in card)
        formatted = code_format(issued.code)
        assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", formatted)
        assert town.community.name in text
        assert f"{household.label}様" in text
        assert "3班" in text
        assert formatted in text, f"card {index}: code {formatted} missing from {text}"


def test_every_qr_opens_its_own_household(
    rendered: Rendered, tmp_path: Path, client: Client
) -> None:
    pages = _page_images(rendered.path, tmp_path)
    assert len(pages) == 2
    if artifacts := os.environ.get("KAIRAN_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(pages[0], Path(artifacts) / "invite-card-page1.png")

    decoded = [text for text, _ in _qr_codes(pages)]
    expected = {BASE_URL + f"join/{issued.token}/" for _, issued in rendered.cards}
    assert len(decoded) == len(LABELS)
    assert len(set(decoded)) == len(decoded), "two cards carry the same QR"
    assert set(decoded) == expected

    label_by_token = {issued.token: household.label for household, issued in rendered.cards}
    for url in decoded:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}/" == BASE_URL
        match = re.fullmatch(r"/join/([A-Za-z0-9_-]+)/", parts.path)
        assert match, url
        response = client.get(parts.path)
        assert response.status_code == 200
        assert label_by_token[match[1]] in response.content.decode()


def test_the_layout_keeps_text_and_qr_inside_each_card(rendered: Rendered, tmp_path: Path) -> None:
    """Nothing cut off or overprinted, and each QR big enough to scan off the sheet."""
    words, width, height = _words(rendered.path)
    for word in words:
        assert Cell.of(word, width, height).contains(word, width, height), f"spills: {word}"
    for i, first in enumerate(words):
        for second in words[i + 1 :]:
            assert not first.overlaps(second), f"overprinted: {first.text!r} / {second.text!r}"

    codes = _qr_codes(_page_images(rendered.path, tmp_path))
    token_cell = {
        BASE_URL + f"join/{issued.token}/": Cell.for_card(index)
        for index, (_, issued) in enumerate(rendered.cards)
    }
    for text, qr in codes:
        assert Cell.of(qr, width, height) == token_cell[text], "a QR sits on another card"
        assert token_cell[text].contains(qr, width, height)
        side_mm = min(qr.x1 - qr.x0, qr.y1 - qr.y0) / PT_PER_MM
        assert side_mm >= QR_MIN_MM, f"QR only {side_mm:.1f} mm wide"
        for word in words:
            assert not word.overlaps(qr), f"text over the QR: {word.text!r}"


# --- The URL fetcher ------------------------------------------------------------------


class ConnectionTrap:
    """A TCP listener on loopback that records every connection made to it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.server.close()


@pytest.fixture
def trap() -> Iterator[ConnectionTrap]:
    listener = ConnectionTrap()
    yield listener
    listener.close()


@pytest.fixture
def probe_templates() -> Iterator[None]:
    engine: dict[str, Any] = dict(settings.TEMPLATES[0])
    templates = [{**engine, "DIRS": [*engine["DIRS"], TEMPLATES_DIR]}]
    with override_settings(TEMPLATES=templates):
        yield


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def _image_count(pdf: bytes) -> int:
    return sum(len(page.images) for page in PdfReader(io.BytesIO(pdf)).pages)


@pytest.mark.usefixtures("probe_templates")
def test_a_data_url_image_is_embedded() -> None:
    """The control: the probe template does embed an image when the URL is allowed."""
    data_url = "data:image/png;base64," + base64.b64encode(_png_bytes()).decode()
    pdf = print_pdf.pdf_render(
        template="tests_print/fetch_probe.html", context={"images": [data_url]}
    )
    assert _image_count(pdf) == 1


@pytest.mark.usefixtures("probe_templates")
def test_the_fetcher_reaches_no_network_and_no_file(
    trap: ConnectionTrap, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local_png = tmp_path / "secret.png"
    local_png.write_bytes(_png_bytes())
    local_css = tmp_path / "secret.css"
    local_css.write_text("body { background: url(data:image/png;base64,AAAA); }")
    http_png = f"http://127.0.0.1:{trap.port}/x.png"
    refused = [
        http_png,
        local_png.as_uri(),
        "file:///etc/passwd",
        f"http://127.0.0.1:{trap.port}/style.css",
        local_css.as_uri(),
    ]
    with caplog.at_level(logging.ERROR, logger="weasyprint"):
        pdf = print_pdf.pdf_render(
            template="tests_print/fetch_probe.html",
            context={
                "images": [http_png, local_png.as_uri(), "file:///etc/passwd"],
                "stylesheets": [f"http://127.0.0.1:{trap.port}/style.css", local_css.as_uri()],
            },
        )

    assert pdf.startswith(b"%PDF")
    assert _image_count(pdf) == 0, "a file: or http: image made it into the PDF"
    assert trap.connections == 0, "WeasyPrint connected to the local server"
    messages = "\n".join(record.getMessage() for record in caplog.records)
    for url in refused:
        assert url in messages
    assert messages.count("disallowed protocol") == len(refused)


# --- The font check -------------------------------------------------------------------


@pytest.fixture
def font_missing() -> Iterator[None]:
    print_pdf.print_font_status.cache_clear()
    with override_settings(KAIRAN_PRINT_FONT_FAMILY="No Such Font"):
        yield
    print_pdf.print_font_status.cache_clear()


def test_the_real_font_is_found() -> None:
    print_pdf.print_font_status.cache_clear()
    assert print_pdf.print_font_status() == "ok"


@pytest.mark.usefixtures("font_missing")
def test_a_missing_font_refuses_to_print(town: Town) -> None:
    assert print_pdf.print_font_status() == "missing"
    with pytest.raises(print_pdf.PrintFontMissing, match="No Such Font"):
        print_pdf.pdf_render(
            template="communities/print/invite_cards.html",
            context={"community": town.community, "pages": [], "join_url": BASE_URL},
        )


@pytest.mark.usefixtures("font_missing")
def test_a_missing_font_fails_the_system_check() -> None:
    with pytest.raises(SystemCheckError, match=r"kairan\.E001"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_printing_is_warmed_in_the_background(caplog: pytest.LogCaptureFixture) -> None:
    """What the page servers do at start (config/wsgi.py): the font's tables are read and
    a line laid out before the first helper prints, off the request's thread."""
    print_pdf.print_font_face.cache_clear()
    with caplog.at_level(logging.WARNING, logger="communities.pdf"):
        thread = print_pdf.print_warm_in_background()
        assert thread is not None and thread.name == "print-warm"
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert print_pdf.print_font_face.cache_info().currsize == 1
    assert "warming the print font failed" not in caplog.text


@pytest.mark.usefixtures("font_missing")
def test_nothing_is_warmed_without_the_font() -> None:
    assert print_pdf.print_warm_in_background() is None
