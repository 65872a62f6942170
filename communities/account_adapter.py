from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _


class AccountAdapter(DefaultAccountAdapter):
    """Officers and helpers sign in by email code; residents never come through here."""

    # allauth says "too many failed login attempts" also when codes were only requested
    # often: say what happened and what to do instead.
    error_messages = {
        **DefaultAccountAdapter.error_messages,
        "too_many_login_attempts": _(
            "There were too many attempts with this email address. "
            "Wait a few minutes, then try again."
        ),
    }

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Anyone may start an association; residents join with invite cards instead.
        return True

    def get_login_redirect_url(self, request: HttpRequest) -> str:
        return "/"

    def send_mail(self, template_prefix: str, email: str, context: dict[str, Any]) -> None:
        """Mails say they come from Kairan, not from the server's host name."""
        site = SimpleNamespace(
            name=gettext("Kairan"), domain=urlsplit(settings.KAIRAN_PUBLIC_URL).netloc
        )
        super().send_mail(template_prefix, email, {**context, "current_site": site})

    def logout(self, request: HttpRequest) -> None:
        """Log out, and close the live sockets that this login had open."""
        from notifications.sessions import sockets_close_for_session

        user_id, session_key = request.user.pk, request.session.session_key
        super().logout(request)
        if user_id and session_key:
            sockets_close_for_session(user_id=user_id, session_key=session_key)
