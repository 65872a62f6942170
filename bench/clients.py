"""Load-generating client processes: open-loop HTTP (aiohttp) and WebSockets (websockets).

Every job runs in its own process (2 cores: one Python process cannot both keep thousands
of sockets and send a thousand requests a second) with uvloop. Open loop: request ``i`` is
due at ``t0 + i / rate`` whatever happened before; latency is measured from that scheduled
time, so queueing in the client or the server shows. ``lag`` is how late the client itself
sent (a large lag means the client, not the server, was the bottleneck).

Times are ``time.time()`` (one clock for all processes on the machine).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import resource
import time
import uuid
from typing import Any, ClassVar


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- WebSockets -------------------------------------------------------------------------


async def _hold(
    url: str,
    origin: str,
    cookie: str,
    tag: int,
    record: list[tuple[Any, ...]],
    counts: dict[str, int],
    stop: asyncio.Event,
    drop: asyncio.Event | None,
    reconnects: list[float],
    record_types: set[str],
    gate: asyncio.Semaphore,
) -> None:
    from websockets.asyncio.client import connect

    async def opened() -> Any:
        socket = await connect(
            url,
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            compression=None,
            ping_interval=None,
            open_timeout=30,
            max_size=2**20,
        )
        hello = json.loads(await asyncio.wait_for(socket.recv(), 30))
        if hello.get("type") != "hello":
            await socket.close()
            raise RuntimeError(f"unexpected first frame {hello}")
        return socket

    first = True
    while not stop.is_set():
        try:
            if first:
                # The ramp keeps a bounded number of handshakes in flight; reconnects
                # after a drop do not (they are the storm being measured).
                async with gate:
                    socket = await opened()
            else:
                socket = await opened()
            async with socket:
                counts["connected"] += 1
                if not first:
                    reconnects.append(time.time())
                first = False
                waiters = {asyncio.ensure_future(stop.wait())}
                if drop is not None:
                    waiters.add(asyncio.ensure_future(drop.wait()))
                receiver = asyncio.ensure_future(socket.recv())
                while True:
                    done, _ = await asyncio.wait(
                        {receiver, *waiters}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if receiver not in done:
                        receiver.cancel()
                        for waiter in waiters:
                            waiter.cancel()
                        if drop is not None and drop.is_set() and not stop.is_set():
                            # The "network" drops: abort the TCP connection, come back
                            # after a random moment within 2 s.
                            socket.transport.abort()
                            counts["dropped"] += 1
                            await asyncio.sleep(random.uniform(0, 2))
                            drop = None
                            break
                        return
                    message = receiver.result()
                    now = time.time()
                    counts["messages"] += 1
                    event = json.loads(message)
                    kind = event.get("type", "")
                    if kind in record_types:
                        if kind == "ledger.totals":
                            confirmed = event.get("counts", {}).get("confirmed", 0)
                            record.append((tag, kind, event["circular_id"], confirmed, now))
                        else:
                            record.append(
                                (
                                    tag,
                                    kind,
                                    event.get("circular_id", 0),
                                    event.get("household_id", 0),
                                    now,
                                )
                            )
                    receiver = asyncio.ensure_future(socket.recv())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            counts["errors"] += 1
            counts.setdefault("last_error", 0)
            counts["error_" + type(error).__name__] = (
                counts.get("error_" + type(error).__name__, 0) + 1
            )
            if first:
                return  # a connect error in the ramp counts as one; no retry storm
            await asyncio.sleep(0.5)


async def _sockets_job(
    job: dict[str, Any], ready: Any, stop_flag: Any, drop_flag: Any, progress: Any
) -> dict:
    stop = asyncio.Event()
    drop = asyncio.Event() if job.get("drop") else None
    record: list[tuple[Any, ...]] = []
    counts = {"connected": 0, "errors": 0, "messages": 0, "dropped": 0}
    reconnects: list[float] = []
    record_types = set(job.get("record", []))
    tasks = []
    gate = asyncio.Semaphore(job.get("inflight", 64))
    rate = job.get("connect_rate", 500)
    start = time.time()
    for index, (path, cookie, tag) in enumerate(job["sockets"]):
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.time()))
        tasks.append(
            asyncio.ensure_future(
                _hold(
                    job["base"] + path,
                    job["origin"],
                    cookie,
                    tag,
                    record,
                    counts,
                    stop,
                    drop,
                    reconnects,
                    record_types,
                    gate,
                )
            )
        )
    deadline = time.time() + 240
    while counts["connected"] + counts["errors"] < len(tasks) and time.time() < deadline:
        await asyncio.sleep(0.05)
    ramp_s = time.time() - start
    ready.put(("ready", job["name"], counts["connected"], counts["errors"], ramp_s))
    drop_at = 0.0
    while not stop_flag.is_set():
        if drop is not None and not drop.is_set() and drop_flag.is_set():
            drop_at = time.time()
            drop.set()
        progress.value = len(record)  # for Jobs.recorded(): has everything arrived?
        await asyncio.sleep(0.02)
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:  # handshakes still hanging (a reconnect storm): give up on them
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    counts["unfinished_at_stop"] = len(pending)
    return {
        "counts": counts,
        "record": record,
        "ramp_s": ramp_s,
        "drop_at": drop_at,
        "reconnects": reconnects,
        "sockets": len(tasks),
    }


# --- HTTP -------------------------------------------------------------------------------


async def _open_loop(job: dict[str, Any]) -> dict:
    """POST confirms or GET pages on a fixed schedule: item i is due at t0 + i / rate."""
    import aiohttp

    results: list[tuple[int, int, float, float]] = []  # (i, status, latency ms, lag ms)
    # At most 5,000 connections per process: past that, requests wait in the client (their
    # latency still counts from the scheduled time) instead of exhausting ephemeral ports
    # and nginx's worker_connections.
    connector = aiohttp.TCPConnector(limit=5000, ttl_dns_cache=None, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    t0, rate, origin = job["t0"], job["rate"], job["origin"]
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def one(item: list[Any]) -> None:
            index, path, cookie, csrf = item
            due = t0 + index / rate
            lag = (time.time() - due) * 1000
            headers = {"Cookie": cookie, "Origin": origin, "Referer": origin + "/"}
            try:
                if job["method"] == "POST":
                    headers["X-CSRFToken"] = csrf
                    headers["HX-Request"] = "true"
                    async with session.post(
                        job["base"] + path,
                        data={"key": str(uuid.uuid4())},
                        headers=headers,
                        allow_redirects=False,
                    ) as answer:
                        await answer.read()
                        status = answer.status
                else:
                    async with session.get(
                        job["base"] + path, headers=headers, allow_redirects=False
                    ) as answer:
                        await answer.read()
                        status = answer.status
            except Exception:
                status = 0
            results.append((index, status, (time.time() - due) * 1000, lag))

        pending = []
        for item in job["items"]:
            due = t0 + item[0] / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(one(item)))
        await asyncio.gather(*pending)
    return {"results": results}


async def _closed_loop(job: dict[str, Any]) -> dict:
    """Saturation: ``concurrency`` clients each sending the next request when one returns."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    end = time.time() + job["duration"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def client() -> None:
            nonlocal errors
            while time.time() < end:
                start = time.time()
                try:
                    async with session.get(job["url"], headers=job.get("headers", {})) as answer:
                        await answer.read()
                        if answer.status != 200:
                            errors += 1
                except Exception:
                    errors += 1
                latencies.append((time.time() - start) * 1000)

        await asyncio.gather(*[client() for _ in range(job["concurrency"])])
    return {"latencies": latencies, "errors": errors}


