"""The door-to-door checklist (戸別訪問チェック表) a safety check prints instead of a pack.

One A4 list per block, large print: every household in round order with what was known
when it was printed (「無事 (アプリ 10:05)」, so helpers skip those), boxes to tick
(□無事 □支援が必要 □不在) and room for a note, and a QR code to the block's recording
screen, where the ticks are entered afterwards. A drill says 「訓練」 on every page.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import dateformat, timezone, translation
from django.utils.html import format_html

from circulars import safety
from circulars.models import Circular, Receipt, ReceiptMethod, SafetyStatus
from circulars.print_pack import PackResult
from communities.models import Block, RoleAssignment, RoleKind
from communities.pdf import pdf_render, qr_png_data_uri
from communities.selectors import user_display_name


def _when(moment: datetime, today: Any) -> str:
    local = timezone.localtime(moment)
    return dateformat.format(local, "H:i" if local.date() == today else "n/j H:i")


def _known(row: Receipt, today: Any) -> dict[str, str]:
    """What the checklist says a household already told us, in the association's words."""
    status = row.safety_status or ""  # type: ignore[attr-defined]
    known = {
        "status": status,
        "answer": "",
        "how": "",
        "attempt": "",
        "attempt_how": "",
        "note": "",
    }
    if status:
        known["answer"] = SafetyStatus(status).label
        # 「(アプリ 10:05)」: how and when, kept on one line under the answer.
        known["how"] = "(%s %s)" % (  # noqa: UP031 (labels are already translated)
            ReceiptMethod(row.safety_method).label,  # type: ignore[attr-defined]
            _when(row.safety_at, today),  # type: ignore[attr-defined]
        )
        known["note"] = row.safety_note or ""  # type: ignore[attr-defined]
    attempt_at = row.attempt_at  # type: ignore[attr-defined]
    if attempt_at and (not status or attempt_at > row.safety_at):  # type: ignore[attr-defined]
        known["attempt"] = SafetyStatus.ABSENT.label
        known["attempt_how"] = "(%s %s)" % (  # noqa: UP031
            ReceiptMethod(row.attempt_method).label,  # type: ignore[attr-defined]
            _when(attempt_at, today),
        )
    return {key: str(value) for key, value in known.items()}


def _leader_names(block_ids: list[int]) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for role in (
        RoleAssignment.objects.filter(
            block_id__in=block_ids, role=RoleKind.BLOCK_LEADER, ended_at__isnull=True
        )
        .select_related("user")
        .order_by("pk")
    ):
        if role.block_id is not None:
            names.setdefault(role.block_id, []).append(user_display_name(user=role.user))
    return names


def safety_checklist_pdf(
    *, circular: Circular, blocks: list[Block], base_url: str, printed_by: User | None = None
) -> PackResult:
    """The checklist for the given blocks (one, or all of them in order), one PDF."""
    from pypdf import PdfReader

    base = base_url.rstrip("/")
    now = timezone.localtime()
    today = now.date()
    block_ids = [block.pk for block in blocks]
    with translation.override("ja"):
        rows: dict[int, list[Receipt]] = {}
        for row in safety.safety_rows(circular=circular, block_ids=frozenset(block_ids)):
            rows.setdefault(row.block_id, []).append(row)
        leaders = _leader_names(block_ids)
        sections: list[dict[str, Any]] = []
        household_ids: list[int] = []
        for block in blocks:
            record_url = base + reverse(
                "circulars:safety_record",
                kwargs={
                    "slug": circular.community.slug,
                    "circular_id": circular.pk,
                    "block_id": block.pk,
                },
            )
            households = [
                {
                    "order": order,
                    "household": row.household,
                    "paper": bool(row.paper),  # type: ignore[attr-defined]
                    **_known(row, today),
                }
                for order, row in enumerate(rows.get(block.pk, []), start=1)
            ]
            household_ids.extend(
                row.household_id for row in rows.get(block.pk, []) if row.household_id
            )
            counts = safety.SafetyCounts()
            for row in rows.get(block.pk, []):
                counts.add(row.safety_status or "")  # type: ignore[attr-defined]
            sections.append(
                {
                    "block": block,
                    # The page footer repeats the block's name (CSS string-set on this span).
                    "name_html": format_html('<span class="block-name">{}</span>', block.name),
                    "households": households,
                    "counts": counts,
                    "leaders": leaders.get(block.pk, []),
                    "record_qr": qr_png_data_uri(record_url, box_size=4),
                    "record_url": record_url,
                }
            )
        pdf = pdf_render(
            template="circulars/print/safety_checklist.html",
            context={
                "circular": circular,
                "community": circular.community,
                "sections": sections,
                "printed_at": now,
                "printed_by": user_display_name(user=printed_by) if printed_by else "",
            },
        )
    return PackResult(
        pdf=pdf,
        pages=len(PdfReader(io.BytesIO(pdf)).pages),
        household_ids=household_ids,
        unmerged=[],
    )
