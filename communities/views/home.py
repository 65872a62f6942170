"""Home, help, display preferences and creating an association."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from communities import services
from communities.decorators import request_user
from communities.forms import CommunityForm, form_errors_add
from communities.selectors import PREF_COOKIE, communities_for_user, community_access_for


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return render(request, "communities/landing.html")
    from circulars.selectors import inbox

    user = request_user(request)
    places = communities_for_user(user=user)
    inboxes = []
    for place in places:
        if place.is_member:
            access = community_access_for(community=place.community, user_id=user.pk)
            inboxes.append({"access": access, "items": inbox(access=access, limit=10)})
    return render(
        request,
        "communities/home.html",
        {"inboxes": inboxes, "staff_places": [place for place in places if place.roles]},
    )


def help_page(request: HttpRequest) -> HttpResponse:
    return render(request, "communities/help.html")


@require_POST
def preferences(request: HttpRequest) -> HttpResponse:
    """Toggle larger text, high contrast or furigana; kept per person, or per browser when
    logged out."""
    setting = request.POST.get("setting", "")
    if setting not in {"large_text", "high_contrast", "furigana"}:
        return HttpResponseBadRequest(_("Unknown setting."))
    value = request.POST.get("value") == "on"
    next_url = request.POST.get("next", "/")
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = "/"
    response = redirect(next_url)
    if request.user.is_authenticated:
        user = request_user(request)
        if setting == "large_text":
            services.preference_update(user=user, large_text=value)
        elif setting == "high_contrast":
            services.preference_update(user=user, high_contrast=value)
        else:
            services.preference_update(user=user, furigana=value)
    else:
        current = set(filter(None, request.COOKIES.get(PREF_COOKIE, "").split(".")))
        if value:
            current.add(setting)
        else:
            current.discard(setting)
        response.set_cookie(
            PREF_COOKIE, ".".join(sorted(current)), max_age=60 * 60 * 24 * 365, samesite="Lax"
        )
    return response


@login_required
@require_http_methods(["GET", "POST"])
def community_new(request: HttpRequest) -> HttpResponse:
    """Any logged-in person may start an association, and becomes its chair."""
    form = CommunityForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            community = services.community_create(chair=request_user(request), **form.cleaned_data)
        except ValidationError as error:
            form_errors_add(form, error)
        else:
            messages.success(request, _("%(name)s was created.") % {"name": community.name})
            return redirect("communities:dashboard", slug=community.slug)
    return render(request, "communities/community_new.html", {"form": form})
