"""Joining a household with an invite card, and one-time login links.

No password anywhere: the card (or a phone showing a short-lived QR) is the credential,
and the phone then stays logged in for months.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from communities import services
from communities.decorators import request_user
from communities.forms import JoinCodeForm, JoinForm, form_errors_add
from communities.middleware import LONG_SESSION_KEY
from communities.ratelimit import client_address, rate_limited, too_many
from communities.selectors import InviteStatus, block_leaders_for, household_invite_lookup
from communities.tokens import code_normalise


def start_long_session(request: HttpRequest) -> None:
    request.session.set_expiry(timedelta(days=settings.KAIRAN_RESIDENT_SESSION_DAYS))
    request.session[LONG_SESSION_KEY] = True


def _refused(request: HttpRequest, status: str, invite: object | None) -> HttpResponse:
    household = getattr(invite, "household", None)
    return render(
        request,
        "communities/join_refused.html",
        {
            "status": status,
            "household": household,
            "leaders": block_leaders_for(household=household) if household else [],
        },
        status=410
        if status in {InviteStatus.USED, InviteStatus.EXPIRED, InviteStatus.REVOKED}
        else 404,
    )


def _join(request: HttpRequest, *, token: str = "", code: str = "") -> HttpResponse:
    lookup = household_invite_lookup(token=token or None, code=code or None)
    if lookup.status != InviteStatus.OK or lookup.invite is None:
        return _refused(request, lookup.status, lookup.invite)
    household = lookup.invite.household
    form = JoinForm(request.POST if request.POST.get("step") == "join" else None)
    if form.is_bound and form.is_valid():
        user = request_user(request) if request.user.is_authenticated else None
        try:
            member = services.household_invite_redeem(
                token=token, code=code, user=user, **form.cleaned_data
            )
        except services.InviteRefused as refused:
            return _refused(request, refused.status, refused.invite)
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            if user is None:
                login(request, member.user, backend="django.contrib.auth.backends.ModelBackend")
            if not member.user.email:  # as login_link: email logins keep the short session
                start_long_session(request)
            return redirect("home")
    return render(
        request,
        "communities/join.html",
        {
            "form": form,
            "household": household,
            "community": household.community,
            "token": token,
            "code": code,
            "expires_at": lookup.invite.expires_at,
        },
    )


@require_http_methods(["GET", "POST"])
def join_token(request: HttpRequest, token: str) -> HttpResponse:
    if request.method == "POST" and rate_limited(scope="join", key=client_address(request)):
        return too_many(request)
    return _join(request, token=token)


@require_http_methods(["GET", "POST"])
def join_code(request: HttpRequest) -> HttpResponse:
    """Type the code printed under the QR, for phones whose camera cannot read it."""
    if request.method == "POST" and rate_limited(scope="join", key=client_address(request)):
        return too_many(request)
    if request.method == "POST" and request.POST.get("step") == "join":
        return _join(request, code=code_normalise(request.POST.get("code", "")))
    form = JoinCodeForm(request.POST or None)
    if form.is_bound and form.is_valid():
        code = code_normalise(form.cleaned_data["code"])
        if len(code) != 8:
            form.add_error(
                "code", _("The code has 8 letters and digits. Please check the card again.")
            )
        elif household_invite_lookup(code=code).status == InviteStatus.UNKNOWN:
            if rate_limited(scope="join-miss", key=client_address(request)):
                return too_many(request)
            form.add_error("code", _("We could not find this code. Please check the card again."))
        else:
            return _join(request, code=code)
    return render(request, "communities/join_code.html", {"form": form})


@require_http_methods(["GET", "POST"])
def login_link(request: HttpRequest, token: str) -> HttpResponse:
    """A one-time login link. GET shows a button; the POST spends the link."""
    if request.method == "POST":
        user = services.login_link_redeem(token=token)
        if user is None:
            return render(request, "communities/login_link.html", {"refused": True}, status=410)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        if not getattr(user, "email", ""):
            start_long_session(request)
        return redirect("home")
    return render(request, "communities/login_link.html", {"refused": False})
