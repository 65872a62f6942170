"""PDF rendering with WeasyPrint: the project's own templates, the embedded Japanese font,
and a URL fetcher that reaches nothing outside the document."""

from __future__ import annotations

import base64
import io
import logging
import subprocess
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


def _document(*, template: str, context: dict[str, object]) -> Any:
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    if print_font_status() != "ok":
        raise PrintFontMissing(
            f"The print font {settings.KAIRAN_PRINT_FONT_FAMILY!r} is not installed "
            "(Debian package fonts-morisawa-bizud-gothic)."
        )
    html = render_to_string(template, {**context, "print_font": settings.KAIRAN_PRINT_FONT_FAMILY})
    fetcher = URLFetcher(allowed_protocols={"data"}, timeout=1, allow_redirects=False)
    return HTML(string=html, base_url="data:,", url_fetcher=fetcher).render()


def pdf_render(*, template: str, context: dict[str, object]) -> bytes:
    """Render one of our templates to PDF. Only ``data:`` URLs may be loaded."""
    return bytes(_document(template=template, context=context).write_pdf())


def pdf_render_with_anchors(
    *, template: str, context: dict[str, object]
) -> tuple[bytes, list[set[str]]]:
    """Render to PDF and say which element ids start on each page (to split the pages)."""
    document = _document(template=template, context=context)
    anchors = [set(page.anchors) for page in document.pages]
    return bytes(document.write_pdf()), anchors
