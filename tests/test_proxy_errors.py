"""The shipped nginx configuration (``deploy/nginx/kairan.conf``) under a flood and without
its page servers: Debian's real nginx, run with that file as the benchmark runs it, in
front of a small upstream that holds requests for as long as a test wants.

A flood must meet the clear 503 page (Japanese first, ``Retry-After``), never a bare 502:
past ``pages_in_flight`` requests nginx answers at once, and when gunicorn cannot be
reached the same page says so. Django's own 503 (load shedding, a database outage) passes
through untouched: its ``HX-Redirect`` and wording are Django's. Static files come from
disk even then, with WhiteNoise's caching headers.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.stack import PROXY, ensure_nginx, free_port, nginx_conf, wait_port
from tests.conftest import service_unavailable

PAGE = (PROXY / "503.html").read_text(encoding="utf-8")


@dataclass
class HoldingUpstream:
    """Answers ``/hold`` only when released, ``/django-503`` as Django's shedding does,
    anything else with 200 at once (HTTP/1.0, as nginx speaks to its upstream)."""

    port: int = field(default_factory=lambda: free_port(47100))
    release: threading.Event = field(default_factory=threading.Event)
    held: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1]
        if path == b"/hold":
            self.held += 1
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait)
        if path == b"/django-503":
            status, extra, body = "503 Service Unavailable", "HX-Redirect: /\r\n", b"django"
        else:
            status, extra, body = "200 OK", "", b"served"
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
        )
        await writer.drain()
        writer.close()

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(
                asyncio.start_server(self.answer, "127.0.0.1", self.port)
            )
            ready.set()
            self.loop.run_forever()
            server.close()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    def stop(self) -> None:
        self.release.set()

        async def finish() -> None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(finish(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Proxy:
    port: int

    def get(
        self, path: str, timeout: float = 10.0, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers=headers or {})
            answer = connection.getresponse()
            body = answer.read()
            if answer.getheader("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return answer.status, dict(answer.getheaders()), body.decode()
        finally:
            connection.close()


# What collectstatic leaves in STATIC_ROOT: a name with its content hash, its .gz copy,
# and a name without a hash.
STATIC = {
    "css/kairan.0123456789ab.css": "body { font-size: 1.25rem }",
    "js/plain.js": "// no hash in this name",
}


def start_nginx(tmp: Path, *, gunicorn: int, pages_in_flight: int) -> Iterator[Proxy]:
    try:
        binary = ensure_nginx()
    except (OSError, subprocess.CalledProcessError) as error:
        service_unavailable(f"nginx is not installed and could not be: {error}")
    port = free_port(47200)
    static_root = tmp / "staticfiles"
    for name, text in STATIC.items():
        (static_root / name).parent.mkdir(parents=True, exist_ok=True)
        (static_root / name).write_text(text)
    hashed = static_root / "css/kairan.0123456789ab.css"
    hashed.with_name(hashed.name + ".gz").write_bytes(gzip.compress(hashed.read_bytes()))
    conf = tmp / "nginx.conf"
    conf.write_text(
        nginx_conf(
            tmp=tmp,
            gunicorn=gunicorn,
            uvicorn=free_port(47300),
            nginx=port,
            static_root=static_root,
            pages_in_flight=pages_in_flight,
        )
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, timeout=15)
        yield Proxy(port)
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture
def upstream() -> Iterator[HoldingUpstream]:
    server = HoldingUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy(tmp_path: Path, upstream: HoldingUpstream) -> Iterator[Proxy]:
    yield from start_nginx(tmp_path, gunicorn=upstream.port, pages_in_flight=3)


def assert_busy_page(status: int, headers: dict[str, str], body: str) -> None:
    assert status == 503
    assert headers["Retry-After"] == "60"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert body == PAGE
    assert "ただいま混み合っているか、点検中です" in body
    assert "記録は一つだけです" in body  # pressing again is safe: say so


def test_past_the_requests_in_flight_nginx_answers_at_once_with_the_busy_page(
    proxy: Proxy, upstream: HoldingUpstream
) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        waiting: list[Future[tuple[int, dict[str, str], str]]] = [
            pool.submit(proxy.get, "/hold") for _ in range(3)
        ]
        deadline = time.monotonic() + 10
        while upstream.held < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert upstream.held == 3

        started = time.monotonic()
        assert_busy_page(*proxy.get("/c/one/circulars/1/confirm/"))
        assert time.monotonic() - started < 1.0  # turned away at once, not queued

        upstream.release.set()
        assert [future.result(timeout=10)[0] for future in waiting] == [200, 200, 200]
    # The flood is over: requests are served again.
    assert proxy.get("/")[0] == 200


def test_without_page_servers_nginx_answers_with_the_busy_page_not_a_bare_502(
    tmp_path: Path,
) -> None:
    nothing_listens = free_port(47400)
    for proxy in start_nginx(tmp_path, gunicorn=nothing_listens, pages_in_flight=3):
        assert_busy_page(*proxy.get("/"))
        assert_busy_page(*proxy.get("/c/one/circulars/1/"))


def test_djangos_own_503_passes_through_untouched(proxy: Proxy) -> None:
    status, headers, body = proxy.get("/django-503")
    assert (status, body, headers["HX-Redirect"]) == (503, "django", "/")
    assert "Retry-After" not in headers


def test_static_files_come_from_disk_even_past_the_bound(
    proxy: Proxy, upstream: HoldingUpstream
) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        waiting = [pool.submit(proxy.get, "/hold") for _ in range(3)]
        deadline = time.monotonic() + 10
        while upstream.held < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert upstream.held == 3
        assert_busy_page(*proxy.get("/c/one/"))  # pages are turned away ...

        # ... but a page's style sheet still comes, as WhiteNoise would have sent it.
        name = "css/kairan.0123456789ab.css"
        status, headers, body = proxy.get(f"/static/{name}")
        assert (status, body) == (200, STATIC[name])
        assert headers["Cache-Control"] == "max-age=315360000, public, immutable"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Type"] == "text/css; charset=utf-8"
        status, headers, body = proxy.get(f"/static/{name}", headers={"Accept-Encoding": "gzip"})
        assert (status, headers["Content-Encoding"], body) == (200, "gzip", STATIC[name])
        assert headers["Vary"] == "Accept-Encoding"
        status, headers, body = proxy.get("/static/js/plain.js")
        assert (status, body) == (200, STATIC["js/plain.js"])
        assert headers["Content-Type"] == "application/javascript; charset=utf-8"
        assert headers["Cache-Control"] == "max-age=60, public"

        # A file not on disk is asked of gunicorn (WhiteNoise), which is full here.
        assert proxy.get("/static/css/not-collected.css")[0] == 503
        assert "daemon" not in proxy.get("/static/../nginx.conf")[2]  # no way out of the root
        upstream.release.set()
        assert [future.result(timeout=10)[0] for future in waiting] == [200, 200, 200]
    status, _, body = proxy.get("/static/css/not-collected.css")
    assert (status, body) == (200, "served")
