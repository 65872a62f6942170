"""The roster tables of a print pack, laid out once and stamped.

The helper's list on the cover and the 回覧表 have a row per household. WeasyPrint spends
milliseconds on each such row (four cells, a text box each), so a 50-household pack took
half a second. The rows of a roster differ only in their words, so the pack's document
lays out each table's first page with its header and no rows, and a page that is never
printed carries every character the rows' words use. A second, small document
(``roster_parts.html``, cached: it holds nothing of any one pack) has a continuation page
of each table (the repeated header alone) and one sample row of each distinct shape: its
borders and fixed words such as 回覧 or スマホで確認済み, with markers where the changing
words go. Each row is then that sample placed as a Form XObject at the row's position,
and its own words (number, household, note) are written where the markers say, in the
pack's embedded font, at the same size.

What this cannot place exactly as WeasyPrint would (a name too long for one line, a
character the font lacks, a row ending within a hair of the page's bottom edge) raises
``RosterUnfit``, and the pack is laid out in full instead: slower, never different.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from communities.pdf import (
    Anchors,
    FontFace,
    pdf_html,
    pdf_render_html,
    print_font_face,
    print_font_status,
)

PX_TO_PT = 0.75
# A row whose bottom lands this close to the page's bottom edge could go either way in
# WeasyPrint (half of a collapsed border counts there): lay such a pack out in full.
EDGE_GUARD_PX = 2.0
ROSTER_PARTS = ("cover", "sheet")


class RosterUnfit(Exception):
    """The stamped roster would not match the full layout: lay it out in full."""


@dataclass(frozen=True)
class RosterRow:
    shape: int  # index into the table's shapes
    texts: dict[str, str]  # marker name -> words written at that marker


@dataclass
class RosterPlan:
    """What the template needs to print stub tables, and what assembly needs afterwards.

    ``cover_shapes``/``sheet_shapes``: the distinct fixed contents of a row (read by the
    row markup like an entry); ``rows[(part, block_id)]``: the rows of each stamped table;
    ``carrier``: every character the stamped words use, printed on a page that is dropped,
    so that the embedded font subset has their glyphs.
    """

    cover_shapes: list[dict[str, Any]] = field(default_factory=list)
    sheet_shapes: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[tuple[str, int], list[RosterRow]] = field(default_factory=dict)
    carrier: str = ""

    @property
    def block_ids(self) -> set[int]:
        return {block_id for _part, block_id in self.rows}

    def parts_context(self) -> dict[str, Any]:
        return {"cover_samples": self.cover_samples, "sheet_samples": self.sheet_samples}

    @property
    def cover_samples(self) -> list[dict[str, Any]]:
        # Two of each: the last row of a table also carries the note under it.
        return [
            {"name": f"sample-cover-{index}{suffix}", "entry": shape, "last": bool(suffix)}
            for index, shape in enumerate(self.cover_shapes)
            for suffix in ("", "-last")
        ]

    @property
    def sheet_samples(self) -> list[dict[str, Any]]:
        return [
            {"name": f"sample-sheet-{index}", "entry": shape}
            for index, shape in enumerate(self.sheet_shapes)
        ]


def _words(text: str) -> str:
    """Text as HTML shows it: runs of ASCII white space become one space."""
    return re.sub(r"[ \t\n\r\f]+", " ", text).strip()


def _stampable(face: FontFace, text: str) -> bool:
    """Whether writing the characters one glyph each gives what WeasyPrint draws: all in
    the font, and none that shaping would join to its neighbour (combining marks, the
    font's tone-letter ligatures) or hide (format and control characters)."""
    return face.covers(text) and not any(
        unicodedata.category(char)[0] in "MC"
        or unicodedata.category(char) in ("Zl", "Zp")
        or "\u02e5" <= char <= "\u02e9"
        for char in text
    )


def _shape_index(shapes: list[dict[str, Any]], shape: dict[str, Any]) -> int:
    if shape not in shapes:
        shapes.append(shape)
    return shapes.index(shape)


def roster_plan(*, sections: list[dict[str, Any]], circulate: bool) -> RosterPlan | None:
    """Plan stamped rosters for the sections whose words the font can print; None when no
    section can be stamped (the template then lays every row out itself)."""
    if print_font_status() != "ok":
        return None  # the full layout says so (PrintFontMissing)
    face = print_font_face()
    plan = RosterPlan()
    chars: set[str] = set()
    for section in sections:
        entries = section["households"]
        words = [
            (
                _words(entry["household"].label),
                _words(entry["household"].helper_note),
            )
            for entry in entries
        ]
        texts = [text for pair in words for text in pair] + ["✓"]
        # No households: the table's "none" row. A character the font lacks: WeasyPrint
        # takes it from another font, which only the full layout reproduces.
        if not entries or not all(_stampable(face, text) for text in texts):
            continue
        cover, sheet = [], []
        for order, (entry, (label, note)) in enumerate(zip(entries, words, strict=True), 1):
            cover_shape = {"invite": bool(entry["invite"]), "joined": entry["joined"]}
            cover_label = label + " ✓" if entry["confirmed"] else label
            cover.append(
                RosterRow(
                    shape=_shape_index(plan.cover_shapes, cover_shape),
                    texts={"order": str(order), "label": cover_label, "note": note},
                )
            )
            sheet.append(
                RosterRow(
                    shape=_shape_index(plan.sheet_shapes, {"confirmed": entry["confirmed"]}),
                    texts={"order": str(order), "label": label},
                )
            )
            chars.update(str(order), cover_label, note)
        block_id = section["block"].pk
        plan.rows[("cover", block_id)] = cover
        if circulate:
            plan.rows[("sheet", block_id)] = sheet
    if not plan.rows:
        return None
    plan.carrier = "".join(sorted(chars - {" "}))
    return plan


# --- The parts document -----------------------------------------------------------------


@dataclass(frozen=True)
class RosterParts:
    pdf: bytes
    anchors: list[Anchors]


_parts_cache: dict[str, RosterParts] = {}
PARTS_CACHE_SIZE = 16


def roster_parts(*, plan: RosterPlan, context: dict[str, Any]) -> RosterParts:
    """The continuation pages and sample rows, rendered once per distinct markup (their
    words depend only on the language, the paper mode and the shapes in use)."""
    html = pdf_html(
        template="circulars/print/roster_parts.html", context={**context, **plan.parts_context()}
    )
    parts = _parts_cache.get(html)
    if parts is None:
        parts = RosterParts(*pdf_render_html(html))
        if len(_parts_cache) >= PARTS_CACHE_SIZE:
            _parts_cache.pop(next(iter(_parts_cache)))
        _parts_cache[html] = parts
    return parts


# --- Layout: where each row goes -------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    left: float  # the cell's content box, px
    right: float
    baseline: float  # relative to the sample row's top
    size: float  # font size, px
    centred: bool  # text-align: center


@dataclass(frozen=True)
class SampleRow:
    page: int  # its page in the parts document
    top: float
    height: float
    markers: dict[str, Marker]
    tail_bottom: float | None = None  # cover's last row: bottom of the note under the table


@dataclass(frozen=True)
class PlacedRow:
    sample: SampleRow
    top: float
    texts: dict[str, str]


@dataclass
class RosterPage:
    base: int  # the page the rows go on: in the pack's document if first, else in the parts
    first: bool
    rows: list[PlacedRow]


def _pages_of(anchors: list[Anchors]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, names in enumerate(anchors):
        for name in names:
            found.setdefault(name, index)
    return found


def _sample(anchors: list[Anchors], name: str, page_of: dict[str, int]) -> SampleRow:
    page = page_of[name]
    found = anchors[page]
    _left, top, _right, bottom = found[f"{name}-row"]
    markers = {}
    prefix = f"{name}-mark-"
    for key, (left, mark_top, right, baseline) in found.items():
        if key.startswith(prefix):
            # "order" or "order-centred" (the marker says how its cell aligns the words);
            # the marker is 1em high and sits on the baseline.
            marker, _sep, align = key.removeprefix(prefix).partition("-")
            markers[marker] = Marker(
                left=left,
                right=right,
                baseline=baseline - top,
                size=baseline - mark_top,
                centred=align == "centred",
            )
    tail = found.get(f"{name}-tail")
    return SampleRow(
        page=page,
        top=top,
        height=bottom - top,
        markers=markers,
        tail_bottom=tail[3] - top if tail else None,
    )


def _check_fits(face: FontFace, row: RosterRow, sample: SampleRow) -> None:
    for name, text in row.texts.items():
        marker = sample.markers[name]
        if text and face.width(text, marker.size) > marker.right - marker.left - 0.5:
            raise RosterUnfit(f"{text!r} needs more than one line")


def roster_layout(
    *, plan: RosterPlan, pack: list[Anchors], parts: list[Anchors]
) -> dict[tuple[str, int], list[RosterPage]]:
    """Break each roster into pages as WeasyPrint would; raise RosterUnfit when unsure."""
    face = print_font_face()
    pack_pages, parts_pages = _pages_of(pack), _pages_of(parts)
    page_bottom = pack[pack_pages["page-bottom"]]["page-bottom"][3]
    samples = {
        part: [
            _sample(parts, sample["name"], parts_pages)
            for sample in (plan.cover_samples if part == "cover" else plan.sheet_samples)
        ]
        for part in ROSTER_PARTS
    }
    layouts: dict[tuple[str, int], list[RosterPage]] = {}
    for (part, block_id), rows in plan.rows.items():
        # The cover has two samples a shape: the last row also carries the note under it.
        step = 2 if part == "cover" else 1
        head = f"head-{part}-{block_id}"
        more = f"head-{part}-more"
        pages = [RosterPage(base=pack_pages[head], first=True, rows=[])]
        y = pack[pack_pages[head]][head][3]
        for number, row in enumerate(rows):
            last = number == len(rows) - 1
            sample = samples[part][row.shape * step + (step - 1 if last else 0)]
            _check_fits(face, row, sample)

            def edges(top: float, sample: SampleRow = sample) -> list[float]:
                bottom = [top + sample.height]
                return bottom + ([top + sample.tail_bottom] if sample.tail_bottom else [])

            if any(abs(edge - page_bottom) < EDGE_GUARD_PX for edge in edges(y)):
                raise RosterUnfit("a row ends at the page's bottom edge")
            if y + sample.height > page_bottom:
                if not pages[-1].rows:
                    raise RosterUnfit("no row fits under the header")
                pages.append(RosterPage(base=parts_pages[more], first=False, rows=[]))
                y = parts[parts_pages[more]][more][3]
                if any(edge > page_bottom - EDGE_GUARD_PX for edge in edges(y)):
                    raise RosterUnfit("a row taller than a page")
            elif any(edge > page_bottom for edge in edges(y)):
                raise RosterUnfit("the note under the table would go to the next page")
            pages[-1].rows.append(PlacedRow(sample=sample, top=y, texts=row.texts))
            y += sample.height
        layouts[(part, block_id)] = pages
    return layouts


# --- Stamping: the rows onto the pages -------------------------------------------------


def _width_glyphs(widths: Any) -> set[int]:
    """The glyph ids a CIDFont's /W array lists (the glyphs its subset embeds)."""
    glyphs: set[int] = set()
    items = list(widths)
    index = 0
    while index < len(items):
        first = int(items[index])
        following = items[index + 1]
        if isinstance(following, list):
            glyphs.update(range(first, first + len(following)))
            index += 2
        else:
            glyphs.update(range(first, int(following) + 1))
            index += 3
    return glyphs


def _regular_font(resources: Any) -> tuple[Any, set[int]]:
    """The print font's regular face in a document's resources, and the glyphs it embeds."""
    wanted = settings.KAIRAN_PRINT_FONT_FAMILY.replace(" ", "-")
    for reference in resources["/Font"].values():
        font = reference.get_object()
        if str(font["/BaseFont"]).split("+")[-1] == wanted:
            descendant = font["/DescendantFonts"][0].get_object()
            return reference, _width_glyphs(descendant["/W"])
    raise RosterUnfit("the regular face is not in the document")


FONT_NAME = "/KairanRosterFont"


class RosterStamper:
    """Adds roster pages to a pypdf writer: sample rows as Form XObjects, words as text in
    the pack document's own embedded subset of the print font."""

    def __init__(self, *, writer: Any, pack: Any, parts: Any) -> None:
        self.writer = writer
        self.pack = pack
        self.parts = parts
        self.face = print_font_face()
        self.forms: dict[int, tuple[Any, Any]] = {}  # parts page -> (name, reference)
        reference, self.embedded = _regular_font(pack.pages[0]["/Resources"])
        self.font = reference.clone(writer)
        self._save = self._stream(b"q")
        self._restore = self._stream(b"Q")

    def _stream(self, data: bytes) -> Any:
        from pypdf.generic import DecodedStreamObject

        stream = DecodedStreamObject()
        stream.set_data(data)
        return self.writer._add_object(stream.flate_encode() if len(data) > 64 else stream)

    def check(self, layouts: dict[tuple[str, int], list[RosterPage]]) -> None:
        """Every glyph the words need must be in the embedded subset."""
        needed: set[int] = set()
        for pages in layouts.values():
            for page in pages:
                for row in page.rows:
                    for text in row.texts.values():
                        needed.update(self.face.glyph_ids(text))
        if not needed <= self.embedded:
            raise RosterUnfit("the words use glyphs the embedded subset lacks")

    def _form(self, page_index: int) -> tuple[Any, Any]:
        """A sample row's page as a Form XObject (drawn moved onto each row)."""
        from pypdf.generic import ArrayObject, DecodedStreamObject, FloatObject, NameObject

        if page_index not in self.forms:
            sample = self.parts.pages[page_index]
            form = DecodedStreamObject()
            form.set_data(sample.get_contents().get_data())
            form[NameObject("/Type")] = NameObject("/XObject")
            form[NameObject("/Subtype")] = NameObject("/Form")
            form[NameObject("/BBox")] = ArrayObject(
                [FloatObject(value) for value in sample.mediabox]
            )
            form[NameObject("/Resources")] = sample.raw_get("/Resources").clone(self.writer)
            self.forms[page_index] = (
                NameObject(f"/KairanRow{page_index}"),
                self.writer._add_object(form.flate_encode()),
            )
        return self.forms[page_index]

    def _words(self, row: PlacedRow) -> list[str]:
        ops = []
        for name, words in row.texts.items():
            if not words:
                continue
            marker = row.sample.markers[name]
            size = int(marker.size * 1024 + 1e-6) / 1024  # as Pango sizes it
            x = marker.left
            if marker.centred:
                x = (marker.left + marker.right - self.face.width(words, size)) / 2
            glyphs = "".join(f"{glyph:04x}" for glyph in self.face.glyph_ids(words))
            ops.append(
                f"{FONT_NAME} {size:f} Tf "
                f"1 0 0 -1 {x:f} {row.top + marker.baseline:f} Tm <{glyphs}> Tj"
            )
        return ops

    def add(self, pages: list[RosterPage]) -> None:
        from pypdf.generic import ArrayObject, DictionaryObject, NameObject

        for roster_page in pages:
            source = self.pack if roster_page.first else self.parts
            page = self.writer.add_page(source.pages[roster_page.base])
            resources = page["/Resources"]
            for kind in ("/XObject", "/Font"):
                if kind not in resources:
                    resources[NameObject(kind)] = DictionaryObject()
            resources["/Font"][NameObject(FONT_NAME)] = self.font
            forms, words = [], []
            for row in roster_page.rows:
                name, reference = self._form(row.sample.page)
                resources["/XObject"][name] = reference
                # The sample's page is in PDF points, y up: move it down onto this row.
                shift = (row.top - row.sample.top) * PX_TO_PT
                forms.append(f"q 1 0 0 1 0 {-shift:f} cm {name} Do Q")
                words += self._words(row)
            height = float(page.mediabox.height)
            stream = self._stream(
                "\n".join(
                    [
                        *forms,
                        # As WeasyPrint draws: CSS pixels, y down, from the top left corner.
                        f"q 1 0 0 -1 0 {height:f} cm {PX_TO_PT} 0 0 {PX_TO_PT} 0 0 cm",
                        "0 0 0 rg BT",
                        *words,
                        "ET Q",
                    ]
                ).encode()
            )
            contents = page.raw_get("/Contents")
            resolved = contents.get_object()
            existing = list(resolved) if isinstance(resolved, ArrayObject) else [contents]
            # WeasyPrint's stream leaves its page transform in place: save and restore the
            # graphics state around it, so the rows start from the page's own coordinates.
            page[NameObject("/Contents")] = ArrayObject(
                [self._save, *existing, self._restore, stream]
            )
