"""Circulars that ask: the resident's answers, the draft's questions, and the answer list."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from circulars import paper, questions, selectors
from circulars.models import (
    Circular,
    CircularStatus,
    Question,
    QuestionKind,
    Receipt,
    ReceiptMethod,
)
from circulars.paper_views import _published
from circulars.views import PROXY_CHOICES, _editable, _member_for, _ruby
from communities.decorators import community_view, request_user
from communities.params import int_param
from communities.ratelimit import rate_limited, too_many
from communities.selectors import Access

FIELD = re.compile(r"q([0-9]{1,10})(?:-attending|-people|-shown)?")


def _posted_values(request: HttpRequest, asked: list[Question]) -> dict[int, Any]:
    """Raw answers by question id, from fields named ``q12``, ``q12-attending``... Ids the
    circular does not ask are passed on as they are, for the service to refuse (404)."""
    kinds = {question.pk: question.kind for question in asked}
    ids = sorted(
        {int(match[1]) for key in request.POST if (match := FIELD.fullmatch(key)) is not None}
    )
    values: dict[int, Any] = {}
    for question_id in ids:
        name = questions.field_name(question_id)
        kind = kinds.get(question_id)
        if kind == QuestionKind.MULTIPLE:
            values[question_id] = request.POST.getlist(name)
        elif kind == QuestionKind.ATTENDANCE:
            attending = request.POST.get(name + "-attending")
            people = request.POST.get(name + "-people", "")
            given = attending is not None or people
            values[question_id] = {"attending": attending, "people": people} if given else {}
        elif kind == QuestionKind.TEXT:
            values[question_id] = request.POST.get(name, "")
        else:
            values[question_id] = request.POST.get(name)
    return values


def _field_errors(error: ValidationError) -> dict[str, str]:
    """Errors keyed by form field (``q12``, ``method``); empty for a message without one."""
    return {
        name: " ".join(items)
        for name, items in (error.message_dict if hasattr(error, "error_dict") else {}).items()
    }


@community_view()
@require_POST
def answers_submit(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """「回答して確認する」: the member's own household answers, and so confirms."""
    if rate_limited(scope="answer", key=str(access.user_id)):
        return too_many(request)
    circular, receipt = selectors.circular_get_for_member(access=access, circular_id=circular_id)
    if receipt.household is None:
        raise Http404
    values = _posted_values(request, questions.questions_for(circular=circular))
    try:
        questions.answers_submit(
            circular=circular,
            household=receipt.household,
            values=values,
            member=_member_for(access, receipt.household),
            recorded_by=request_user(request),
            method=ReceiptMethod.APP,
        )
    except questions.AnswersClosed as error:
        messages.error(request, " ".join(error.messages))
        return redirect("circulars:detail", slug=access.community.slug, circular_id=circular.pk)
    except ValidationError as error:
        errors = _field_errors(error)
        return render(
            request,
            "circulars/circular_detail.html",
            {
                "access": access,
                "circular": circular,
                "attachments": circular.attachments.all(),
                "receipt": receipt,
                "staff": selectors.can_staff_view(access=access, circular_id=circular.pk),
                "ruby": _ruby(request, circular),
                "confirm_key": uuid.uuid4(),
                "preview": False,
                "answer_form": questions.answer_form(
                    circular=circular, receipt=receipt, posted=values, errors=errors
                ),
                "answer_error": " ".join(error.messages) if not errors else "",
            },
            status=400,
        )
    # ja: ありがとうございます。回答を受け付け、確認済みにしました。
    messages.success(request, _("Thank you. Your answers were recorded and marked as read."))
    return redirect("circulars:detail", slug=access.community.slug, circular_id=circular.pk)


