"""The print pack: what a helper carries to a block, as one A4 PDF.

For each block: a cover slip (which households get which pages), the circular in large
print with a QR code to the web version, and, depending on the paper mode, the 回覧表
sign-off sheet (回覧) and/or one copy per paper household (各戸配布), where a household
that has not joined gets its invite QR so a family member can bring it online.

WeasyPrint renders each distinct document once (the circular once for all copies); copies
and attached PDFs are assembled with pypdf, which shares identical pages instead of
laying them out again. The cover's list and the 回覧表 are laid out once per row shape
and stamped row by row (circulars/print_roster.py).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone, translation

from circulars.models import Answer, AttachmentKind, Circular, CircularKind
from circulars.paper import paper_distribution, paper_receipts
from circulars.print_roster import (
    RosterPage,
    RosterParts,
    RosterPlan,
    RosterStamper,
    RosterUnfit,
    roster_layout,
    roster_parts,
    roster_plan,
)
from communities.models import (
    Block,
    InviteKind,
    Member,
    PaperDistribution,
    RoleAssignment,
    RoleKind,
)
from communities.pdf import Anchors, pdf_render, pdf_render_with_anchors, qr_png_data_uri
from communities.selectors import user_display_name
from communities.services import household_invite_issue
from communities.tokens import code_format

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackResult:
    pdf: bytes
    pages: int
    household_ids: list[int]
    unmerged: list[str]  # attached PDFs that could not be appended (listed on the circular)


def _image_uri(attachment: Any) -> str:
    import base64

    with attachment.file.open("rb") as handle:
        return "data:image/jpeg;base64," + base64.b64encode(handle.read()).decode()


def _render_circular(
    *, circular: Circular, base: str, furigana: bool, large: bool, unmerged: list[str]
) -> bytes:
    """The circular's own pages, cached: every block's pack and every copy share them."""
    from django.core.cache import cache

    attachment_ids = list(circular.attachments.values_list("pk", flat=True))
    key = (
        "print-circular:"
        + hashlib.sha256(
            repr(
                (
                    circular.pk,
                    circular.revision,
                    circular.updated_at.isoformat(),
                    circular.community.name,
                    circular.community.contact,
                    user_display_name(user=circular.author) if circular.author else "",
                    sorted((circular.furigana_overrides or {}).items()),
                    attachment_ids,
                    unmerged,
                    base,
                    furigana,
                    large,
                )
            ).encode()
        ).hexdigest()
    )
    try:
        cached = cache.get(key)
    except Exception:
        cached = None
    if cached is not None:
        return bytes(cached)
    pdf = _render_circular_uncached(
        circular=circular, base=base, furigana=furigana, large=large, unmerged=unmerged
    )
    try:
        cache.set(key, pdf, timeout=60 * 60 * 24)
    except Exception:
        logger.warning("print cache unavailable", exc_info=True)
    return pdf


def _render_circular_uncached(
    *, circular: Circular, base: str, furigana: bool, large: bool, unmerged: list[str]
) -> bytes:
    from circulars.furigana import circular_ruby_html

    title_html = body_html = None
    if furigana:
        title_html, body_html = circular_ruby_html(circular=circular)
    attachments = list(circular.attachments.all())
    web_url = base + reverse(
        "circulars:detail", kwargs={"slug": circular.community.slug, "circular_id": circular.pk}
    )
    return pdf_render(
        template="circulars/print/circular.html",
        context={
            "circular": circular,
            "community": circular.community,
            "issuer": user_display_name(user=circular.author) if circular.author else "",
            "title_html": title_html,
            "body_html": body_html,
            "images": [_image_uri(a) for a in attachments if a.kind == AttachmentKind.IMAGE],
            # Only those that really follow; the unmerged ones are listed separately below.
            "pdf_names": [
                a.original_name
                for a in attachments
                if a.kind == AttachmentKind.PDF and a.original_name not in unmerged
            ],
            "unmerged": unmerged,
            "web_qr": qr_png_data_uri(web_url, box_size=5),
            "web_url": web_url,
            "large": large,
            "printed_on": timezone.localdate(),
        },
    )


def _attachment_readers(circular: Circular) -> tuple[list[Any], list[str]]:
    from pypdf import PdfReader

    readers, failed = [], []
    for attachment in circular.attachments.filter(kind=AttachmentKind.PDF):
        try:
            with attachment.file.open("rb") as handle:
                reader = PdfReader(io.BytesIO(handle.read()))
                _ = len(reader.pages)
            readers.append(reader)
        except Exception:
            logger.warning(
                "attachment %s cannot be merged into the pack", attachment.pk, exc_info=True
            )
            failed.append(attachment.original_name)
    return readers, failed


PART_PREFIXES = ("cover-", "sheet-", "answers-", "label-", "slip-", "carrier")
# Questions per table of the 回覧 reply sheet: more would make columns too narrow to tick.
SHEET_QUESTIONS_PER_TABLE = 4


def _printed_text(text: str, furigana: bool) -> str:
    """A question or option for paper: with furigana above the kanji when asked for."""
    if not furigana:
        return text
    from circulars.furigana import furigana_segments, ruby_html

    return ruby_html(furigana_segments(text))


def _slip_questions(circular: Circular, furigana: bool) -> list[dict[str, Any]]:
    """The circular's questions as the reply slip prints them (readings analysed once)."""
    from circulars.questions import questions_for

    return [
        {
            "number": number,
            "kind": question.kind,
            "prompt": _printed_text(question.prompt, furigana),
            "choices": [_printed_text(choice, furigana) for choice in question.choices],
        }
        for number, question in enumerate(questions_for(circular=circular), start=1)
    ]


