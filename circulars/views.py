"""Circular pages: writing and publishing, reading and confirming, and the 配布状況 ledger."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
)
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from circulars import questions, safety, selectors, services
from circulars.forms import AttachmentForm, CircularForm, PublishForm
from circulars.models import (
    PROXY_METHODS,
    Attachment,
    AttachmentKind,
    Circular,
    CircularStatus,
    QuestionKind,
    ReceiptMethod,
)
from circulars.starters import STARTERS, STARTERS_BY_KEY
from communities.decorators import community_view, request_user
from communities.forms import form_errors_add
from communities.models import Household, Member
from communities.params import int_param
from communities.ratelimit import rate_limited, too_many
from communities.selectors import Access, display_preferences

# 手渡し / 電話 / 訪問, as the one-tap buttons of the ledger and the follow-up list show them.
# Short refusals of htmx taps: kairan.js shows a plain-text answer as it is.
PLAIN_TEXT = "text/plain; charset=utf-8"
PROXY_CHOICES = [(method.value, method.label) for method in PROXY_METHODS]


def _can_write(access: Access) -> bool:
    return access.is_officer or (
        access.community.allow_block_leader_posts and bool(access.led_block_ids)
    )


def _writer_blocks(access: Access) -> frozenset[int] | None:
    """None: may send to every block. Otherwise the blocks a 班長 may write for."""
    return None if access.is_officer else access.led_block_ids


def _editable(access: Access, circular_id: int) -> Circular:
    """Officers edit every circular; a 班長 their own, while they may still write."""
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    if access.is_officer:
        return circular
    if circular.author_id != access.user_id or not _can_write(access):
        raise Http404
    return circular


def _check_blocks(access: Access, form: CircularForm) -> bool:
    allowed = _writer_blocks(access)
    if allowed is None:
        return True
    data = form.to_data()
    if data.all_blocks or any(block.pk not in allowed for block in data.blocks):
        form.add_error("blocks", _("Choose among your own blocks."))
        return False
    return True


# --- Staff: list, write, publish --------------------------------------------------------


@community_view(staff=True)
def circular_list(request: HttpRequest, access: Access) -> HttpResponse:
    circulars = selectors.circulars_for_staff(access=access)
    return render(
        request,
        "circulars/circular_list.html",
        {"access": access, "circulars": circulars, "can_write": _can_write(access)},
    )


@community_view(staff=True)
@require_http_methods(["GET", "POST"])
def circular_new(request: HttpRequest, access: Access) -> HttpResponse:
    if not _can_write(access):
        raise Http404
    initial: dict[str, object] = {}
    starter = STARTERS_BY_KEY.get(request.GET.get("starter", ""))
    if starter:
        initial = {"title": starter.title, "body": starter.body, "priority": starter.priority}
    form = CircularForm(
        request.POST or None,
        initial=initial,
        community=access.community,
        block_ids=_writer_blocks(access),
    )
    if request.method == "POST" and form.is_valid() and _check_blocks(access, form):
        try:
            circular = services.circular_create(
                community=access.community, author=request_user(request), data=form.to_data()
            )
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            messages.success(request, _("The draft was saved."))
            return redirect("circulars:draft", slug=access.community.slug, circular_id=circular.pk)
    previous = selectors.circulars_for_staff(access=access).filter(status=CircularStatus.PUBLISHED)[
        :10
    ]
    return render(
        request,
        "circulars/circular_form.html",
        {
            "access": access,
            "form": form,
            "circular": None,
            "starters": STARTERS,
            "previous": previous,
        },
    )


@community_view(staff=True)
@require_http_methods(["GET", "POST"])
def circular_edit(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    circular = _editable(access, circular_id)
    initial = {
        "title": circular.title,
        "body": circular.body,
        "priority": circular.priority,
        "audience": "all" if circular.all_blocks else "chosen",
        "blocks": list(circular.blocks.all()),
        "due_date": circular.due_date,
        "paper_distribution": circular.paper_distribution,
    }
    form = CircularForm(
        request.POST or None,
        initial=initial,
        community=access.community,
        block_ids=_writer_blocks(access),
    )
    if request.method == "POST" and form.is_valid() and _check_blocks(access, form):
        try:
            circular = services.circular_update(circular=circular, data=form.to_data())
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            if circular.status == CircularStatus.PUBLISHED:
                messages.success(request, _("The correction was saved and is shown to residents."))
                return redirect(
                    "circulars:detail", slug=access.community.slug, circular_id=circular.pk
                )
            messages.success(request, _("The draft was saved."))
            return redirect("circulars:draft", slug=access.community.slug, circular_id=circular.pk)
    return render(
        request,
        "circulars/circular_form.html",
        {"access": access, "form": form, "circular": circular, "starters": [], "previous": []},
    )


def _readings(circular: Circular) -> list[tuple[str, str, bool]]:
    """(word, reading, corrected) for the officer's furigana check."""
    from circulars.furigana import furigana_words

    overrides = circular.furigana_overrides or {}
    text = circular.title + "\n" + circular.body
    return [
        (word, reading, word in overrides)
        for word, reading in furigana_words(text, overrides=overrides)
    ][:300]