@community_view(staff=True)
@require_POST
def questions_edit(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """Add or remove a question on a draft (officers and the author)."""
    circular = _editable(access, circular_id)
    action = request.POST.get("action", "add")
    try:
        if action == "remove":
            question_id = int_param(request.POST.get("question", ""))
            if question_id is None:
                raise Http404
            questions.question_remove(
                question=questions.question_get(circular=circular, question_id=question_id)
            )
            # ja: 質問を削除しました。
            messages.success(request, _("The question was removed."))
        else:
            questions.question_add(
                circular=circular,
                data=questions.QuestionData(
                    kind=request.POST.get("kind", ""),
                    prompt=request.POST.get("prompt", ""),
                    choices=request.POST.get("choices", "").splitlines(),
                    required=request.POST.get("required") == "on",
                ),
            )
            # ja: 質問を追加しました。
            messages.success(request, _("The question was added."))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("circulars:draft", slug=access.community.slug, circular_id=circular.pk)


def _sheet(
    access: Access, circular_id: int, *, block_id: int | None = None, fold: bool = False
) -> questions.AnswerSheet:
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    if circular.status != CircularStatus.PUBLISHED:
        raise Http404
    return questions.answers_rows(access=access, circular=circular, block_id=block_id, fold=fold)


@community_view(staff=True, roster=True)
def answers_summary(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """Totals and each household's answers, for the blocks the user may see; live. A large
    association shows each block's counts, and one block's answers at a time."""
    block_id = int_param(request.GET.get("block", ""))
    sheet = _sheet(access, circular_id, block_id=block_id, fold=True)
    template = "circulars/answers.html"
    if request.headers.get("HX-Request"):
        template += "#answers-body"
    return render(request, template, {"access": access, "circular": sheet.circular, "sheet": sheet})


@community_view(staff=True, roster=True)
def answers_csv(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    sheet = _sheet(access, circular_id)
    response = HttpResponse(
        questions.answers_csv(sheet=sheet), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="answers-{sheet.circular.pk}.csv"'
    response["Cache-Control"] = "private, no-store"
    return response


# --- Staff record a household's answers: a returned paper slip, or by hand/phone/visit ---


def _record_page(
    request: HttpRequest,
    access: Access,
    *,
    circular: Circular,
    receipt: Receipt,
    methods: Sequence[tuple[str, str | Promise]] | None,
    back_url: str,
    back_name: str = "",
) -> HttpResponse:
    """The answer form for one household, filled in by staff. ``methods``: the proxy ways
    to choose from, or None for a paper slip. Saved answers count as the household's own."""
    household = receipt.household
    asked = questions.questions_for(circular=circular)
    if household is None or not asked:
        raise Http404
    method = ReceiptMethod.PAPER if methods is None else request.POST.get("method", "")
    values: dict[int, Any] | None = None
    errors: dict[str, str] = {}
    error_text = ""
    if request.method == "POST":
        values = _posted_values(request, asked)
        try:
            result = questions.answers_record(
                circular=circular,
                household=household,
                values=values,
                recorded_by=request_user(request),
                method=method,
            )
        except ValidationError as error:
            errors = _field_errors(error)
            error_text = "" if errors else " ".join(error.messages)
        else:
            if result.late:
                # ja: %(household)sの回答を「期限後」として記録しました。
                notice = _("The answers of %(household)s were recorded, marked as late.")
            else:
                # ja: %(household)sの回答を記録しました。確認済みにもなりました。
                notice = _("The answers of %(household)s were recorded and marked as read.")
            messages.success(request, notice % {"household": household.label})
            return redirect(back_url)
    response = render(
        request,
        "circulars/answer_record.html",
        {
            "access": access,
            "circular": circular,
            "household": household,
            "answer_form": questions.answer_form(
                circular=circular, receipt=receipt, posted=values, errors=errors
            ),
            "answer_error": error_text,
            "methods": methods,
            "method": method,
            "method_error": errors.get("method", ""),
            "late": questions.answers_closed(circular=circular),
            "back_url": back_url,
            "back_name": back_name,
        },
        status=400 if errors or error_text else 200,
    )
    return response


@community_view(staff=True, roster=True)
@require_http_methods(["GET", "POST"])
def paper_answers(
    request: HttpRequest, access: Access, circular_id: int, block_id: int, household_id: int
) -> HttpResponse:
    """「回答を入力」 on the sign-off screen: a returned reply slip, typed in by the helper.
    Who may: as for recording the sign-off sheet of that block."""
    circular = _published(access, circular_id)
    block = selectors.circular_block_get(access=access, circular=circular, block_id=block_id)
    receipt = paper.paper_receipt_get(circular=circular, block=block, household_id=household_id)
    back = reverse(
        "circulars:paper_signoff",
        kwargs={"slug": access.community.slug, "circular_id": circular.pk, "block_id": block.pk},
    )
    return _record_page(
        request,
        access,
        circular=circular,
        receipt=receipt,
        methods=None,
        back_url=back,
        # ja: 確認印の記録に戻る
        back_name=_("Back to the sign-off sheet"),
    )


@community_view(staff=True, roster=True)
@require_http_methods(["GET", "POST"])
def answers_proxy(
    request: HttpRequest, access: Access, circular_id: int, household_id: int
) -> HttpResponse:
    """A household's answers taken by hand, phone or visit, entered by staff who see the
    household on the ledger (officers every block, 班長 and helpers their own)."""
    circular = _published(access, circular_id)
    receipt = selectors.ledger_row(access=access, circular=circular, household_id=household_id)
    to_ledger = request.GET.get("back") == "ledger"
    back = reverse(
        "circulars:ledger" if to_ledger else "circulars:answers_summary",
        kwargs={"slug": access.community.slug, "circular_id": circular.pk},
    )
    return _record_page(
        request,
        access,
        circular=circular,
        receipt=receipt,
        methods=PROXY_CHOICES,
        back_url=back,
        # ja: 配布状況に戻る / 回答の集計に戻る
        back_name=_("Back to the delivery status") if to_ledger else _("Back to the answers"),
    )
