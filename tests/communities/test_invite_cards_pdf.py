"""The printed invite cards: real PDFs, read back with poppler, pypdf and a QR decoder.

Nothing here is mocked: WeasyPrint renders with the installed BIZ UDGothic font, poppler
reads the fonts and text back, and zxing-cpp scans the QR codes off a 150 dpi raster, as a
phone camera would scan the sheet.
"""

from __future__ import annotations

import base64
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
LABELS = ["青木", "石川", "上田", "遠藤", "大野", "加藤", "木村", "小林", "佐々木", "鈴木"]
TEMPLATES_DIR = Path(__file__).parent / "templates"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("pdffonts", "pdftotext", "pdftoppm")),
    reason="poppler-utils (pdffonts, pdftotext, pdftoppm) is not installed",
)


@dataclass
class Rendered:
    path: Path
    cards: list[tuple[Household, IssuedInvite]]


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
    _run("pdftoppm", "-png", "-r", "150", pdf_path, out_dir / "page")
    return sorted(out_dir.glob("page-*.png"))


def test_ten_households_fill_two_a4_sheets(rendered: Rendered) -> None:
    reader = PdfReader(rendered.path)
    assert len(reader.pages) == 2 == -(-len(LABELS) // CARDS_PER_PAGE)
    for page in reader.pages:
        width_mm = float(page.mediabox.width) / 72 * 25.4
        height_mm = float(page.mediabox.height) / 72 * 25.4
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
    text = _run("pdftotext", "-layout", rendered.path, "-")
    flat = re.sub(r"\s+", "", text)
    assert town.community.name in flat
    for household, issued in rendered.cards:
        assert household.label in flat
        formatted = code_format(issued.code)
        assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", formatted)
        assert formatted in flat, f"code {formatted} missing from the printed text"
    assert "3班" in flat
    assert BASE_URL + "join/" in flat  # the fallback address for typing the code


def test_every_qr_opens_its_own_household(
    rendered: Rendered, tmp_path: Path, client: Client
) -> None:
    pages = _page_images(rendered.path, tmp_path)
    assert len(pages) == 2
    if artifacts := os.environ.get("KAIRAN_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(pages[0], Path(artifacts) / "invite-card-page1.png")

    decoded: list[str] = []
    for page in pages:
        with Image.open(page) as image:
            decoded += [barcode.text for barcode in zxingcpp.read_barcodes(image)]
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
    templates = [{**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], TEMPLATES_DIR]}]
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
