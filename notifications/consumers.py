"""WebSocket consumers: thin transport adapters, server → client only.

They authorise in ``connect()`` through the same selectors as the views, join groups built
from server-side ids, and forward events. Clients never write over the socket; writes are
HTTP POSTs with CSRF. On every (re)connect the page fetches a fresh snapshot over HTTP, so
an event lost while disconnected costs nothing.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from circulars.models import Receipt
from circulars.selectors import circular_get_for_staff, circular_staff_block_ids
from communities.models import Member
from communities.selectors import community_access_get
from notifications.groups import (
    household_group,
    ledger_block_group,
    ledger_totals_group,
    user_group,
)
from notifications.watchdog import CLOSE_CODE_LAYER_DOWN, watchdog


class ForwardingConsumer(AsyncJsonWebsocketConsumer):
    """Joins the groups ``authorise`` returns and forwards their events as they come."""

    groups_joined: list[str]
    closed: bool = False

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        # Once only: frames a flooding client queued behind the first would each close
        # again, and the server raises on a second close (the consumer then dies without
        # leaving its groups).
        if self.closed:
            return
        self.closed = True
        await super().close(code=code, reason=reason)

    async def authorise(self, user: Any) -> list[str] | None:
        raise NotImplementedError

    async def connect(self) -> None:
        self.groups_joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        groups = await self.authorise(user)
        if groups is None:
            await self.close(code=4404)
            return
        self.groups_joined = [user_group(user.pk), *groups]
        try:
            for group in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception:
            # The layer (Redis) is down: refuse, and the page polls until it is back.
            await self.close(code=CLOSE_CODE_LAYER_DOWN)
            return
        await self.accept()
        watchdog().watch(self)
        await self.send_json({"type": "hello"})

    async def disconnect(self, code: int) -> None:
        watchdog().forget(self)
        for group in getattr(self, "groups_joined", []):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                return  # the layer is down; its subscriptions went with it

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Server → client only: a client that talks is closed.
        await self.close(code=4400)

    async def event_forward(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    async def session_close(self, event: dict[str, Any]) -> None:
        """Forced disconnect: the member was removed, or this login logged out."""
        wanted = event.get("payload", {}).get("session_key", "")
        session = self.scope.get("session")
        if wanted and (session is None or session.session_key != wanted):
            return  # another phone of the same person logged out
        await self.close(code=4403)


@database_sync_to_async
def _member_groups(user_id: int) -> list[str]:
    return [
        household_group(pk)
        for pk in Member.objects.filter(user_id=user_id).values_list("household_id", flat=True)
    ]


class InboxConsumer(ForwardingConsumer):
    """A member's live inbox: events for their households."""

    async def authorise(self, user: Any) -> list[str] | None:
        return await _member_groups(user.pk)


@database_sync_to_async
def _ledger_groups(user: Any, slug: str, circular_id: int) -> list[str] | None:
    try:
        access = community_access_get(slug=slug, user=user)
        circular = circular_get_for_staff(access=access, circular_id=circular_id)
    except Http404:
        return None
    visible = circular_staff_block_ids(access=access, circular=circular)
    if visible is None:
        block_ids = set(
            Receipt.objects.filter(circular=circular).values_list("block_id", flat=True).distinct()
        )
        return [ledger_totals_group(circular.pk)] + [
            ledger_block_group(circular.pk, pk) for pk in sorted(block_ids)
        ]
    return [ledger_block_group(circular.pk, pk) for pk in sorted(visible)]


class LedgerConsumer(ForwardingConsumer):
    """The live 配布状況 of one circular, limited to the blocks the user may see."""

    async def authorise(self, user: Any) -> list[str] | None:
        kwargs = self.scope["url_route"]["kwargs"]
        return await _ledger_groups(user, kwargs["slug"], int(kwargs["circular_id"]))