@community_view(staff=True)
@require_http_methods(["GET", "POST"])
def circular_draft(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """The draft's page: attachments, preview link and the publish form."""
    circular = _editable(access, circular_id)
    if circular.status == CircularStatus.PUBLISHED:
        return redirect("circulars:detail", slug=access.community.slug, circular_id=circular.pk)
    publish_form = PublishForm(request.POST or None)
    if request.method == "POST" and publish_form.is_valid():
        when = publish_form.cleaned_data["when"]
        publish_at = publish_form.cleaned_data.get("publish_at") if when == "later" else None
        try:
            circular = services.circular_publish(
                circular=circular,
                publish_at=publish_at,
                allowed_block_ids=_writer_blocks(access),
            )
        except ValidationError as error:
            publish_form.add_error(None, error.messages)
        else:
            if circular.status == CircularStatus.SCHEDULED:
                messages.success(request, _("The circular will be published at the set time."))
                return redirect(
                    "circulars:draft", slug=access.community.slug, circular_id=circular.pk
                )
            messages.success(request, _("The circular was published."))
            return redirect("circulars:detail", slug=access.community.slug, circular_id=circular.pk)
    return render(
        request,
        "circulars/circular_draft.html",
        {
            "access": access,
            "circular": circular,
            "publish_form": publish_form,
            "attachment_form": AttachmentForm(),
            "attachments": circular.attachments.all(),
            "readings": _readings(circular),
            "questions": questions.questions_for(circular=circular),
            "question_kinds": QuestionKind.choices,
        },
    )


@community_view(staff=True)
@require_POST
def circular_furigana(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """Correct the automatic readings before publishing (they can be changed later too)."""
    circular = _editable(access, circular_id)
    readings: dict[str, str] = {}
    for key in request.POST:
        if key.startswith("word-"):
            word = request.POST.get(key, "")
            readings[word] = request.POST.get("reading-" + key.removeprefix("word-"), "")
    try:
        services.circular_furigana_set(circular=circular, readings=readings)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("The readings were saved."))
    return redirect("circulars:draft", slug=access.community.slug, circular_id=circular.pk)


@community_view(staff=True)
@require_POST
def circular_unschedule(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    circular = _editable(access, circular_id)
    services.circular_unschedule(circular=circular)
    messages.info(request, _("The circular is a draft again."))
    return redirect("circulars:draft", slug=access.community.slug, circular_id=circular.pk)


@community_view(staff=True)
@require_POST
def circular_delete(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    circular = _editable(access, circular_id)
    try:
        services.circular_delete_draft(circular=circular)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("circulars:detail", slug=access.community.slug, circular_id=circular.pk)
    messages.success(request, _("The draft was deleted."))
    return redirect("circulars:list", slug=access.community.slug)


@community_view(staff=True)
@require_POST
def circular_copy(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    if not _can_write(access):
        raise Http404
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    copy = services.circular_copy(
        circular=circular, author=request_user(request), allowed_block_ids=_writer_blocks(access)
    )
    messages.success(request, _("A copy was made as a new draft."))
    return redirect("circulars:edit", slug=access.community.slug, circular_id=copy.pk)


@community_view(staff=True)
def circular_preview(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """The circular as a resident will see it on a phone."""
    circular = _editable(access, circular_id)
    return render(
        request,
        "circulars/circular_detail.html",
        {
            "access": access,
            "circular": circular,
            "attachments": circular.attachments.all(),
            "preview": True,
            "receipt": None,
            "answer_form": questions.answer_form(circular=circular, receipt=None),
        },
    )


@community_view(staff=True)
@require_POST
def attachment_add(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    from circulars.attachments import attachment_add as add

    circular = _editable(access, circular_id)
    form = AttachmentForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, _("Choose a file to add."))
    else:
        try:
            add(circular=circular, upload=form.cleaned_data["file"])
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            services.circular_mark_corrected(circular=circular)
            messages.success(request, _("The file was added."))
    target = "circulars:draft" if circular.status != CircularStatus.PUBLISHED else "circulars:edit"
    return redirect(target, slug=access.community.slug, circular_id=circular.pk)


@community_view(staff=True)
@require_POST
def attachment_delete(
    request: HttpRequest, access: Access, circular_id: int, attachment_id: int
) -> HttpResponse:
    from circulars.attachments import attachment_remove

    circular = _editable(access, circular_id)
    attachment = circular.attachments.filter(pk=attachment_id).first()
    if attachment is None:
        raise Http404
    attachment_remove(attachment=attachment)
    services.circular_mark_corrected(circular=circular)
    messages.success(request, _("The file was removed."))
    return redirect("circulars:draft", slug=access.community.slug, circular_id=circular.pk)


# --- Reading and confirming -------------------------------------------------------------


def _ruby(request: HttpRequest, circular: Circular) -> dict[str, str] | None:
    """Title and body with furigana, when the person turned furigana on (off by default:
    screen readers read ruby twice)."""
    from circulars.furigana import circular_ruby_html

    if not display_preferences(request=request).furigana:
        return None
    title, body = circular_ruby_html(circular=circular)
    return {"title": title, "body": body}


def _member_for(access: Access, household: Household) -> Member | None:
    return Member.objects.filter(household=household, user_id=access.user_id).first()


@community_view()
def circular_detail(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """Residents read here (opening is recorded); staff see the same page with their links."""
    receipt = None
    staff = selectors.can_staff_view(access=access, circular_id=circular_id)
    if access.household_ids:
        try:
            circular, receipt = selectors.circular_get_for_member(
                access=access, circular_id=circular_id
            )
        except Http404:
            if not staff:
                raise
    if receipt is not None and receipt.household is not None:
        if receipt.opened_at is None and receipt.confirmed_at is None:
            # Only the first view records the opening: later views (most of them) skip the
            # service's transaction and its re-read of the receipt.
            receipt = services.receipt_open(circular=circular, household=receipt.household)
    else:
        circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
        if circular.status != CircularStatus.PUBLISHED:
            return redirect("circulars:draft", slug=access.community.slug, circular_id=circular.pk)
    return render(
        request,
        "circulars/circular_detail.html",
        {
            "access": access,
            "circular": circular,
            "attachments": circular.attachments.all(),
            "receipt": receipt,
            "staff": staff,
            "ruby": _ruby(request, circular),
            "confirm_key": uuid.uuid4(),
            "preview": False,
            "answer_form": questions.answer_form(circular=circular, receipt=receipt),
        },
    )


@community_view()
@require_POST
def circular_confirm(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """「確認しました」: a POST carrying an idempotency key, so a retry records nothing new."""
    if rate_limited(scope="confirm", key=str(access.user_id)):
        return too_many(request)
    circular, receipt = selectors.circular_get_for_member(access=access, circular_id=circular_id)
    try:
        key = uuid.UUID(request.POST.get("key", ""))
    except ValueError:
        return HttpResponseBadRequest(
            _("The confirmation could not be read. Reload the page and press the button again.")
        )
    if receipt.household is None:
        raise Http404
    result = services.receipt_confirm(
        circular=circular,
        household=receipt.household,
        method=ReceiptMethod.APP,
        member=_member_for(access, receipt.household),
        recorded_by=request_user(request),
        key=key,
        receipt=receipt,
    )
    if result.recorded or result.replay:
        notice = _("Thank you. Your confirmation was recorded.")
    else:
        notice = _("This was already confirmed. Nothing more is needed.")
    if request.headers.get("HX-Request"):
        return render(
            request,
            "circulars/circular_detail.html#confirm",
            {"access": access, "circular": circular, "receipt": result.receipt, "notice": notice},
        )
    messages.success(request, notice)
    return redirect("circulars:detail", slug=access.community.slug, circular_id=circular.pk)


@community_view()
def inbox(request: HttpRequest, access: Access) -> HttpResponse:
    """The household's circulars with search; the home page shows the first few."""
    if not access.household_ids:
        raise Http404
    query = request.GET.get("q", "")[:100]
    limit_raw = request.GET.get("limit", "")
    limit = int_param(limit_raw) or 200
    limit = limit if 0 < limit <= 200 else 200
    items = selectors.inbox(access=access, query=query, limit=None if query else limit)
    template = "circulars/inbox.html"
    if request.headers.get("HX-Request"):
        template += "#inbox-list"
    return render(request, template, {"access": access, "items": items, "query": query})


@community_view()
def attachment_file(
    request: HttpRequest, access: Access, attachment_id: int, variant: str
) -> HttpResponseBase:
    """Attachments only through here: same visibility as the circular, served inert."""
    attachment = (
        Attachment.objects.filter(pk=attachment_id, circular__community=access.community)
        .select_related("circular")
        .first()
    )
    if attachment is None or variant not in {"display", "thumb"}:
        raise Http404
    if not selectors.can_staff_view(access=access, circular_id=attachment.circular_id):
        selectors.circular_get_for_member(access=access, circular_id=attachment.circular_id)
    field = attachment.thumbnail if variant == "thumb" and attachment.thumbnail else attachment.file
    is_pdf = attachment.kind == AttachmentKind.PDF
    response = FileResponse(
        field.open("rb"),
        content_type="application/pdf" if is_pdf else "image/jpeg",
        as_attachment=is_pdf,
        filename=(attachment.original_name or "file") if is_pdf else f"{attachment.pk}.jpg",
    )
    if not is_pdf:
        response["Content-Disposition"] = f'inline; filename="{attachment.pk}.jpg"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- The ledger (配布状況) ----------------------------------------------------------------


def _ledger_context(request: HttpRequest, access: Access, circular: Circular) -> dict[str, object]:
    status = request.GET.get("status", "")
    if status not in {
        "",
        selectors.STATUS_CONFIRMED,
        selectors.STATUS_OPENED,
        selectors.STATUS_NOT_YET,
    }:
        status = ""
    block_raw = request.GET.get("block", "")
    method = request.GET.get("method", "")
    if method not in ReceiptMethod.values:
        method = ""
    ledger = selectors.ledger_snapshot(
        access=access,
        circular=circular,
        status=status,
        block_id=int_param(block_raw),
        method=method,
    )
    from circulars.paper import paper_status

    status_by_block = paper_status(
        circular=circular, counts={item.block.pk: item.counts for item in ledger.blocks}
    )
    for item in ledger.blocks:
        item.paper = status_by_block.get(item.block.pk)
    can_proxy_blocks = (
        None if access.is_officer else access.block_ids
    )  # officers, 班長 and helpers record proxies for what they see
    return {
        "access": access,
        "circular": circular,
        "ledger": ledger,
        "methods": ReceiptMethod.choices,
        "proxy_methods": PROXY_CHOICES,
        "can_proxy_blocks": can_proxy_blocks,
        "query": request.GET.urlencode(),
        "has_questions": questions.circular_has_questions(circular=circular),
    }


@community_view(staff=True, roster=True)
def ledger(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    if circular.status != CircularStatus.PUBLISHED:
        raise Http404
    template = "circulars/ledger.html"
    if request.headers.get("HX-Request"):
        template += "#ledger-body"
    return render(request, template, _ledger_context(request, access, circular))


@community_view(staff=True, roster=True)
def followup(request: HttpRequest, access: Access) -> HttpResponse:
    """The 班長's phone view: who still needs a knock, a call or a hand-over. An open
    safety check comes first: every household of theirs nobody has heard from."""
    rows = selectors.followup_receipts(access=access)
    return render(
        request,
        "circulars/followup.html",
        {
            "access": access,
            "safety_checks": safety.safety_followup(access=access),
            "rows": rows,
            "proxy_methods": PROXY_CHOICES,
        },
    )


@community_view(staff=True, roster=True)
@require_POST
def ledger_proxy(
    request: HttpRequest, access: Access, circular_id: int, household_id: int
) -> HttpResponse:
    """A 班長's one-tap proxy confirmation: 手渡し / 電話 / 訪問."""
    circular = selectors.circular_get_for_staff(access=access, circular_id=circular_id)
    row = selectors.ledger_row(access=access, circular=circular, household_id=household_id)
    if safety.is_safety_check(circular):
        # A confirmation without 無事 / 支援が必要 says nothing about a household's safety.
        # ja: 安否確認は「安否を記録」から、無事か支援が必要かを記録してください。
        return HttpResponseBadRequest(
            _("Record a safety check with 「Record safety」."), content_type=PLAIN_TEXT
        )
    method = request.POST.get("method", "")
    if method not in {m.value for m in PROXY_METHODS} or row.household is None:
        return HttpResponseBadRequest(
            _("Choose how the household was reached."), content_type=PLAIN_TEXT
        )
    result = services.receipt_confirm(
        circular=circular,
        household=row.household,
        method=method,
        recorded_by=request_user(request),
        now=timezone.now(),
    )
    if not result.recorded:
        messages.info(request, _("This household had already confirmed."))
    if request.POST.get("back") == "followup":
        return redirect("circulars:followup", slug=access.community.slug)
    if request.headers.get("HX-Request"):
        row = selectors.ledger_row(access=access, circular=circular, household_id=household_id)
        return render(
            request,
            "circulars/ledger.html#ledger-row",
            {
                "access": access,
                "circular": circular,
                "row": row,
                "proxy_methods": PROXY_CHOICES,
                "has_questions": questions.circular_has_questions(circular=circular),
            },
        )
    return redirect("circulars:ledger", slug=access.community.slug, circular_id=circular.pk)
