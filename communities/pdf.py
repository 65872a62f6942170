"""PDF rendering with WeasyPrint: the project's own templates, the embedded Japanese font,
and a URL fetcher that reaches nothing outside the document."""

from __future__ import annotations

import base64
import gc
import io
import logging
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import qrcode
from django.conf import settings
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


class PrintFontMissing(RuntimeError):
    """The Japanese print font is not installed: a PDF would show empty boxes."""


@cache
def print_font_status() -> str:
    """ "ok" when fontconfig resolves the print font to one of its files, else "missing"."""
    family = settings.KAIRAN_PRINT_FONT_FAMILY
    try:
        found = subprocess.run(  # noqa: S603
            ["fc-match", "--format=%{file}", family],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    expected = {str(path) for path in settings.KAIRAN_PRINT_FONT_FILES}
    return "ok" if found in expected else "missing"


def qr_png_data_uri(text: str, *, box_size: int = 8) -> str:
    """A QR code as an inline PNG data URI (nothing to fetch).

    PNG, not SVG: WeasyPrint lays out a page of SVG path QR codes several times slower.
    """
    image = qrcode.QRCode(
        error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_size, border=2
    )
    image.add_data(text)
    image.make(fit=True)
    buffer = io.BytesIO()
    image.make_image().save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_local = threading.local()


def _fetcher() -> Any:
    """One URL fetcher per thread. WeasyPrint's default builds an HTTPS context with the
    system's certificates for every document (a sixth of a small document's time); only
    ``data:`` URLs are allowed, so a bare context that trusts nothing is enough."""
    fetcher = getattr(_local, "fetcher", None)
    if fetcher is None:
        from weasyprint.urls import URLFetcher

        fetcher = URLFetcher(
            allowed_protocols={"data"},
            timeout=1,
            allow_redirects=False,
            ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        )
        _local.fetcher = fetcher
    return fetcher


def _font_config() -> Any:
    """One FontConfiguration per thread (the templates have no @font-face to add)."""
    config = getattr(_local, "font_config", None)
    if config is None:
        from weasyprint.text.fonts import FontConfiguration

        config = FontConfiguration()
        _local.font_config = config
    return config


@contextmanager
def _collector_paused() -> Iterator[None]:
    """WeasyPrint allocates boxes by the ten thousand; each full collection then walks every
    object of the process (Django, the furigana dictionary), a quarter of a pack's time.
    The boxes are freed by reference counting once the document is written."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def print_warm_in_background() -> threading.Thread | None:
    """Lay out a line of the print font once, in a background thread, at server start.

    A process's first PDF pays for loading WeasyPrint, fontconfig, Pango and the font's
    tables: about 2 s (measured on the 2-core machine), then 20–40 ms per small document.
    Warmed beside start-up, a helper's first 印刷 after a deploy or a worker restart costs
    what every later one does. Those caches are per process; the per-thread font
    configuration is made again by the request's own thread (cheap once warm).
    """
    if print_font_status() != "ok":
        return None

    def warm() -> None:
        from weasyprint import HTML

        family = settings.KAIRAN_PRINT_FONT_FAMILY
        try:
            print_font_face()
            html = f'<p style="font-family: {family!r}">回覧板<b>確認</b></p>'
            HTML(string=html, base_url="data:,", url_fetcher=_fetcher()).write_pdf()
        except Exception:
            logger.warning("warming the print font failed", exc_info=True)

    thread = threading.Thread(target=warm, name="print-warm", daemon=True)
    thread.start()
    return thread


def pdf_html(*, template: str, context: dict[str, object]) -> str:
    """The markup a template gives for print (what ``pdf_render_html`` lays out)."""
    if print_font_status() != "ok":
        raise PrintFontMissing(
            f"The print font {settings.KAIRAN_PRINT_FONT_FAMILY!r} is not installed "
            "(Debian package fonts-morisawa-bizud-gothic)."
        )
    return render_to_string(template, {**context, "print_font": settings.KAIRAN_PRINT_FONT_FAMILY})


def _document(html: str) -> Any:
    from weasyprint import HTML

    return HTML(string=html, base_url="data:,", url_fetcher=_fetcher()).render(
        font_config=_font_config()
    )


def pdf_render(*, template: str, context: dict[str, object]) -> bytes:
    """Render one of our templates to PDF. Only ``data:`` URLs may be loaded."""
    html = pdf_html(template=template, context=context)
    with _collector_paused():
        return bytes(_document(html).write_pdf())


Anchors = dict[str, tuple[float, float, float, float]]


def pdf_render_html(html: str) -> tuple[bytes, list[Anchors]]:
    """Render markup from ``pdf_html`` to PDF, and say where each element with an id lies on
    each page: its border box (left, top, right, bottom) in CSS pixels from the page's top
    left corner."""
    with _collector_paused():
        document = _document(html)
        anchors = [dict(page.anchors) for page in document.pages]
        return bytes(document.write_pdf()), anchors


def pdf_render_with_anchors(
    *, template: str, context: dict[str, object]
) -> tuple[bytes, list[Anchors]]:
    """``pdf_render``, with each page's anchors (see ``pdf_render_html``)."""
    return pdf_render_html(pdf_html(template=template, context=context))


@dataclass(frozen=True)
class FontFace:
    """What stamping text onto a rendered page needs from the print font: the glyph of each
    character and how far it advances, in font units."""

    units_per_em: int
    glyphs: dict[int, int]  # code point -> glyph id
    advances: dict[int, int]  # glyph id -> advance width

    def covers(self, text: str) -> bool:
        return all(ord(char) in self.glyphs for char in text)

    def width(self, text: str, size: float) -> float:
        """The advance of ``text`` at ``size`` (same unit as size); no kerning (the font has
        no GPOS table)."""
        units = sum(self.advances[self.glyphs[ord(char)]] for char in text)
        return units * size / self.units_per_em

    def glyph_ids(self, text: str) -> list[int]:
        return [self.glyphs[ord(char)] for char in text]


@cache
def print_font_face() -> FontFace:
    """The regular face of the print font (read once per process: a fifth of a second)."""
    from fontTools.ttLib import TTFont

    path = next(p for p in settings.KAIRAN_PRINT_FONT_FILES if "Bold" not in p.name)
    font = TTFont(str(path), lazy=True)
    glyphs_by_name = font.getBestCmap()
    order = {name: index for index, name in enumerate(font.getGlyphOrder())}
    metrics = font["hmtx"].metrics
    glyphs = {code: order[name] for code, name in glyphs_by_name.items()}
    advances = {order[name]: width for name, (width, _lsb) in metrics.items()}
    return FontFace(
        units_per_em=int(font["head"].unitsPerEm),
        glyphs=glyphs,
        advances=advances,
    )
