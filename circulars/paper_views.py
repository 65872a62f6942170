"""The paper path's pages: print packs per block, and the sign-off screen for 回覧表."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from circulars import paper, questions, selectors
from circulars.models import Circular, CircularKind, CircularStatus, ReceiptMethod
from circulars.print_pack import print_pack_pdf
from communities.decorators import community_view, request_user
from communities.models import Block
from communities.params import int_param
from communities.selectors import Access


def _published(access: Access, circular_id: int) -> Circular:
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    if circular.status != CircularStatus.PUBLISHED:
        raise Http404
    return circular


@community_view(staff=True, roster=True)
@require_http_methods(["GET", "POST"])
def print_page(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """Choose a block (or every block) and make the pack. Making it is a POST: it logs the
    print and issues fresh invite cards for households that have not joined."""
    circular = _published(access, circular_id)
    visible = selectors.circular_staff_block_ids(access=access, circular=circular)
    blocks = [
        block
        for block in Block.objects.filter(pk__in=circular.receipts.values("block_id")).order_by(
            "position", "pk"
        )
        if visible is None or block.pk in visible
    ]
    if request.method == "POST":
        choice = request.POST.get("block", "")
        if choice == "all" and visible is None:
            chosen = blocks
            record_block = None
        else:
            chosen = [b for b in blocks if str(b.pk) == choice]
            if not chosen:
                raise Http404
            record_block = chosen[0]
        furigana = request.POST.get("furigana") == "on"
        large = request.POST.get("large") == "on"
        # Invite QRs only where this person may issue cards (officers, the block's 班長).
        invite_blocks = None if access.is_officer else access.led_block_ids
        with transaction.atomic():  # invites, pages and the print log, or nothing
            result = print_pack_pdf(
                circular=circular,
                blocks=chosen,
                base_url=request.build_absolute_uri("/"),
                printed_by=request_user(request),
                furigana=furigana,
                large=large,
                invite_block_ids=invite_blocks,
            )
            paper.print_record_create(
                circular=circular,
                block=record_block,
                printed_by=request_user(request),
                household_ids=result.household_ids,
                pages=result.pages,
                furigana=furigana,
                large_print=large,
            )
        response = HttpResponse(result.pdf, content_type="application/pdf")
        name = f"kairan-{circular.pk}-{'all' if record_block is None else record_block.pk}.pdf"
        response["Content-Disposition"] = f'inline; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response
    status = paper.paper_status(circular=circular)
    return render(
        request,
        "circulars/print.html",
        {
            "access": access,
            "circular": circular,
            "rows": [{"block": b, "status": status.get(b.pk)} for b in blocks],
            "all_allowed": visible is None,
            "mode": paper.paper_distribution(circular=circular),
            "history": paper.print_history(circular=circular, block_ids=visible),
        },
    )


@community_view(staff=True, roster=True)
@require_http_methods(["GET", "POST"])
def signoff(request: HttpRequest, access: Access, circular_id: int, block_id: int) -> HttpResponse:
    """The returned 回覧表, tapped in: one big toggle per household, in the sheet's order."""
    circular = _published(access, circular_id)
    block = selectors.circular_block_get(access=access, circular=circular, block_id=block_id)
    if circular.kind == CircularKind.SAFETY:
        # A tick on a 回覧表 is not an answer: safety checks are recorded 無事 / 支援が必要.
        return redirect(
            "circulars:safety_record",
            slug=access.community.slug,
            circular_id=circular.pk,
            block_id=block.pk,
        )
    user = request_user(request)
    notice = ""
    if request.method == "POST":
        action = request.POST.get("action", "")
        household = request.POST.get("household", "")
        try:
            if action == "all":
                count = paper.paper_signoff_all(circular=circular, block=block, recorded_by=user)
                notice = _("%(count)s households were recorded.") % {"count": count}
            elif action in {"confirm", "undo"} and int_param(household) is not None:
                if action == "confirm":
                    result = paper.paper_signoff_record(
                        circular=circular,
                        block=block,
                        household_id=int(household),
                        recorded_by=user,
                    )
                    notice = "" if result.recorded else _("This household had already confirmed.")
                else:
                    paper.paper_signoff_undo(
                        circular=circular, block=block, household_id=int(household), user=user
                    )
            else:
                return HttpResponse(_("Unknown action."), status=400)
        except ValidationError as error:
            notice = " ".join(error.messages)
        if not request.headers.get("HX-Request"):
            if notice:
                messages.info(request, notice)
            return redirect(
                "circulars:paper_signoff",
                slug=access.community.slug,
                circular_id=circular.pk,
                block_id=block.pk,
            )
    receipts = list(paper.signoff_receipts(circular=circular, block=block))
    now = timezone.now()
    # A circular that asks: each row can take the household's returned reply slip.
    asks = questions.circular_has_questions(circular=circular)
    summaries = (
        questions.answers_summaries(circular=circular, receipt_ids=[r.pk for r in receipts])
        if asks
        else {}
    )
    rows = [
        {
            "receipt": receipt,
            "can_undo": receipt.method == ReceiptMethod.PAPER
            and receipt.confirmed_at is not None
            and now - receipt.confirmed_at <= paper.UNDO_WINDOW
            and receipt.pk not in summaries,
            "answers": summaries.get(receipt.pk),
        }
        for receipt in receipts
    ]
    context = {
        "access": access,
        "circular": circular,
        "block": block,
        # Inside {% block %} tags, Django's own "block" shadows a context variable of that name.
        "current_block": block,
        "rows": rows,
        "open_count": sum(1 for r in receipts if r.confirmed_at is None),
        "notice": notice,
        "undo_minutes": int(paper.UNDO_WINDOW.total_seconds() // 60),
        "user_id": user.pk,
        "asks": asks,
    }
    template = "circulars/signoff.html"
    if request.headers.get("HX-Request"):
        template += "#signoff-list"
    return render(request, template, context)