def _block_leader_names(block: Block) -> list[str]:
    """Who collects the slips: the block's current 班長, by the name they go by."""
    return [
        user_display_name(user=role.user)
        for role in RoleAssignment.objects.filter(
            block=block, role=RoleKind.BLOCK_LEADER, ended_at__isnull=True
        )
        .select_related("user")
        .order_by("pk")
    ]


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


@dataclass
class _Extras:
    """The pack's own pages (covers, sheets, invite labels, reply slips), split into parts;
    with stamped rosters, also the parts document they are assembled from."""

    reader: Any
    anchors: list[Anchors]
    parts: dict[str, list[int]]
    roster: RosterPlan | None
    roster_parts: RosterParts | None

    @classmethod
    def render(cls, context: dict[str, Any], roster: RosterPlan | None) -> _Extras:
        from pypdf import PdfReader

        pdf, anchors = pdf_render_with_anchors(
            template="circulars/print/pack_extras.html",
            context={
                **context,
                "roster": roster,
                "roster_blocks": roster.block_ids if roster else set(),
            },
        )
        # Each part starts with an element id (cover-N, sheet-N, answers-N, label-N, slip-N,
        # carrier); it runs until the next one starts, so a long 回覧表 or reply slip may
        # take several pages.
        parts: dict[str, list[int]] = {}
        current = ""
        for index, names in enumerate(anchors):
            starts = sorted(name for name in names if name.startswith(PART_PREFIXES))
            if starts:
                current = starts[0]
            parts.setdefault(current, []).append(index)
        return cls(
            reader=PdfReader(io.BytesIO(pdf)),
            anchors=anchors,
            parts=parts,
            roster=roster,
            roster_parts=roster_parts(plan=roster, context=context) if roster else None,
        )


def _add_circular(writer: Any, circular_pdf: Any, readers: list[Any]) -> None:
    for page in circular_pdf.pages:
        writer.add_page(page)
    for reader in readers:
        for page in reader.pages:
            writer.add_page(page)


