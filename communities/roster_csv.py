"""Roster CSV: reading what Excel in Japan writes, checking each row, and writing it back.

Reading never touches the roster. ``roster_import_create`` stores the checked rows for the
preview; ``roster_import_apply`` writes them all in one transaction, or none.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from communities.models import Block, Community, DeliveryMode, Household, RosterImport
from communities.services import household_circulars_catch_up

MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 5000

# Header aliases: what officers actually type in the first row.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "label": ("世帯名", "世帯", "氏名", "名前", "household", "label", "name"),
    "block": ("班", "組", "班名", "block"),
    "address": ("住所", "address"),
    "phone": ("電話", "電話番号", "tel", "phone"),
    "delivery_mode": ("配布方法", "配布", "受け取り方", "delivery", "delivery_mode", "mode"),
    "helper_note": ("備考", "メモ", "note", "helper_note"),
}
MODE_ALIASES: dict[str, str] = {
    "アプリ": DeliveryMode.APP,
    "スマホ": DeliveryMode.APP,
    "app": DeliveryMode.APP,
    "紙": DeliveryMode.PAPER,
    "paper": DeliveryMode.PAPER,
    "両方": DeliveryMode.BOTH,
    "アプリと紙": DeliveryMode.BOTH,
    "both": DeliveryMode.BOTH,
}
MODE_LABELS = {DeliveryMode.APP: "アプリ", DeliveryMode.PAPER: "紙", DeliveryMode.BOTH: "両方"}
PHONE_RE = re.compile(r"\+?[0-9()\- ]*")
EXPORT_HEADER = ["班", "順番", "世帯名", "住所", "電話", "配布方法", "備考"]


def _clean(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def decode(data: bytes) -> tuple[str, str]:
    """Decode UTF-8 (with or without BOM) or Shift_JIS/cp932; say which it was."""
    if len(data) > MAX_BYTES:
        raise ValidationError(_("The file is larger than 2 MB. Split it into smaller files."))
    if not data.strip():
        raise ValidationError(_("The file is empty."))
    # Anywhere in the file, not only at the start: PostgreSQL cannot store U+0000.
    if b"\x00" in data:
        raise ValidationError(
            _("This is not a CSV file. In Excel, choose 'Save as' and 'CSV (comma delimited)'.")
        )
    for encoding in ("utf-8-sig", "cp932"):
        try:
            return data.decode(encoding), "UTF-8" if encoding == "utf-8-sig" else "Shift_JIS"
        except UnicodeDecodeError:
            continue
    raise ValidationError(
        _("The file could not be read. Save it as CSV in UTF-8 or Shift_JIS and try again.")
    )


def _header_map(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = _clean(raw).lower()
        for field, aliases in HEADER_ALIASES.items():
            if name in (alias.lower() for alias in aliases) and field not in columns:
                columns[field] = index
    missing = [field for field in ("label", "block") if field not in columns]
    if missing:
        raise ValidationError(
            _(
                "The first row must name the columns. 世帯名 (household name) and 班 (block) "
                "are needed; optional: 住所, 電話, 配布方法, 備考."
            )
        )
    return columns


def parse_rows(*, text: str, community: Community) -> list[dict[str, Any]]:
    """Check every row; each result carries its values, an action and its errors."""
    reader = csv.reader(io.StringIO(text))
    try:
        table = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise ValidationError(_("The CSV file is malformed: %(error)s") % {"error": exc}) from exc
    if not table:
        raise ValidationError(_("The file is empty."))
    columns = _header_map(table[0])
    if len(table) - 1 > MAX_ROWS:
        raise ValidationError(_("At most 5,000 households can be imported at once."))
    blocks = {block.name: block for block in Block.objects.filter(community=community)}
    existing = set(
        Household.objects.filter(community=community).values_list("block__name", "label")
    )
    seen: set[tuple[str, str]] = set()
    results = []
    for line, row in enumerate(table[1:], start=2):

        def cell(field: str, row: list[str] = row) -> str:
            index = columns.get(field)
            return _clean(row[index]) if index is not None and index < len(row) else ""

        values = {field: cell(field) for field in HEADER_ALIASES}
        errors = []
        if not values["label"]:
            errors.append(_("The household name is empty."))
        elif len(values["label"]) > 60:
            errors.append(_("The household name is longer than 60 characters."))
        if not values["block"]:
            errors.append(_("The block is empty."))
        elif values["block"] not in blocks:
            errors.append(
                _("Unknown block '%(block)s'. Add the block first or correct the name.")
                % {"block": values["block"]}
            )
        raw_mode = values["delivery_mode"]
        mode = MODE_ALIASES.get(raw_mode.lower(), "") if raw_mode else DeliveryMode.PAPER
        if not mode:
            errors.append(
                _("Unknown delivery '%(mode)s': write アプリ, 紙 or 両方.") % {"mode": raw_mode}
            )
        values["delivery_mode"] = mode or raw_mode
        for field, limit in (("address", 200), ("phone", 30), ("helper_note", 300)):
            if len(values[field]) > limit:
                errors.append(_("A value is too long."))
                break
        key = (values["block"], values["label"])
        if values["label"] and key in seen:
            errors.append(_("This household appears twice in the file."))
        seen.add(key)
        action = "update" if key in existing else "add"
        results.append({"line": line, "values": values, "action": action, "errors": errors})
    return results


@transaction.atomic
def roster_import_create(
    *, community: Community, user: User, file_name: str, data: bytes
) -> RosterImport:
    """Read and check an uploaded file; nothing reaches the roster yet."""
    text, encoding = decode(data)
    rows = parse_rows(text=text, community=community)
    return RosterImport.objects.create(
        community=community,
        created_by=user,
        file_name=file_name[:200],
        encoding=encoding,
        rows=rows,
        error_count=sum(1 for row in rows if row["errors"]),
    )


class AlreadyApplied(Exception):
    pass


@transaction.atomic
def roster_import_apply(*, roster_import: RosterImport) -> int:
    """Write every row of a checked import, or none. Returns how many rows were written."""
    locked = RosterImport.objects.select_for_update().get(pk=roster_import.pk)
    if locked.applied_at is not None:
        raise AlreadyApplied
    if locked.error_count:
        raise ValidationError(_("Correct the rows with errors and upload the file again."))
    # The roster may have changed since the preview: check again, under the lock.
    rows = parse_rows(
        text=_rows_as_csv(row["values"] for row in locked.rows), community=locked.community
    )
    if any(row["errors"] for row in rows):
        raise ValidationError(
            _("The roster changed since the preview. Upload the file again to check it.")
        )
    blocks = {block.name: block for block in Block.objects.filter(community=locked.community)}
    next_order = {
        block_id: order or 0
        for block_id, order in Household.objects.filter(community=locked.community)
        .values("block_id")
        .annotate(m=Max("circulation_order"))
        .values_list("block_id", "m")
    }
    for row in rows:
        values = row["values"]
        block = blocks[values["block"]]
        fields = {
            "address": values["address"],
            "phone": values["phone"],
            "delivery_mode": values["delivery_mode"],
            "helper_note": values["helper_note"],
        }
        updated = Household.objects.filter(block=block, label=values["label"]).update(**fields)
        if not updated:
            next_order[block.pk] = next_order.get(block.pk, 0) + 1
            household = Household.objects.create(
                community=locked.community,
                block=block,
                label=values["label"],
                circulation_order=next_order[block.pk],
                **fields,
            )
            # Circulars still going round reach the new household too.
            household_circulars_catch_up(household=household)
    locked.applied_at = timezone.now()
    locked.save(update_fields=["applied_at"])
    return len(rows)


def _rows_as_csv(values: Iterable[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["世帯名", "班", "住所", "電話", "配布方法", "備考"])
    for item in values:
        writer.writerow(
            [
                item["label"],
                item["block"],
                item["address"],
                item["phone"],
                item["delivery_mode"],
                item["helper_note"],
            ]
        )
    return out.getvalue()


def roster_export_csv(*, households: Iterable[Household]) -> bytes:
    """The roster as UTF-8 CSV with a BOM, so Excel in Japan opens it without garbling."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_HEADER)
    for household in households:
        writer.writerow(
            [
                _cell_safe(household.block.name),
                household.circulation_order,
                _cell_safe(household.label),
                _cell_safe(household.address),
                household.phone
                if PHONE_RE.fullmatch(household.phone)
                else _cell_safe(household.phone),
                MODE_LABELS.get(DeliveryMode(household.delivery_mode), household.delivery_mode),
                _cell_safe(household.helper_note),
            ]
        )
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _cell_safe(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection) in exported cells."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value
