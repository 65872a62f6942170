"""View decorators that resolve the community and the user's access to it.

Each tenant view is wrapped by exactly one of these; the wrapped view receives ``access``.
Anyone without the needed place gets a 404 (never a 403 that confirms the URL exists).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Concatenate

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import render

from communities.selectors import Access, community_page_get, display_preferences_known

type CommunityView = Callable[Concatenate[HttpRequest, Access, ...], HttpResponseBase]


def community_view(
    *, officer: bool = False, staff: bool = False, roster: bool = False
) -> Callable[[CommunityView], Callable[..., HttpResponseBase]]:
    """Resolve ``slug`` into an ``Access`` and check it.

    officer: chair or officer only. staff: officers, block leaders and helpers.
    roster: the page shows personal data, so chair and officers need MFA first.
    """

    def decorator(view: CommunityView) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapper(
            request: HttpRequest, slug: str, *args: object, **kwargs: object
        ) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            page = community_page_get(slug=slug, user=request.user)
            display_preferences_known(request=request, preferences=page.preferences)
            access = page.access
            if officer and not access.is_officer:
                raise Http404
            if staff and not (access.is_officer or access.is_block_staff):
                raise Http404
            if roster and access.is_officer and not page.mfa_enabled:
                return render(
                    request, "communities/mfa_required.html", {"access": access}, status=403
                )
            return view(request, access, *args, **kwargs)

        return wrapper

    return decorator


def request_user(request: HttpRequest) -> User:
    """The logged-in user of a view that is already behind a login check."""
    user = request.user
    if not isinstance(user, User):
        raise Http404
    return user
