"""安否確認 at the door: the 班長's and helpers' recording screen for one block.

Modelled on the paper sign-off screen: the block's households in round order (who nobody
has heard from first), and for each three big buttons 無事 / 支援が必要 / 不在. The way the
household was reached (訪問 or 電話) is chosen once at the top and remembered in the
session, so a round of calls is one tap per household. Every tap is a new report
(append-only); the newest answer counts, so a mistaken tap is corrected by the right one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import dateformat, timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from circulars import safety, selectors
from circulars.models import Circular, CircularStatus, Receipt, ReceiptMethod, SafetyReport
from circulars.views import PLAIN_TEXT
from communities.decorators import community_view, request_user
from communities.models import Block
from communities.params import int_param
from communities.selectors import Access, user_display_name

SESSION_METHOD = "kairan.safety_method"
DEFAULT_METHOD = ReceiptMethod.PROXY_VISIT
# How many earlier reports a row lists under its current state.
HISTORY_SHOWN = 3


def _safety_check(access: Access, circular_id: int) -> Circular:
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    if not safety.is_safety_check(circular) or circular.status != CircularStatus.PUBLISHED:
        raise Http404
    return circular


def _method(request: HttpRequest) -> str:
    method = request.session.get(SESSION_METHOD, DEFAULT_METHOD)
    return method if method in safety.STAFF_METHODS else DEFAULT_METHOD


@dataclass(frozen=True)
class Entry:
    """One report as the screen shows it: what, how, when, and who recorded it."""

    status: str
    status_display: str
    note: str
    method: str
    when: str  # 「10:05」 today, 「11/22 10:05」 on another day
    who: str
    by_household: bool  # answered by the household itself (app or mail link)


@dataclass
class Row:
    receipt: Receipt
    order: int  # the household's place in the block's round, from 1
    status: str  # "" while unknown
    current: Entry | None  # the answer that counts
    attempt: Entry | None  # a 不在 after the current answer (or with none)
    history: list[Entry]  # the earlier reports, newest first
    key: str  # idempotency key of this row's form: a double submit is one report
    recorded: bool = False  # this response follows a tap on this row

    @property
    def paper(self) -> bool:
        return bool(getattr(self.receipt, "paper", False))


def _when(moment: datetime) -> str:
    local = timezone.localtime(moment)
    if local.date() == timezone.localdate():
        return dateformat.format(local, "H:i")
    return dateformat.format(local, "n/j H:i")


def _entry(report: SafetyReport, names: dict[int, str]) -> Entry:
    return Entry(
        status=report.status,
        status_display=report.get_status_display(),
        note=report.note,
        method=report.get_method_display(),
        when=_when(report.reported_at),
        who=names.get(report.recorded_by_id or 0, ""),
        # The household's own tap (the answer page or the mail link), whoever is logged in.
        by_household=report.method in safety.RESIDENT_METHODS,
    )


def _rows(receipts: list[Receipt], orders: dict[int, int]) -> list[Row]:
    history = safety.safety_history(receipt_ids=[r.pk for r in receipts])
    users: dict[int, User] = {
        report.recorded_by_id: report.recorded_by
        for reports in history.values()
        for report in reports
        if report.recorded_by_id is not None and report.recorded_by is not None
    }
    names = {pk: user_display_name(user=user) for pk, user in users.items()}
    rows = []
    for receipt in receipts:
        reports = history.get(receipt.pk, [])
        answers = [i for i, r in enumerate(reports) if r.status in safety.ANSWERS]
        attempts = [i for i, r in enumerate(reports) if r.status not in safety.ANSWERS]
        current = answers[0] if answers else None
        # An older 不在 is only history once someone has answered.
        attempt = attempts[0] if attempts and (current is None or attempts[0] < current) else None
        rest = [r for i, r in enumerate(reports) if i not in (current, attempt)]
        rows.append(
            Row(
                receipt=receipt,
                order=orders.get(receipt.pk, 0),
                status=reports[current].status if current is not None else "",
                current=_entry(reports[current], names) if current is not None else None,
                attempt=_entry(reports[attempt], names) if attempt is not None else None,
                history=[_entry(r, names) for r in rest[:HISTORY_SHOWN]],
                key=str(uuid.uuid4()),
            )
        )
    return rows


def _round_orders(circular: Circular, block: Block) -> dict[int, int]:
    """receipt id → place in the block's round (1, 2, ...), as on the printed checklist."""
    receipts = Receipt.objects.filter(
        circular=circular, block=block, household__isnull=False
    ).order_by("household__circulation_order", "household_id")
    return {pk: index for index, pk in enumerate(receipts.values_list("pk", flat=True), 1)}


