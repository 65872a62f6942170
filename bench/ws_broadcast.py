"""Ceiling: a bare ``websockets`` broadcast server, with nothing of Kairan in it.

One server process (uvloop, no compression) accepts sockets; a message ``go N`` from any
client makes it broadcast N small JSON messages to every connected socket. The clients
count what arrives; delivered messages per second is the ceiling the Kairan fan-out is
compared with.

    .venv/bin/python bench/ws_broadcast.py PORT      # the server, until killed
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def serve(port: int) -> None:
    from websockets.asyncio.server import broadcast
    from websockets.asyncio.server import serve as ws_serve
    from websockets.exceptions import ConnectionClosed

    connected: set[Any] = set()

    async def handler(socket: Any) -> None:
        connected.add(socket)
        try:
            async for message in socket:
                if isinstance(message, str) and message.startswith("go "):
                    for n in range(int(message.split()[1])):
                        payload = json.dumps({"type": "inbox.circular", "circular_id": n})
                        broadcast(connected, payload)
                        if n % 10 == 9:
                            await asyncio.sleep(0)  # let the writes drain
        except ConnectionClosed:
            pass  # the clients go away without a closing handshake
        finally:
            connected.discard(socket)

    async with ws_serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=None,
        max_size=65536,
        backlog=4096,
    ):
        await asyncio.Future()


async def clients_job(
    job: dict[str, Any], ready: Any, stop_flag: Any, trigger_flag: Any
) -> dict[str, Any]:
    """Hold ``job['sockets']`` sockets; record the arrival time of each message."""
    from websockets.asyncio.client import connect

    arrivals: list[float] = []
    sockets = []
    errors = 0
    for index in range(job["sockets"]):
        try:
            sockets.append(
                await connect(job["url"], compression=None, ping_interval=None, open_timeout=30)
            )
        except Exception:
            errors += 1
        if index % 200 == 199:
            await asyncio.sleep(0.05)

    async def reader(socket: Any) -> None:
        try:
            async for _ in socket:
                arrivals.append(time.time())
        except Exception:  # noqa: S110
            pass

    readers = [asyncio.ensure_future(reader(s)) for s in sockets]
    ready.put(("ready", job["name"], len(sockets), errors, 0.0))
    sent_at = 0.0
    while not stop_flag.is_set():
        if job.get("trigger") and not sent_at and trigger_flag.is_set():
            sent_at = time.time()
            await sockets[0].send(f"go {job['messages']}")
        await asyncio.sleep(0.01)
    for socket in sockets:
        await socket.close()
    for task in readers:
        task.cancel()
    return {"arrivals": arrivals, "errors": errors, "sent_at": sent_at}


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(sys.argv[1])))