# --- process plumbing -------------------------------------------------------------------


def _entry(
    job: dict[str, Any], ready: Any, stop_flag: Any, drop_flag: Any, out: Any, progress: Any
) -> None:
    _raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        if job["kind"] == "sockets":
            result = asyncio.run(_sockets_job(job, ready, stop_flag, drop_flag, progress))
        elif job["kind"] == "open_loop":
            result = asyncio.run(_open_loop(job))
        elif job["kind"] == "closed_loop":
            result = asyncio.run(_closed_loop(job))
        elif job["kind"] == "ws_broadcast_clients":
            from ws_broadcast import clients_job

            result = asyncio.run(clients_job(job, ready, stop_flag, drop_flag))
        else:
            raise ValueError(job["kind"])
        out.put((job["name"], result))
    except BaseException as error:
        ready.put(("failed", job["name"], repr(error)))
        out.put((job["name"], {"error": repr(error)}))
        raise


class Jobs:
    """Start jobs in processes; signal them; collect what they return."""

    live: ClassVar[list[Jobs]] = []

    @classmethod
    def kill_all(cls) -> None:
        """Every client process still running (after Ctrl-C or a failure)."""
        for jobs in cls.live:
            jobs.kill()
        cls.live.clear()

    def __init__(self) -> None:
        Jobs.live.append(self)
        self.ctx = mp.get_context("spawn")
        self.ready = self.ctx.Queue()
        self.out = self.ctx.Queue()
        self.stop_flag = self.ctx.Event()
        self.drop_flag = self.ctx.Event()
        self.procs: list[Any] = []
        self.progress: list[Any] = []

    def start(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            progress = self.ctx.Value("q", 0, lock=False)  # written by the job alone
            self.progress.append(progress)
            proc = self.ctx.Process(
                target=_entry,
                args=(job, self.ready, self.stop_flag, self.drop_flag, self.out, progress),
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)

    def wait_ready(self, count: int, timeout: float = 180) -> list[tuple[Any, ...]]:
        got: list[tuple[Any, ...]] = []
        deadline = time.time() + timeout
        while len(got) < count:
            message = self.ready.get(timeout=max(1.0, deadline - time.time()))
            if message[0] == "failed":
                raise RuntimeError(f"client job {message[1]} failed: {message[2]}")
            got.append(message)
        return got

    def recorded(self) -> int:
        """Events the socket jobs have recorded so far (updated every 20 ms)."""
        return sum(progress.value for progress in self.progress)

    def wait_recorded(self, expected: int, *, quiet: float, limit: float) -> None:
        """Until ``expected`` events are in, nothing came for ``quiet`` s, or ``limit`` s."""
        deadline = time.time() + limit
        last, last_change = -1, time.time()
        while time.time() < deadline:
            now = self.recorded()
            if now >= expected:
                return
            if now != last:
                last, last_change = now, time.time()
            elif time.time() - last_change > quiet:
                return
            time.sleep(0.1)

    def finish(self, timeout: float = 300) -> dict[str, Any]:
        self.stop_flag.set()
        results: dict[str, Any] = {}
        deadline = time.time() + timeout
        while len(results) < len(self.procs):
            name, result = self.out.get(timeout=max(1.0, deadline - time.time()))
            if "error" in result:
                raise RuntimeError(f"client job {name} failed: {result['error']}")
            results[name] = result
        for proc in self.procs:
            proc.join(10)
        return results

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
