"""Web Push with VAPID: the server key, people's subscriptions, and sending to them.

A push message says only *that* something happened ("a new circular", its id and the page to
open), never what: push services and lock screens are outside the association, so the page
fetches the rest after the person has opened it. ``push_payload_encode`` enforces that.

Sending never raises for one subscription: a push service that refuses, fails or hangs is
counted and logged, and the others still go out. A 404 or 410 means the browser dropped the
subscription, so it is deleted here.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import http_ece
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from py_vapid import Vapid02

from communities.models import Member
from notifications.models import PushSubscription

logger = logging.getLogger(__name__)

# Lock screens and push services are outside the association: ids and flags only.
ALLOWED_PAYLOAD_KEYS = frozenset({"type", "id", "url", "urgent", "drill", "count"})
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
PUSH_TIMEOUT_SECONDS = 5.0
# Enough to overlap a few slow push services; each sending thread keeps its connections.
MAX_PARALLEL_SENDS = 8
# RFC 8292 §2 allows a VAPID JWT to live up to 24 hours. One signed header per push
# service is reused for 12 hours and re-signed an hour before it expires, instead of
# signing a token for every message (a city-wide safety check sends 100,000).
VAPID_TOKEN_LIFETIME = 12 * 60 * 60
VAPID_RENEW_BEFORE = 60 * 60
KEY_FILE_NAME = "vapid_private.pem"

# RFC 8030 §5.4: a topic is at most 32 characters of the URL-safe base64 alphabet.
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,39}$")
# A path on this site, ASCII only, so no name or title can ride along in it.
_URL_RE = re.compile(r"^/(?!/)[A-Za-z0-9/_.~%?=&-]{0,300}$")
_ENDPOINT_MAX = 1000


# --- The server's key -------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict base64url (padding optional): raises ValueError on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as error:
        raise ValueError("not base64url") from error


def _public_key_of(vapid: Vapid02) -> str:
    point = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _b64url(point)


_key_lock = threading.Lock()
_key_cache: dict[str, Vapid02] = {}


def _vapid_from_setting(private_key: str) -> Vapid02:
    # An environment variable cannot always hold newlines; accept "\n" escapes in a PEM.
    text = private_key.strip().replace("\\n", "\n")
    if "-----BEGIN" in text:
        vapid = Vapid02.from_pem(text.encode("ascii"))
    else:
        # A raw 32-byte scalar or a DER key, base64url: what `vapid --gen` tools print.
        vapid = Vapid02.from_string(text)
    expected = settings.KAIRAN_VAPID_PUBLIC_KEY.strip().rstrip("=")
    if expected and expected != _public_key_of(vapid):
        raise ImproperlyConfigured(
            "KAIRAN_VAPID_PUBLIC_KEY does not belong to KAIRAN_VAPID_PRIVATE_KEY"
        )
    return vapid


def _vapid_from_file(path: Path) -> Vapid02:
    """Read the embedded key, creating it once. Several processes (web, worker, scheduler)
    may start together: the key is written to a private temporary file and hard-linked into
    place, so exactly one of them wins and everyone reads the winner's key."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = Vapid02()
        fresh.generate_keys()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(fresh.private_pem())
                handle.flush()
                os.fsync(handle.fileno())
            # If another process created it first, theirs is the key.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return Vapid02.from_pem(path.read_bytes())


def vapid_key() -> Vapid02:
    """The server's VAPID signing key: from the environment, else the embedded key file."""
    configured = settings.KAIRAN_VAPID_PRIVATE_KEY
    cache_key = "setting:" + configured if configured else "file:" + str(settings.DATA_DIR)
    with _key_lock:
        vapid = _key_cache.get(cache_key)
        if vapid is None:
            if configured:
                vapid = _vapid_from_setting(configured)
            else:
                vapid = _vapid_from_file(Path(settings.DATA_DIR) / KEY_FILE_NAME)
            _key_cache[cache_key] = vapid
        return vapid


def vapid_public_key() -> str:
    """The browser's ``applicationServerKey``: the uncompressed P-256 point, base64url."""
    return _public_key_of(vapid_key())


# --- Subscriptions ----------------------------------------------------------------------


