"""安否確認 pages: the chair starts a check and watches the live board; residents answer.

The resident's answer page is deliberately tiny and stands alone (no base template, no
htmx): it must open on an old Android over a failing mobile network. It works as a plain
form POST; its small script adds the offline queue (the service worker stores an answer
made without signal and sends it when the phone is back online).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django import forms
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from circulars import safety, selectors, services
from circulars.models import Circular, Receipt, ReceiptMethod, SafetyReport, SafetyStatus
from communities.decorators import community_view, request_user
from communities.forms import form_errors_add
from communities.models import Block, Household, Member
from communities.ratelimit import rate_limited, too_many
from communities.selectors import Access

# --- Starting a check ---------------------------------------------------------------------


class SafetyStartForm(forms.Form):
    # No default: a real check and a drill must each be chosen on purpose.
    mode = forms.ChoiceField(
        # ja: 訓練か本番か
        label=gettext_lazy("Drill or real?"),
        widget=forms.RadioSelect,
        choices=[
            # ja: 訓練 (練習です)
            ("drill", gettext_lazy("Drill (practice)")),
            # ja: 本番 (実際の災害です)
            ("real", gettext_lazy("Real (an actual disaster)")),
        ],
        # ja: 「訓練」か「本番」を選んでください。
        error_messages={"required": gettext_lazy("Choose 「Drill」 or 「Real」.")},
    )
    message = forms.CharField(
        # ja: ひとこと (なくても送れます)
        label=gettext_lazy("A short message (optional)"),
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    audience = forms.ChoiceField(
        # ja: 送る先
        label=gettext_lazy("Send to"),
        widget=forms.RadioSelect,
        choices=[
            # ja: すべての班
            ("all", gettext_lazy("All blocks")),
            # ja: 選んだ班だけ
            ("chosen", gettext_lazy("Chosen blocks only")),
        ],
        initial="all",
    )
    blocks = forms.ModelMultipleChoiceField(
        label=gettext_lazy("Blocks"),
        queryset=Block.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args: object, access: Access, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["blocks"]
        assert isinstance(field, forms.ModelMultipleChoiceField)
        field.queryset = Block.objects.filter(community=access.community).order_by("position", "pk")

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("audience") == "chosen" and not data.get("blocks"):
            # ja: 送る班を選んでください。
            self.add_error("blocks", _("Choose the blocks to send to."))
        return data

    def chosen_blocks(self) -> list[Block]:
        if self.cleaned_data.get("audience") != "chosen":
            return []
        return list(self.cleaned_data.get("blocks") or [])


def _audience_size(access: Access, blocks: list[Block]) -> int:
    households = Household.objects.filter(block__community=access.community)
    if blocks:
        households = households.filter(block__in=blocks)
    return households.count()


@community_view(officer=True)
@require_http_methods(["GET", "POST"])
def safety_start(request: HttpRequest, access: Access) -> HttpResponse:
    """Two steps: fill in, then confirm (it notifies every household at once, even at
    night), so a stray tap never starts one."""
    form = SafetyStartForm(request.POST or None, access=access)
    if request.method == "POST" and form.is_valid():
        blocks = form.chosen_blocks()
        if request.POST.get("confirmed") != "1":
            return render(
                request,
                "circulars/safety/start_confirm.html",
                {
                    "access": access,
                    "form": form,
                    "drill": form.cleaned_data["mode"] == "drill",
                    "blocks": blocks,
                    "households": _audience_size(access, blocks),
                },
            )
        try:
            circular = safety.safety_check_start(
                community=access.community,
                author=request_user(request),
                drill=form.cleaned_data["mode"] == "drill",
                message=form.cleaned_data["message"],
                blocks=blocks,
            )
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            return redirect(
                "circulars:safety_board", slug=access.community.slug, circular_id=circular.pk
            )
    return render(request, "circulars/safety/start.html", {"access": access, "form": form})


# --- The chair's board --------------------------------------------------------------------


@community_view(staff=True, roster=True)
def safety_board(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """The live board; the same visibility as the ledger (a 班長 sees their own blocks)."""
    board = safety.safety_board_for(access=access, circular_id=circular_id)
    template = "circulars/safety/board.html"
    if request.headers.get("HX-Request"):
        template += "#board-body"
    return render(
        request,
        template,
        {"access": access, "circular": board.circular, "board": board},
    )


# --- The resident's answer page ----------------------------------------------------------


def _answerable(access: Access, circular_id: int) -> tuple[Circular, Receipt, Household]:
    """The check and the member's household, or 404 (another association's check, a
    circular that is not a check, a check not sent to this household)."""
    circular, receipt = selectors.circular_get_for_member(access=access, circular_id=circular_id)
    if not safety.is_safety_check(circular) or receipt.household is None:
        raise Http404
    return circular, receipt, receipt.household


def _bad(request: HttpRequest, field: str, message: str) -> HttpResponse:
    """400 naming the field, as JSON for the service worker or a short page."""
    if _wants_json(request):
        return JsonResponse({"error": message, "field": field}, status=400)
    return render(
        request,
        "circulars/safety/answer_error.html",
        {"field": field, "message": message},
        status=400,
    )


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _tap_time(raw: str) -> datetime | None:
    """The phone's clock at the tap, in milliseconds since the epoch (the service worker
    sends a queued answer later than it was made). Empty: now."""
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 15:
        raise ValueError(raw)
    return datetime.fromtimestamp(int(raw) / 1000, tz=UTC)


def _status_text(report: SafetyReport | None) -> str:
    if report is None:
        return ""
    when = formats.date_format(timezone.localtime(report.reported_at), "H:i")
    if report.status == SafetyStatus.HELP:
        # ja: 「支援が必要」と伝えました %(time)s
        return _("You told us you need help. %(time)s") % {"time": when}
    # ja: 無事と伝えました %(time)s
    return _("You told us you are safe. %(time)s") % {"time": when}


def answer_page(
    request: HttpRequest, *, circular: Circular, household: Household, back_url: str
) -> HttpResponse:
    """The tiny page (also behind a mail's signed link, for households without the app)."""
    receipt = services.receipt_open(circular=circular, household=household)
    current = safety.household_safety(receipt=receipt)
    return render(
        request,
        "circulars/safety/answer.html",
        {
            "circular": circular,
            "action": request.path,
            "back_url": back_url,
            "current": current,
            "current_text": _status_text(current),
            "key": uuid.uuid4(),
            "suggestions": safety.NOTE_SUGGESTIONS,
        },
    )


def answer_record(
    request: HttpRequest,
    *,
    circular: Circular,
    household: Household,
    method: str,
    member: Member | None,
    recorded_by: User | None,
) -> HttpResponse | None:
    """Record a POSTed answer: an error response (400 naming the field), the JSON reply the
    service worker wants, or None for a form post (the caller redirects)."""
    status = request.POST.get("status", "")
    if status not in safety.ANSWERS:
        return _bad(request, "status", _("Choose 「Safe」 or 「Needs help」."))
    try:
        key = uuid.UUID(request.POST.get("key", ""))
    except ValueError:
        # ja: 回答を読み取れませんでした。ページを開き直して、もう一度押してください。
        return _bad(
            request, "key", _("The answer could not be read. Reload the page and tap again.")
        )
    try:
        at = _tap_time(request.POST.get("at", "").strip())
    except (ValueError, OverflowError, OSError):
        # ja: 押した時刻を読み取れませんでした。
        return _bad(request, "at", _("The time of the tap could not be read."))
    picks = request.POST.getlist("pick")
    if any(pick not in safety.NOTE_SUGGESTIONS for pick in picks):
        # ja: ひとことは一覧から選んでください。
        return _bad(request, "pick", _("Choose a note from the list."))
    note = "、".join([*picks, request.POST.get("note", "").strip()]).strip("、")
    try:
        result = safety.safety_report(
            circular=circular,
            household=household,
            status=status,
            method=method,
            note=note,
            member=member,
            recorded_by=recorded_by,
            key=key,
            at=at,
        )
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        return _bad(request, field, " ".join(messages))
    if not _wants_json(request):
        return None
    return JsonResponse(
        {
            "status": result.status,
            "replay": result.replay,
            "superseded": result.superseded,
            "text": _status_text(result.current),
        }
    )


@community_view()
@require_http_methods(["GET", "POST"])
def safety_answer(request: HttpRequest, access: Access, circular_id: int) -> HttpResponse:
    """無事 / 支援が必要 in one tap. A POST carries a client key (a resend is the same
    answer) and, when sent late from the offline queue, the moment of the tap."""
    if request.method == "POST" and rate_limited(scope="confirm", key=str(access.user_id)):
        return too_many(request)
    circular, _receipt, household = _answerable(access, circular_id)
    if request.method == "GET":
        return answer_page(
            request,
            circular=circular,
            household=household,
            back_url=reverse("circulars:inbox", args=[access.community.slug]),
        )
    response = answer_record(
        request,
        circular=circular,
        household=household,
        method=ReceiptMethod.APP,
        member=Member.objects.filter(household=household, user_id=access.user_id).first(),
        recorded_by=request_user(request),
    )
    if response is not None:
        return response
    return redirect("circulars:safety_answer", slug=access.community.slug, circular_id=circular.pk)
