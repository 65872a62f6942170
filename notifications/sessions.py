"""Sockets and logins: who a socket belongs to, and closing it when the login or the
membership behind it ends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.core.exceptions import ValidationError
from django.db.models import CharField, StringAgg, Value
from django.db.models.functions import Cast
from django.utils.crypto import constant_time_compare

from communities.models import Member
from notifications.broadcast import Event, send_now, send_on_commit
from notifications.groups import user_group


@dataclass(frozen=True)
class SessionClose(Event):
    # Empty: every socket of the user (their membership ended); else only this login's.
    session_key: str = ""


def sockets_close_for_users(*, user_ids: Iterable[int]) -> None:
    """After commit, close every socket of these users (removed from their household)."""
    send_on_commit(
        groups=[user_group(pk) for pk in user_ids],
        event=SessionClose(type="session.close"),
        handler="session.close",
    )


def sockets_close_for_session(*, user_id: int, session_key: str) -> None:
    """Close the sockets that belong to one login (the person logged out on that phone)."""
    send_now(
        groups=[user_group(user_id)],
        event=SessionClose(type="session.close", session_key=session_key),
        handler="session.close",
    )


@dataclass(frozen=True)
class SocketLogin:
    """Who a socket belongs to, and the households whose events it may hear."""

    user: AbstractBaseUser
    household_ids: tuple[int, ...]


def _session_store() -> type[SessionBase]:
    store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    # cached_db: read the database (the truth) directly. In a pool thread Django makes a
    # cache object per asgiref context, that is per connect: through the cache each connect
    # opened a Redis connection of its own and kept it while the socket lived (3,000
    # sockets: +80 MB in uvicorn, +8 MB in Redis, and a seventh of a reconnect's time).
    return DatabaseSessionStore if issubclass(store, DatabaseSessionStore) else store


def socket_login_get(*, session_key: str | None) -> SocketLogin | None:
    """The logged-in user behind a socket's session cookie, or None: two queries.

    The same checks as ``django.contrib.auth.get_user`` (a live session, a backend still
    configured, an active user, the session hash that a password change invalidates), but
    the user arrives with their households in one query, so a (re)connect costs the
    database two queries in one trip through the thread pool instead of three in two. A
    session that fails the hash check is refused, not flushed: the next page load
    flushes it.
    """
    if not session_key:
        return None
    session = _session_store()(session_key)
    user_model = get_user_model()
    try:
        user_id = user_model._meta.pk.to_python(session[SESSION_KEY])  # the session query
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    backend = load_backend(backend_path)
    user: AbstractBaseUser | None
    if isinstance(backend, ModelBackend) and type(backend).get_user is ModelBackend.get_user:
        found = (
            user_model._default_manager.filter(pk=user_id)
            .annotate(
                households=StringAgg(Cast("memberships__household_id", CharField()), Value(","))
            )
            .first()
        )
        if found is None or not backend.user_can_authenticate(found):
            return None
        user = found
        household_ids = tuple(int(pk) for pk in (found.households or "").split(",") if pk)
    else:  # a backend with a lookup of its own: that, then the households
        user = backend.get_user(user_id)
        if user is None:
            return None
        household_ids = tuple(
            Member.objects.filter(user_id=user.pk).values_list("household_id", flat=True)
        )
    wanted = session.get(HASH_SESSION_KEY)
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not wanted or not any(constant_time_compare(wanted, known) for known in hashes):
        return None
    return SocketLogin(user=user, household_ids=household_ids)
