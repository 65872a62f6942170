"""A member's own page: their household's data and consents, export, adding a phone."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from communities import services
from communities.decorators import request_user
from communities.forms import ContactForm
from communities.models import InviteKind, Member
from communities.pdf import qr_png_data_uri
from communities.tokens import code_format


def _memberships(request: HttpRequest) -> list[Member]:
    return list(
        Member.objects.filter(user=request_user(request))
        .select_related("household__block", "household__community")
        .order_by("household__community__name", "pk")
    )


def _posted_membership(request: HttpRequest) -> Member:
    """The person's membership of the household named in the POST, or 404."""
    household_id = request.POST.get("household", "")
    for membership in _memberships(request):
        if str(membership.household_id) == household_id:
            return membership
    raise Http404


@login_required
def me(request: HttpRequest) -> HttpResponse:
    memberships = _memberships(request)
    households = [
        {
            "membership": membership,
            "household": membership.household,
            "members": list(membership.household.members.order_by("joined_at", "pk")),
            "contact_form": ContactForm(
                initial={
                    "email": membership.email,
                    "notify_mode": membership.household.notify_mode,
                },
                prefix=f"h{membership.household_id}",
            ),
        }
        for membership in memberships
    ]
    return render(request, "communities/me.html", {"households": households})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@login_required
def me_export(request: HttpRequest) -> HttpResponse:
    """Everything we hold about the person's households, as JSON (個人情報保護法: 開示)."""
    user = request_user(request)
    data: dict[str, Any] = {
        "exported_at": timezone.now().isoformat(),
        "account": {
            "name": user.get_full_name(),
            "email": user.email,
            "date_joined": user.date_joined.isoformat(),
        },
        "households": [],
    }
    for membership in _memberships(request):
        household = membership.household
        data["households"].append(
            {
                "community": household.community.name,
                "purpose": household.community.roster_purpose,
                "block": household.block.name,
                "label": household.label,
                "address": household.address,
                "phone": household.phone,
                "delivery_mode": household.delivery_mode,
                "helper_note": household.helper_note,
                "members": [
                    {
                        "name": member.display_name,
                        "kind": member.kind,
                        "joined_at": member.joined_at.isoformat(),
                        "consented_at": member.consented_at.isoformat(),
                        "consent_version": member.consent_version,
                        "is_you": member.user_id == user.pk,
                    }
                    for member in household.members.order_by("joined_at", "pk")
                ],
                # When the household opened and confirmed each circular: personal data too.
                "circulars": [
                    {
                        "title": receipt.circular.title,
                        "published_at": _iso(receipt.circular.published_at),
                        "opened_at": _iso(receipt.opened_at),
                        "confirmed_at": _iso(receipt.confirmed_at),
                        "method": receipt.method,
                    }
                    for receipt in household.receipts.select_related("circular").order_by(
                        "circular__published_at", "pk"
                    )
                ],
            }
        )
    response = HttpResponse(
        json.dumps(data, ensure_ascii=False, indent=2),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = 'attachment; filename="kairan-my-data.json"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def add_device(request: HttpRequest) -> HttpResponse:
    """Show a short-lived QR that lets a second phone or a family supporter join."""
    membership = _posted_membership(request)
    issued = services.household_invite_issue(
        household=membership.household, created_by=request_user(request), kind=InviteKind.DEVICE
    )
    url = request.build_absolute_uri(f"/join/{issued.token}/")
    return render(
        request,
        "communities/add_device.html",
        {
            "household": membership.household,
            "qr": qr_png_data_uri(url),
            "url": url,
            "code": code_format(issued.code),
            "minutes": services.INVITE_DEVICE_MINUTES,
            "expires_at": issued.invite.expires_at,
            "debug": settings.DEBUG,
        },
    )


@login_required
@require_POST
def me_contact(request: HttpRequest) -> HttpResponse:
    """Set the email for circulars and the household's notification rhythm."""
    membership = _posted_membership(request)
    form = ContactForm(request.POST, prefix=f"h{membership.household_id}")
    if form.is_valid():
        try:
            services.member_contact_update(member=membership, **form.cleaned_data)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, _("Your notification settings were saved."))
    else:
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
    return redirect("me")
