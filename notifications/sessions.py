"""Forced disconnects: a socket must not outlive the login or the membership behind it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