class PushSubscriptionInvalid(ValueError):
    """A subscription from the browser that cannot be used; ``field`` names the culprit."""

    def __init__(self, *, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SubscriptionData:
    endpoint: str
    p256dh: str
    auth: str


def push_subscription_parse(*, data: object) -> SubscriptionData:
    """Validate ``PushSubscription.toJSON()`` as the browser sends it."""
    if not isinstance(data, dict):
        raise PushSubscriptionInvalid(field="subscription", message="expected a JSON object")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise PushSubscriptionInvalid(field="endpoint", message="required")
    if len(endpoint) > _ENDPOINT_MAX:
        raise PushSubscriptionInvalid(field="endpoint", message="longer than 1000 characters")
    parts = urlsplit(endpoint)
    if (
        parts.scheme not in {"https", "http"}
        or not parts.hostname
        or any(character.isspace() for character in endpoint)
    ):
        raise PushSubscriptionInvalid(field="endpoint", message="must be an http(s) URL")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise PushSubscriptionInvalid(field="keys", message="expected an object")
    p256dh = _key_field(keys, "p256dh", size=65)
    if _b64url_decode(p256dh)[0] != 0x04:
        raise PushSubscriptionInvalid(field="keys.p256dh", message="not an uncompressed point")
    auth = _key_field(keys, "auth", size=16)
    return SubscriptionData(endpoint=endpoint, p256dh=p256dh, auth=auth)


def _key_field(keys: dict[object, object], name: str, *, size: int) -> str:
    value = keys.get(name)
    field = f"keys.{name}"
    if not isinstance(value, str) or not value:
        raise PushSubscriptionInvalid(field=field, message="required")
    try:
        raw = _b64url_decode(value)
    except ValueError as error:
        raise PushSubscriptionInvalid(field=field, message="not base64url") from error
    if len(raw) != size:
        raise PushSubscriptionInvalid(field=field, message=f"expected {size} bytes")
    return value.rstrip("=")


@transaction.atomic
def push_subscription_save(
    *, user: AbstractBaseUser, data: SubscriptionData
) -> tuple[PushSubscription, bool]:
    """Keep this browser's subscription for ``user``; returns (subscription, created).

    An endpoint is one browser. If someone else subscribed on it before (a shared tablet),
    it now belongs to whoever pressed the button last.
    """
    from communities.services import household_contact_restored

    subscription, created = PushSubscription.objects.update_or_create(
        endpoint=data.endpoint,
        defaults={"user_id": user.pk, "p256dh": data.p256dh, "auth": data.auth},
    )
    # A phone that can be reached again: its households stop being paper for lack of one.
    for household_id in Member.objects.filter(user_id=user.pk).values_list(
        "household_id", flat=True
    ):
        household_contact_restored(household_id=household_id)
    return subscription, created


def push_subscription_delete(*, user: AbstractBaseUser, endpoint: str) -> bool:
    """Forget this browser for ``user``; another person's subscription is left alone."""
    deleted, _ = PushSubscription.objects.filter(user_id=user.pk, endpoint=endpoint).delete()
    return deleted > 0


def push_subscription_count(*, user: AbstractBaseUser) -> int:
    return PushSubscription.objects.filter(user_id=user.pk).count()


# --- Sending ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PushOutcome:
    sent: int
    gone: int  # 404/410: the subscription was deleted
    failed: int  # other errors and time-outs; the subscription is kept
    errors: tuple[str, ...]


def push_payload_encode(payload: dict[str, object]) -> str:
    """The JSON a push carries, refusing anything that could be personal content."""
    unknown = sorted(set(payload) - ALLOWED_PAYLOAD_KEYS)
    if unknown:
        raise ValueError(
            f"push payloads carry ids and flags only; refused keys: {', '.join(unknown)}"
        )
    for key, value in payload.items():
        if key in {"urgent", "drill"}:
            if not isinstance(value, bool):
                raise ValueError(f"push payload {key!r} must be a bool")
        elif key in {"id", "count"}:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"push payload {key!r} must be an int")
        elif key == "type":
            if not isinstance(value, str) or not _TYPE_RE.match(value):
                raise ValueError("push payload 'type' must be a short lower-case name")
        elif key == "url" and (not isinstance(value, str) or not _URL_RE.match(value)):
            raise ValueError("push payload 'url' must be an ASCII path on this site")
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class PushMessage:
    """One payload for every browser of these people (see ``push_send_to_users``)."""

    user_ids: Sequence[int]
    payload: dict[str, object]
    topic: str | None = None
    urgency: str = "normal"
    ttl: int = 86400


