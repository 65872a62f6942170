"""WebSocket consumers: thin transport adapters, server → client only.

They authorise in ``connect()``, join groups built from server-side ids, and forward
events. Clients never write over the socket; writes are HTTP POSTs with CSRF.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from communities.models import Member
from notifications.groups import household_group, user_group


@database_sync_to_async
def _household_ids(user_id: int) -> list[int]:
    return list(Member.objects.filter(user_id=user_id).values_list("household_id", flat=True))


class InboxConsumer(AsyncJsonWebsocketConsumer):
    """A member's live inbox: events for their households and for themselves."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.groups_joined.append(user_group(user.pk))
        for household_id in await _household_ids(user.pk):
            self.groups_joined.append(household_group(household_id))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "groups": len(self.groups_joined)})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Server → client only: a client that talks is closed.
        await self.close(code=4400)

    async def session_close(self, event: dict[str, Any]) -> None:
        """Forced disconnect: the member was removed or logged out."""
        await self.close(code=4403)

    async def inbox_event(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])
