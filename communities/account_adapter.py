from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest


class AccountAdapter(DefaultAccountAdapter):
    """Officers and helpers sign in by email code; residents never come through here."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Anyone may start an association; residents join with invite cards instead.
        return True

    def get_login_redirect_url(self, request: HttpRequest) -> str:
        return "/"

    def logout(self, request: HttpRequest) -> None:
        """Log out, and close the live sockets that this login had open."""
        from notifications.sessions import sockets_close_for_session

        user_id, session_key = request.user.pk, request.session.session_key
        super().logout(request)
        if user_id and session_key:
            sockets_close_for_session(user_id=user_id, session_key=session_key)
