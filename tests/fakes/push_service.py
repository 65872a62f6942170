"""A Web Push service on loopback, strict enough to catch what a real one would refuse.

It speaks the server side of RFC 8030 (message delivery), RFC 8291/8188 (the encrypted
body must be ``aes128gcm``) and RFC 8292 (VAPID: the ES256 JWT is verified against the key
in the header, with ``aud`` equal to this service's origin and ``exp`` in the future).
Each subscription can be told to answer 410, 404 or 500, or to hang, as push services do.

Messages are kept per subscription as "pending" until ``deliver()`` hands them to the
"browser"; a new message with the same ``Topic`` replaces a pending one, as RFC 8030 §5.4
says. ``BrowserSubscription`` holds what a browser would (an ECDH P-256 key and a 16-byte
auth secret), so a test can decrypt what was stored.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

# RFC 8292 §2: a JWT valid for more than 24 hours must be refused.
MAX_JWT_LIFETIME = 24 * 60 * 60


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Behaviour(enum.Enum):
    ACCEPT = 201
    GONE = 410
    NOT_FOUND = 404
    SERVER_ERROR = 500
    HANG = 0  # read the request, then never answer (until the service stops)


@dataclass
class BrowserSubscription:
    """What a browser keeps for one subscription, and what it would send to the app."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url_encode(point)

    @property
    def auth(self) -> str:
        return b64url_encode(self.auth_secret)

    def to_json(self) -> dict[str, object]:
        """``PushSubscription.toJSON()`` as the browser posts it."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    def decrypt(self, body: bytes) -> bytes:
        return bytes(
            http_ece.decrypt(
                body,
                private_key=self.private_key,
                auth_secret=self.auth_secret,
                version="aes128gcm",
            )
        )


def browser_subscription(*, subscription_id: str, endpoint: str) -> BrowserSubscription:
    """Fresh browser-side keys, as ``pushManager.subscribe()`` makes them."""
    return BrowserSubscription(
        id=subscription_id,
        endpoint=endpoint,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        auth_secret=secrets.token_bytes(16),
    )


@dataclass(frozen=True)
class StoredMessage:
    subscription_id: str
    body: bytes
    headers: dict[str, str]  # lower-case names
    claims: dict[str, object]  # the verified VAPID JWT claims
    vapid_public_key: str
    received_at: float

    @property
    def topic(self) -> str | None:
        return self.headers.get("topic")


@dataclass
class _Box:
    behaviour: Behaviour = Behaviour.ACCEPT
    application_server_key: str | None = None
    pending: list[StoredMessage] = field(default_factory=list)
    delivered: list[StoredMessage] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


class VapidError(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def verify_vapid(authorization: str, *, origin: str, now: float) -> tuple[dict[str, object], str]:
    """Check ``vapid t=<JWT>, k=<key>``; returns (claims, key) or raises VapidError."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError(HTTPStatus.UNAUTHORIZED, "Authorization scheme is not vapid")
    values: dict[str, str] = {}
    for item in params.split(","):
        name, _, value = item.strip().partition("=")
        values[name.strip()] = value.strip()
    token, key = values.get("t"), values.get("k")
    if not token or not key:
        raise VapidError(HTTPStatus.UNAUTHORIZED, "vapid needs t= and k=")
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64url_decode(key)
        )
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, TypeError) as error:
        raise VapidError(HTTPStatus.UNAUTHORIZED, f"malformed vapid: {error}") from error
    if header.get("alg") != "ES256":
        raise VapidError(HTTPStatus.UNAUTHORIZED, "JWT alg must be ES256")
    if len(signature) != 64:
        raise VapidError(HTTPStatus.UNAUTHORIZED, "ES256 signature must be 64 bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public_key.verify(
            der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as error:
        raise VapidError(HTTPStatus.UNAUTHORIZED, "JWT signature does not verify") from error
    if claims.get("aud") != origin:
        raise VapidError(HTTPStatus.UNAUTHORIZED, f"aud {claims.get('aud')!r} != {origin!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now:
        raise VapidError(HTTPStatus.UNAUTHORIZED, "JWT expired or exp missing")
    if exp > now + MAX_JWT_LIFETIME:
        raise VapidError(HTTPStatus.UNAUTHORIZED, "JWT lives longer than 24 hours")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise VapidError(HTTPStatus.UNAUTHORIZED, "JWT sub missing")
    return claims, key


class FakePushService:
    """A running push service on 127.0.0.1; use as ``with FakePushService() as service``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[str, _Box] = {}
        self._stopping = threading.Event()
        self.requests_seen = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                service._handle_post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePushService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # lets hanging handlers finish
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakePushService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a test does

    def subscribe(
        self,
        *,
        behaviour: Behaviour = Behaviour.ACCEPT,
        application_server_key: str | None = None,
    ) -> BrowserSubscription:
        """A new subscription, as ``pushManager.subscribe()`` would create it.

        With ``application_server_key`` the service answers 403 to pushes signed by any
        other VAPID key, as real services do.
        """
        subscription_id = secrets.token_urlsafe(12)
        with self._lock:
            self._boxes[subscription_id] = _Box(
                behaviour=behaviour, application_server_key=application_server_key
            )
        return browser_subscription(
            subscription_id=subscription_id, endpoint=f"{self.origin}/push/{subscription_id}"
        )

    def set_behaviour(self, subscription_id: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._boxes[subscription_id].behaviour = behaviour

    def pending(self, subscription_id: str) -> list[StoredMessage]:
        with self._lock:
            return list(self._boxes[subscription_id].pending)

    def rejected(self, subscription_id: str) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._boxes[subscription_id].rejected)

    def deliver(self, subscription_id: str) -> list[StoredMessage]:
        """The browser came online: hand over what is pending."""
        with self._lock:
            box = self._boxes[subscription_id]
            handed, box.pending = box.pending, []
            box.delivered.extend(handed)
            return handed

    def delivered_count(self, subscription_id: str) -> int:
        with self._lock:
            return len(self._boxes[subscription_id].delivered)

    # --- the protocol

    def _handle_post(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self.requests_seen += 1
        parts = request.path.strip("/").split("/")
        box = self._boxes.get(parts[1]) if len(parts) == 2 and parts[0] == "push" else None
        if box is None:
            self._answer(request, HTTPStatus.NOT_FOUND, "no such subscription")
            return
        status, reason, message = self._check(parts[1], box, body, headers)
        if status is not HTTPStatus.CREATED:
            with self._lock:
                box.rejected.append((int(status), reason))
            self._answer(request, status, reason)
            return
        behaviour = box.behaviour
        if behaviour is Behaviour.HANG:
            self._stopping.wait(timeout=60)
            return
        if behaviour is not Behaviour.ACCEPT:
            self._answer(request, HTTPStatus(behaviour.value), behaviour.name)
            return
        assert message is not None
        with self._lock:
            if message.topic is not None:
                box.pending = [m for m in box.pending if m.topic != message.topic]
            box.pending.append(message)
        self._answer(request, HTTPStatus.CREATED, "", location=f"/message/{secrets.token_hex(8)}")

    def _check(
        self, subscription_id: str, box: _Box, body: bytes, headers: dict[str, str]
    ) -> tuple[HTTPStatus, str, StoredMessage | None]:
        now = time.time()
        try:
            claims, key = verify_vapid(
                headers.get("authorization", ""), origin=self.origin, now=now
            )
        except VapidError as error:
            return error.status, error.reason, None
        if box.application_server_key is not None and key != box.application_server_key:
            return HTTPStatus.FORBIDDEN, "VAPID key differs from the subscription's", None
        if not headers.get("ttl", "").isdigit():
            return HTTPStatus.BAD_REQUEST, "TTL header required", None
        if body and headers.get("content-encoding") != "aes128gcm":
            return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Encoding must be aes128gcm", None
        if len(body) > 4096:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload over 4096 bytes", None
        message = StoredMessage(
            subscription_id=subscription_id,
            body=body,
            headers=headers,
            claims=claims,
            vapid_public_key=key,
            received_at=now,
        )
        return HTTPStatus.CREATED, "", message

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler,
        status: HTTPStatus,
        reason: str,
        *,
        location: str | None = None,
    ) -> None:
        payload = reason.encode()
        request.send_response(status)
        if location:
            request.send_header("Location", location)
        request.send_header("Content-Type", "text/plain; charset=utf-8")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)


@contextmanager
def running_push_service() -> Iterator[FakePushService]:
    with FakePushService() as service:
        yield service