def _assemble(
    *,
    extras: _Extras,
    sections: list[dict[str, Any]],
    add_circular: Callable[[Any], None],
    circulate: bool,
    each: bool,
) -> Any:
    """Put the pages in the order a helper hands them out (raises RosterUnfit)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    layouts: dict[tuple[str, int], list[RosterPage]] = {}
    stamper = None
    if extras.roster is not None and extras.roster_parts is not None:
        for part, block_id in extras.roster.rows:
            if len(extras.parts.get(f"{part}-{block_id}", [])) != 1:
                raise RosterUnfit("the header of a roster does not fit on one page")
        layouts = roster_layout(
            plan=extras.roster, pack=extras.anchors, parts=extras.roster_parts.anchors
        )
        stamper = RosterStamper(
            writer=writer,
            pack=extras.reader,
            parts=PdfReader(io.BytesIO(extras.roster_parts.pdf)),
        )
        stamper.check(layouts)

    def add_part(key: str, roster_key: tuple[str, int]) -> None:
        if stamper is not None and roster_key in layouts:
            stamper.add(layouts[roster_key])
            return
        for index in extras.parts.get(key, []):
            writer.add_page(extras.reader.pages[index])

    for section in sections:
        block_id = section["block"].pk
        add_part(f"cover-{block_id}", ("cover", block_id))
        if circulate:
            add_circular(writer)
            add_part(f"sheet-{block_id}", ("sheet", block_id))
            for index in extras.parts.get(f"answers-{block_id}", []):
                writer.add_page(extras.reader.pages[index])
        if each:
            for entry in section["households"]:
                household_id = entry["household"].pk
                for index in extras.parts.get(f"label-{household_id}", []):
                    writer.add_page(extras.reader.pages[index])
                add_circular(writer)
                for index in extras.parts.get(f"slip-{household_id}", []):
                    writer.add_page(extras.reader.pages[index])
    return writer


def print_pack_pdf(
    *,
    circular: Circular,
    blocks: list[Block],
    base_url: str,
    printed_by: User | None,
    furigana: bool = False,
    large: bool = False,
    invite_block_ids: frozenset[int] | None = None,
) -> PackResult:
    """Build the pack for the given blocks (one block, or all of them in order).

    ``invite_block_ids``: blocks whose unjoined households get an invite QR on their copy
    (None: every block). Elsewhere the copy says to ask the 班長 instead.
    """
    if circular.kind == CircularKind.SAFETY:  # a door-to-door checklist instead
        from circulars.safety_print import safety_checklist_pdf

        return safety_checklist_pdf(
            circular=circular, blocks=blocks, base_url=base_url, printed_by=printed_by
        )
    from pypdf import PdfReader

    base = base_url.rstrip("/")
    with translation.override("ja"):
        readers, unmerged = _attachment_readers(circular)
        circular_pdf = PdfReader(
            io.BytesIO(
                _render_circular(
                    circular=circular, base=base, furigana=furigana, large=large, unmerged=unmerged
                )
            )
        )
        mode = paper_distribution(circular=circular)
        circulate = mode in (PaperDistribution.CIRCULATE, PaperDistribution.BOTH)
        each = mode in (PaperDistribution.EACH, PaperDistribution.BOTH)
        # A circular that asks: a tear-off reply slip ends each household's copy, and the
        # 回覧 copy carries a reply sheet with a row per household.
        asked = _slip_questions(circular, furigana)
        answered_ids = (
            set(
                Answer.objects.filter(question__circular=circular).values_list(
                    "receipt__household_id", flat=True
                )
            )
            if asked
            else set()
        )

        sections: list[dict[str, Any]] = []
        household_ids: list[int] = []
        for block in blocks:
            receipts = list(paper_receipts(circular=circular, block=block))
            joined_ids = set(
                Member.objects.filter(
                    household_id__in=[r.household_id for r in receipts]
                ).values_list("household_id", flat=True)
            )
            households: list[dict[str, Any]] = []
            for receipt in receipts:
                household = receipt.household
                assert household is not None
                joined = household.pk in joined_ids
                invite = None
                if (
                    each
                    and not joined
                    and (invite_block_ids is None or block.pk in invite_block_ids)
                ):
                    issued = household_invite_issue(
                        household=household, created_by=printed_by, kind=InviteKind.PACK
                    )
                    url = base + reverse("join_token", kwargs={"token": issued.token})
                    invite = {
                        "qr": qr_png_data_uri(url, box_size=5),
                        "code": code_format(issued.code),
                    }
                households.append(
                    {
                        "household": household,
                        "confirmed": receipt.confirmed_at is not None,
                        "answered": household.pk in answered_ids,
                        "invite": invite,
                        "joined": joined,
                    }
                )
                household_ids.append(household.pk)
            signoff_url = base + reverse(
                "circulars:paper_signoff",
                kwargs={
                    "slug": circular.community.slug,
                    "circular_id": circular.pk,
                    "block_id": block.pk,
                },
            )
            sections.append(
                {
                    "block": block,
                    "households": households,
                    "signoff_qr": qr_png_data_uri(signoff_url, box_size=4),
                    "signoff_url": signoff_url,
                    "leaders": _block_leader_names(block) if asked else [],
                }
            )

        extras_context = {
            "circular": circular,
            "community": circular.community,
            "sections": sections,
            "circulate": circulate,
            "each": each,
            "circular_pages": len(circular_pdf.pages),
            "attachment_pages": sum(len(r.pages) for r in readers),
            "printed_on": timezone.localdate(),
            "questions": asked,
            "question_tables": _chunks(asked, SHEET_QUESTIONS_PER_TABLE),
            "slip_large": large,
            "furigana": furigana,
        }
        roster = roster_plan(sections=sections, circulate=circulate)
        while True:
            extras = _Extras.render(extras_context, roster)
            try:
                writer = _assemble(
                    extras=extras,
                    sections=sections,
                    add_circular=lambda writer: _add_circular(writer, circular_pdf, readers),
                    circulate=circulate,
                    each=each,
                )
                break
            except RosterUnfit as unfit:
                if roster is None:
                    raise
                logger.info("print pack laid out in full: %s", unfit)
                roster = None

    out = io.BytesIO()
    writer.add_metadata({"/Title": circular.title, "/Creator": "Kairan"})
    writer.write(out)
    return PackResult(
        pdf=out.getvalue(), pages=len(writer.pages), household_ids=household_ids, unmerged=unmerged
    )