def _counts(rows: list[Row]) -> safety.SafetyCounts:
    counts = safety.SafetyCounts()
    for row in rows:
        counts.add(row.status)
    return counts


def _block_counts(circular: Circular, block: Block) -> safety.SafetyCounts:
    counts = safety.SafetyCounts()
    for receipt in safety.safety_rows(circular=circular, block_ids=frozenset({block.pk})):
        counts.add(receipt.safety_status or "")  # type: ignore[attr-defined]
    return counts


def _bad_request(error: ValidationError) -> HttpResponse:
    """400 naming the field: 「status: 「無事」か「支援が必要」を選んでください。」."""
    lines = [
        f"{field}: {message}" for field, errors in error.message_dict.items() for message in errors
    ]
    return HttpResponseBadRequest("\n".join(lines), content_type=PLAIN_TEXT)


def _field_error(field: str, message: str) -> HttpResponse:
    return _bad_request(ValidationError({field: message}))


@community_view(staff=True, roster=True)
@require_http_methods(["GET", "POST"])
def record(request: HttpRequest, access: Access, circular_id: int, block_id: int) -> HttpResponse:
    """The block's households with one-tap 無事 / 支援が必要 / 不在 buttons."""
    circular = _safety_check(access, circular_id)
    block = selectors.circular_block_get(access=access, circular=circular, block_id=block_id)
    user = request_user(request)
    htmx = bool(request.headers.get("HX-Request"))
    context: dict[str, object] = {
        "access": access,
        "circular": circular,
        # Inside {% block %} tags, Django's own "block" shadows a context variable of that name.
        "current_block": block,
        "method_choices": [
            (ReceiptMethod.PROXY_VISIT, _("Visit")),
            (ReceiptMethod.PROXY_PHONE, _("Phone call")),
        ],
        "note_suggestions": safety.NOTE_SUGGESTIONS,
        "max_note": safety.MAX_NOTE,
    }
    if request.method == "POST":
        if request.POST.get("action") == "method":
            method = request.POST.get("method", "")
            if method not in safety.STAFF_METHODS:
                return _field_error("method", _("Choose visit or phone."))
            request.session[SESSION_METHOD] = method
            # A plain reload, not an htmx swap of the whole list: every row's form then
            # carries the new way. (Swapping the list in made Chromium report CSP
            # inline-style violations, one per row, in the browser test.)
            return redirect(request.path)
        return _record_tap(request, circular, block, user, context, htmx=htmx)
    receipts = safety.safety_record_rows(circular=circular, block=block)
    rows = _rows(receipts, _round_orders(circular, block))
    context |= {"rows": rows, "counts": _counts(rows), "method": _method(request)}
    return render(request, "circulars/safety/record_block.html", context)


def _record_tap(
    request: HttpRequest,
    circular: Circular,
    block: Block,
    user: User,
    context: dict[str, object],
    *,
    htmx: bool,
) -> HttpResponse:
    household_id = int_param(request.POST.get("household", ""))
    if household_id is None:
        return _field_error("household", _("Choose a household."))
    status = request.POST.get("status", "")
    method = request.POST.get("method", "") or _method(request)
    if method not in safety.STAFF_METHODS:
        return _field_error("method", _("Choose visit or phone."))
    raw_key = request.POST.get("key", "")
    try:
        key = uuid.UUID(raw_key) if raw_key else None
    except ValueError:
        return _field_error("key", _("This form is out of date. Reload the page and tap again."))
    receipt = safety.safety_record_row(circular=circular, block=block, household_id=household_id)
    assert receipt.household is not None
    try:
        result = safety.safety_report(
            circular=circular,
            household=receipt.household,
            status=status,
            method=method,
            note=request.POST.get("note", ""),
            recorded_by=user,
            key=key,
        )
    except ValidationError as error:
        return _bad_request(error)
    request.session[SESSION_METHOD] = method
    if not htmx:
        messages.success(
            request,
            _("%(household)s: recorded as 「%(status)s」.")
            % {"household": receipt.household.label, "status": result.report.get_status_display()},
        )
        return redirect(f"{request.path}#household-{receipt.household_id}")
    # The tapped row in place (rows do not jump while the 班長 works down the list), and
    # the block's counts out of band.
    receipt = safety.safety_record_row(circular=circular, block=block, household_id=household_id)
    [row] = _rows([receipt], _round_orders(circular, block))
    row.recorded = True
    context |= {"row": row, "counts": _block_counts(circular, block), "method": method}
    html = render_to_string(
        "circulars/safety/record_block.html#record-row", context, request=request
    ) + render_to_string(
        "circulars/safety/record_block.html#record-counts",
        {**context, "oob": True},
        request=request,
    )
    return HttpResponse(html)