@dataclass(frozen=True)
class _Attempt:
    subscription_id: int
    result: Literal["sent", "gone", "failed"]
    error: str = ""


def _origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


_vapid_lock = threading.Lock()
# (signing key, subject, push service origin) → (exp, headers)
_vapid_headers: dict[tuple[Vapid02, str, str], tuple[int, dict[str, str]]] = {}


def vapid_headers(*, vapid: Vapid02, origin: str, now: float | None = None) -> dict[str, str]:
    """The ``Authorization: vapid t=…, k=…`` header for one push service origin.

    Signed once and reused while the token has more than ``VAPID_RENEW_BEFORE`` left; a
    clock that moved back before the token was issued also gets a fresh one, so the
    token never claims to live longer than 24 hours.
    """
    now = time.time() if now is None else now
    key = (vapid, settings.KAIRAN_VAPID_SUBJECT, origin)
    with _vapid_lock:
        cached = _vapid_headers.get(key)
        if cached is not None:
            exp, headers = cached
            if exp - VAPID_TOKEN_LIFETIME <= now < exp - VAPID_RENEW_BEFORE:
                return headers
        exp = int(now) + VAPID_TOKEN_LIFETIME
        headers = vapid.sign({"sub": settings.KAIRAN_VAPID_SUBJECT, "aud": origin, "exp": exp})
        if len(_vapid_headers) > 1000:  # endpoints come from browsers: stay bounded
            _vapid_headers.clear()
        _vapid_headers[key] = (exp, headers)
        return headers


# Sending threads live as long as the process and keep one connection pool each, so a push
# service's connection (TCP, and TLS for real ones) is reused across messages.
_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None
_thread_state = threading.local()


def _sending_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():  # a forked child needs its own
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(max_workers=MAX_PARALLEL_SENDS, thread_name_prefix="push"),
            )
        return _pool[1]


def _connections() -> urllib3.PoolManager:
    manager: urllib3.PoolManager | None = getattr(_thread_state, "connections", None)
    if manager is None:
        # No retries: a failed push is retried by its delivery row, with back-off.
        manager = urllib3.PoolManager(num_pools=20, maxsize=1, retries=False)
        _thread_state.connections = manager
    return manager


def _encrypt(data: bytes, *, p256dh: str, auth: str) -> bytes:
    """RFC 8291: aes128gcm with a fresh ECDH key and salt for every message."""
    return bytes(
        http_ece.encrypt(
            data,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=_b64url_decode(p256dh),
            auth_secret=_b64url_decode(auth),
            version="aes128gcm",
        )
    )


def _send_one(
    *,
    subscription: PushSubscription,
    data: str,
    headers: dict[str, str],
    ttl: int,
    timeout: float,
    vapid: Vapid02,
) -> _Attempt:
    """One HTTP request to one push service; runs in a pool thread, so no database here."""
    where = f"subscription {subscription.pk} ({urlsplit(subscription.endpoint).hostname})"
    try:
        body = _encrypt(data.encode(), p256dh=subscription.p256dh, auth=subscription.auth)
        response = _connections().request(
            "POST",
            subscription.endpoint,
            body=body,
            headers={
                **headers,
                **vapid_headers(vapid=vapid, origin=_origin(subscription.endpoint)),
                "TTL": str(ttl),
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
            },
            timeout=timeout,
            redirect=False,
        )
        status = response.status
        if status in {404, 410}:
            return _Attempt(subscription.pk, "gone", f"{where}: HTTP {status}")
        if status > 202:
            return _Attempt(subscription.pk, "failed", f"{where}: HTTP {status}")
    except urllib3.exceptions.TimeoutError:
        return _Attempt(subscription.pk, "failed", f"{where}: timed out after {timeout:g} s")
    except urllib3.exceptions.HTTPError as error:
        return _Attempt(subscription.pk, "failed", f"{where}: {type(error).__name__}")
    except Exception as error:  # a broken key must not stop the other sends
        logger.exception("push to %s could not be prepared", where)
        return _Attempt(subscription.pk, "failed", f"{where}: {type(error).__name__}")
    return _Attempt(subscription.pk, "sent")


