"""A light Web Push service for the city-scale benchmark, run in its own process.

It accepts every push to ``/push/<subscription id>`` with ``201 Created`` and counts it.
Every Nth message (``--verify-every``, default 50) is checked as strictly as the test fake
(tests/fakes/push_service.py) checks every message: the VAPID JWT is verified (ES256
signature, ``aud`` = this origin, ``exp`` in the future and at most 24 h ahead), the TTL
header is present, the body is ``aes128gcm`` and decrypts with the subscription's keys to a
payload of ids and flags only. A message that fails a check is answered 400/401 and
counted, so the benchmark reports it (and the app retries it after its back-off).

Subscription keys are derived from ``--seed`` and the subscription id (``sink_keys``), so
the loader can store the public halves and this process can decrypt without sharing a
file. ``GET /stats`` answers a JSON summary.

    python bench/push_sink.py --port 8765 --seed abc --verify-every 50
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import time
from pathlib import Path

import httptools
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

# P-256 group order.
_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ALLOWED_KEYS = {"type", "id", "url", "urgent", "drill", "count"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sink_keys(seed: str, subscription_id: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """The browser-side keys of one subscription: (ECDH private key, auth secret)."""
    digest = hashlib.sha256(f"{seed}:{subscription_id}:p256dh".encode()).digest()
    scalar = int.from_bytes(digest, "big") % (_ORDER - 1) + 1
    auth = hashlib.sha256(f"{seed}:{subscription_id}:auth".encode()).digest()[:16]
    return ec.derive_private_key(scalar, ec.SECP256R1()), auth


def sink_subscription(seed: str, subscription_id: str) -> tuple[str, str]:
    """(p256dh, auth) as the browser would post them, base64url."""
    private_key, auth = sink_keys(seed, subscription_id)
    point = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point), b64url(auth)


class Stats:
    def __init__(self) -> None:
        self.accepted = 0
        self.verified = 0
        self.rejected = 0
        self.reject_reasons: dict[str, int] = {}
        self.seen: set[str] = set()
        self.duplicates = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.last_new_at = 0.0
        self.connections = 0

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "accepted": self.accepted,
                "distinct": len(self.seen),
                "duplicates": self.duplicates,
                "verified": self.verified,
                "rejected": self.rejected,
                "reject_reasons": self.reject_reasons,
                "first_at": self.first_at,
                "last_at": self.last_at,
                "last_new_at": self.last_new_at,
                "connections": self.connections,
            }
        ).encode()


class Checker:
    """The strict checks, run on every Nth message."""

    def __init__(self, *, origin: str, seed: str) -> None:
        from tests.fakes.push_service import verify_vapid

        self.origin = origin
        self.seed = seed
        self.verify_vapid = verify_vapid

    def check(self, subscription_id: str, headers: dict[bytes, bytes], body: bytes) -> str:
        """'' when the message is right, else the reason."""
        import http_ece

        from tests.fakes.push_service import VapidError

        try:
            self.verify_vapid(
                headers.get(b"authorization", b"").decode(), origin=self.origin, now=time.time()
            )
        except VapidError as error:
            return f"vapid: {error.reason}"
        if not headers.get(b"ttl", b"").isdigit():
            return "TTL header required"
        if headers.get(b"content-encoding") != b"aes128gcm":
            return "Content-Encoding must be aes128gcm"
        # RFC 8188 header: salt(16) rs(4) idlen(1) keyid(idlen) = the sender's ECDH point.
        if len(body) < 21 + 65 or body[20] != 65 or body[21] != 0x04:
            return "aes128gcm header malformed"
        private_key, auth = sink_keys(self.seed, subscription_id)
        try:
            plaintext = http_ece.decrypt(
                body, private_key=private_key, auth_secret=auth, version="aes128gcm"
            )
            payload = json.loads(plaintext)
        except Exception as error:
            return f"does not decrypt: {type(error).__name__}"
        if not isinstance(payload, dict) or set(payload) - _ALLOWED_KEYS:
            return "payload carries more than ids and flags"
        return ""


class Request:
    __slots__ = ("body", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()


class PushProtocol(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.parser = httptools.HttpRequestParser(self)
        self.request = Request()
        self.transport: asyncio.Transport | None = None
        self.pushed = False  # counted among the connections that carried pushes

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.request = Request()

    def on_url(self, url: bytes) -> None:
        self.request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.request.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.request.body += body

    def on_message_complete(self) -> None:
        if not self.pushed and self.request.url.startswith(b"/push/"):
            self.pushed = True
            self.sink.stats.connections += 1
        status, reason, body = self.sink.handle(
            self.parser.get_method(),
            self.request.url,
            self.request.headers,
            bytes(self.request.body),
        )
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n"
            b"Location: /m\r\n\r\n%s" % (status, reason, len(body), body)
        )
        if not self.parser.should_keep_alive():
            self.transport.close()


class Sink:
    def __init__(self, *, origin: str, seed: str, verify_every: int) -> None:
        self.stats = Stats()
        self.checker = Checker(origin=origin, seed=seed)
        self.verify_every = verify_every

    def handle(
        self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, bytes, bytes]:
        stats = self.stats
        if method == b"GET" and url == b"/stats":
            return 200, b"OK", stats.as_json()
        if method != b"POST" or not url.startswith(b"/push/"):
            return 404, b"Not Found", b"no such subscription"
        subscription_id = url[6:].decode()
        number = stats.accepted + stats.rejected + 1
        if self.verify_every and number % self.verify_every == 1 % self.verify_every:
            reason = self.checker.check(subscription_id, headers, body)
            if reason:
                stats.rejected += 1
                stats.reject_reasons[reason] = stats.reject_reasons.get(reason, 0) + 1
                status = 401 if reason.startswith("vapid") else 400
                return status, b"Refused", reason.encode()
            stats.verified += 1
        now = time.time()
        stats.accepted += 1
        stats.first_at = stats.first_at or now
        stats.last_at = now
        if subscription_id in stats.seen:
            stats.duplicates += 1
        else:
            stats.seen.add(subscription_id)
            stats.last_new_at = now
        return 201, b"Created", b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", required=True)
    parser.add_argument("--verify-every", type=int, default=50)
    args = parser.parse_args()
    origin = f"http://127.0.0.1:{args.port}"
    sink = Sink(origin=origin, seed=args.seed, verify_every=args.verify_every)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: PushProtocol(sink), "127.0.0.1", args.port, backlog=1024
        )
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    try:
        import uvloop
    except ImportError:  # plain asyncio is only slower
        asyncio.run(serve())
    else:
        asyncio.run(serve(), loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    main()
