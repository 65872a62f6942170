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