def _prepared(message: PushMessage) -> tuple[str, dict[str, str]]:
    """(encoded payload, headers); ValueError for a bad payload, topic or urgency."""
    data = push_payload_encode(message.payload)
    if message.urgency not in URGENCIES:
        raise ValueError(f"urgency must be one of {sorted(URGENCIES)}")
    if message.topic is not None and not _TOPIC_RE.match(message.topic):
        raise ValueError("topic must be 1-32 characters of A-Z, a-z, 0-9, '-' and '_'")
    if message.ttl < 0:
        raise ValueError("ttl must not be negative")
    headers = {"Urgency": message.urgency}
    if message.topic is not None:
        headers["Topic"] = message.topic
    return data, headers


def push_send_many(
    *, messages: Sequence[PushMessage], timeout: float = PUSH_TIMEOUT_SECONDS
) -> list[PushOutcome]:
    """Send several messages at once, one outcome per message, in order.

    The subscriptions are read in one query and the requests share the sending threads,
    so a worker's batch of deliveries costs a few queries, not a few per household.
    Raises ValueError only for a bad payload, topic or urgency (a programming error).
    """
    prepared = [_prepared(message) for message in messages]
    user_ids = {user_id for message in messages for user_id in message.user_ids}
    by_user: dict[int, list[PushSubscription]] = {}
    for subscription in PushSubscription.objects.filter(user_id__in=user_ids).order_by("pk"):
        by_user.setdefault(subscription.user_id, []).append(subscription)
    jobs = [
        (index, subscription)
        for index, message in enumerate(messages)
        for user_id in dict.fromkeys(message.user_ids)
        for subscription in by_user.get(user_id, [])
    ]
    attempts: list[_Attempt] = []
    if jobs:
        vapid = vapid_key()
        attempts = list(
            _sending_pool().map(
                lambda job: _send_one(
                    subscription=job[1],
                    data=prepared[job[0]][0],
                    headers=prepared[job[0]][1],
                    ttl=messages[job[0]].ttl,
                    timeout=timeout,
                    vapid=vapid,
                ),
                jobs,
            )
        )

    counts = [{"sent": 0, "gone": 0, "failed": 0} for _ in messages]
    errors: list[list[str]] = [[] for _ in messages]
    for (index, _subscription), attempt in zip(jobs, attempts, strict=True):
        counts[index][attempt.result] += 1
        if attempt.result == "gone":
            logger.info("push subscription removed: %s", attempt.error)
        elif attempt.result == "failed":
            errors[index].append(attempt.error)
            logger.warning("push failed: %s", attempt.error)
    gone = {attempt.subscription_id for attempt in attempts if attempt.result == "gone"}
    sent = {attempt.subscription_id for attempt in attempts if attempt.result == "sent"}
    if gone:
        PushSubscription.objects.filter(pk__in=gone).delete()
    if sent:
        PushSubscription.objects.filter(pk__in=sent).update(last_success_at=timezone.now())
    return [
        PushOutcome(
            sent=count["sent"], gone=count["gone"], failed=count["failed"], errors=tuple(error)
        )
        for count, error in zip(counts, errors, strict=True)
    ]


def push_send_to_users(
    *,
    user_ids: list[int],
    payload: dict[str, object],
    topic: str | None = None,
    urgency: str = "normal",
    ttl: int = 86400,
    timeout: float = PUSH_TIMEOUT_SECONDS,
) -> PushOutcome:
    """Send ``payload`` to every browser these people subscribed.

    ``topic`` (RFC 8030: up to 32 characters of ``A-Z a-z 0-9 - _``) makes the push
    service replace an undelivered message with the same topic, so a retry never shows
    twice. ``urgency`` is ``"high"`` for 緊急. Raises ValueError only for a bad payload,
    topic or urgency (a programming error); problems with a subscription are counted.
    """
    message = PushMessage(user_ids=user_ids, payload=payload, topic=topic, urgency=urgency, ttl=ttl)
    return push_send_many(messages=[message], timeout=timeout)[0]
