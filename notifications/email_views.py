"""The page a mail's signed link opens: read the circular and confirm it, without logging in.

The token names one (circular, household); the page shows only that circular and that
household's own receipt. Confirming is a CSRF-protected POST to the same address (the CSRF
cookie is set by the GET, so no session is needed).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from circulars import safety, safety_views, services
from circulars.models import Circular, ReceiptMethod
from communities.models import Household
from communities.ratelimit import rate_limited, too_many
from notifications.email import EmailLinkInvalid, email_link_read, email_link_receipt


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def email_circular(request: HttpRequest, token: str) -> HttpResponse:
    try:
        circular_id, household_id = email_link_read(token)
    except EmailLinkInvalid as error:
        return render(
            request,
            "notifications/email_link_invalid.html",
            {"expired": error.expired},
            status=410,
        )
    receipt = email_link_receipt(circular_id=circular_id, household_id=household_id)
    circular, household = receipt.circular, receipt.household
    assert household is not None  # email_link_receipt only returns live households
    if safety.is_safety_check(circular):
        return _safety_by_email(request, circular=circular, household=household)
    notice = ""
    if request.method == "POST":
        result = services.receipt_confirm(
            circular=circular, household=household, method=ReceiptMethod.EMAIL
        )
        receipt = result.receipt
        if result.recorded:
            notice = _("Thank you. Your confirmation was recorded.")
        else:
            notice = _("This was already confirmed. Nothing more is needed.")
    else:
        receipt = services.receipt_open(circular=circular, household=household)
    return render(
        request,
        "notifications/email_circular.html",
        {
            "circular": circular,
            "receipt": receipt,
            "notice": notice,
            "has_attachments": circular.attachments.exists(),
        },
    )


def _safety_by_email(
    request: HttpRequest, *, circular: Circular, household: Household
) -> HttpResponse:
    """A household without the app answers a 安否確認 from its mail: the same tiny page,
    無事 / 支援が必要, recorded as answered by mail (the token is the credential)."""
    if request.method == "GET":
        return safety_views.answer_page(
            request, circular=circular, household=household, back_url=""
        )
    if rate_limited(scope="confirm", key=f"email:{household.pk}"):
        return too_many(request)
    response = safety_views.answer_record(
        request,
        circular=circular,
        household=household,
        method=ReceiptMethod.EMAIL,
        member=None,
        recorded_by=None,
    )
    return response if response is not None else redirect(request.path)
