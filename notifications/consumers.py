"""WebSocket consumers: thin transport adapters, server → client only.

They authorise in ``connect()`` through the same selectors as the views, join groups built
from server-side ids, and forward events. Clients never write over the socket; writes are
HTTP POSTs with CSRF. On every (re)connect the page fetches a fresh snapshot over HTTP, so
an event lost while disconnected costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import Http404
from django.http.cookie import parse_cookie

from circulars.models import Receipt
from circulars.selectors import circular_get_for_staff, circular_staff_block_ids
from communities.selectors import community_access_get
from notifications.groups import (
    household_group,
    ledger_block_group,
    ledger_totals_group,
    user_group,
)
from notifications.sessions import SocketLogin, socket_login_get
from notifications.watchdog import CLOSE_CODE_LAYER_DOWN, watchdog

logger = logging.getLogger(__name__)

CLOSE_CODE_BUSY = 4429


class Admission:
    """Admission control for connects, per server process.

    A mass reconnect (a network blip, a server restart) brings every socket back within
    seconds. At most ``threads`` of them talk to the database at once (each holds a
    pooled connection); past ``queue_limit`` waiting, a newcomer is turned away at once
    with CLOSE_CODE_BUSY and comes back after a random pause (kairan.js), instead of
    waiting out its handshake timeout behind thousands of others.
    """

    def __init__(self, *, threads: int, queue_limit: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ws-auth")
        self.queue_limit = queue_limit
        self.waiting = 0

    def full(self) -> bool:
        return self.waiting >= self.queue_limit

    async def run[T](self, work: Callable[[], T]) -> T:
        self.waiting += 1
        try:
            return await database_sync_to_async(
                work, thread_sensitive=False, executor=self.executor
            )()
        finally:
            self.waiting -= 1


admission = Admission(threads=4, queue_limit=2000)


async def _leave(layer: Any, channel: str, groups: list[str]) -> None:
    for group in groups:
        try:
            await layer.group_discard(group, channel)
        except Exception:
            return  # the layer is down; its subscriptions went with it


class Leaver:
    """Leaves the groups of closed sockets a few seconds later, in the background.

    When every socket drops at once, each would unsubscribe its groups one command at a
    time, under the same lock that the sockets coming back need to subscribe. Put off,
    the newcomers go first, and a household whose phone came back to this process keeps
    its Redis subscription instead of dropping and taking it again. A closed socket's own
    channel is gone at once, so nothing is delivered to it meanwhile.
    """

    DELAY_SECONDS = 5.0

    def __init__(self) -> None:
        self.pending: list[tuple[Any, str, list[str]]] = []
        self.task: asyncio.Task[None] | None = None

    def leave(self, layer: Any, channel: str, groups: list[str]) -> None:
        self.pending.append((layer, channel, groups))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.pending:
            await asyncio.sleep(self.DELAY_SECONDS)
            batch, self.pending = self.pending, []
            for layer, channel, groups in batch:
                await _leave(layer, channel, groups)


_leavers: dict[asyncio.AbstractEventLoop, Leaver] = {}


def leaver() -> Leaver:
    loop = asyncio.get_running_loop()
    if loop not in _leavers:
        _leavers[loop] = Leaver()
    return _leavers[loop]


def _session_key(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(settings.SESSION_COOKIE_NAME)
    return None


class ForwardingConsumer(AsyncJsonWebsocketConsumer):
    """Joins the groups ``authorise`` returns and forwards their events as they come."""

    groups_joined: list[str]
    session_key: str | None = None
    closed: bool = False

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        # Once only: frames a flooding client queued behind the first would each close
        # again, and the server raises on a second close (the consumer then dies without
        # leaving its groups).
        if self.closed:
            return
        self.closed = True
        await super().close(code=code, reason=reason)

    def authorise(self, login: SocketLogin) -> list[str] | None:
        """The groups this login may hear on this socket, or None (404). In a thread."""
        raise NotImplementedError

    def _login_and_groups(self) -> tuple[SocketLogin | None, list[str] | None]:
        login = socket_login_get(session_key=self.session_key)
        return login, (self.authorise(login) if login is not None else None)

    async def connect(self) -> None:
        self.groups_joined = []
        self.session_key = _session_key(self.scope)
        if not self.session_key:
            await self.close(code=4401)
            return
        if admission.full():
            await self.close(code=CLOSE_CODE_BUSY)
            return
        # One trip through the thread pool: the session, the user with their households,
        # and whatever else ``authorise`` reads.
        login, groups = await admission.run(self._login_and_groups)
        if login is None:
            await self.close(code=4401)
            return
        if groups is None:
            await self.close(code=4404)
            return
        self.groups_joined = [user_group(login.user.pk), *groups]
        try:
            for group in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception:
            # The layer (Redis) is down: refuse, and the page polls until it is back.
            logger.warning("socket refused: joining its groups failed", exc_info=True)
            await self.close(code=CLOSE_CODE_LAYER_DOWN)
            return
        await self.accept()
        watchdog().watch(self)
        await self.send_json({"type": "hello"})

    async def disconnect(self, code: int) -> None:
        watchdog().forget(self)
        groups = getattr(self, "groups_joined", [])
        if isinstance(self.channel_layer, InMemoryChannelLayer):
            await _leave(self.channel_layer, self.channel_name, groups)
        else:
            leaver().leave(self.channel_layer, self.channel_name, groups)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs close_old_connections through the thread-sensitive sync thread
        # before every handler: a thread hop costing 0.1-0.2 ms of CPU per message, more
        # than the rest of forwarding an event, with every socket of the process queued on
        # that one thread (a fan-out pays it once per socket, a reconnect storm once per
        # connect and per disconnect). Nothing here uses that thread's connection: the
        # only queries, connect's, run through database_sync_to_async in the admission
        # pool, which closes stale connections around each call.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Server → client only: a client that talks is closed.
        await self.close(code=4400)

    async def event_forward(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    async def session_close(self, event: dict[str, Any]) -> None:
        """Forced disconnect: the member was removed, or this login logged out."""
        wanted = event.get("payload", {}).get("session_key", "")
        if wanted and self.session_key != wanted:
            return  # another phone of the same person logged out
        await self.close(code=4403)


class InboxConsumer(ForwardingConsumer):
    """A member's live inbox: events for their households."""

    def authorise(self, login: SocketLogin) -> list[str] | None:
        return [household_group(pk) for pk in login.household_ids]


def _ledger_groups(user: AbstractBaseUser, slug: str, circular_id: int) -> list[str] | None:
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

    def authorise(self, login: SocketLogin) -> list[str] | None:
        kwargs = self.scope["url_route"]["kwargs"]
        return _ledger_groups(login.user, kwargs["slug"], int(kwargs["circular_id"]))
