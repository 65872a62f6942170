"""Circulars that ask: the resident's answers, the draft's questions, and the answer list."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from circulars import questions, selectors
from circulars.models import CircularStatus, Question, QuestionKind, ReceiptMethod
from circulars.views import _editable, _member_for, _ruby
from communities.decorators import community_view, request_user
from communities.params import int_param
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


@community_view()
@require_POST
def answers_submit(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """「回答して確認する」: the member's own household answers, and so confirms."""
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
        errors = {
            name: " ".join(items)
            for name, items in (error.message_dict if hasattr(error, "error_dict") else {}).items()
        }
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


def _sheet(access: Access, circular_id: int) -> questions.AnswerSheet:
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    if circular.status != CircularStatus.PUBLISHED:
        raise Http404
    return questions.answers_rows(access=access, circular=circular)


@community_view(staff=True, roster=True)
def answers_summary(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """Totals and each household's answers, for the blocks the user may see; live."""
    sheet = _sheet(access, circular_id)
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
