"""Two ASGI server processes sharing Redis and the database, as in production.

A resident confirms through process A; the chair's 配布状況 socket, connected to process B,
receives the row. Nothing is shared between the processes but Redis and the database, so
this is the test that the broadcast really crosses process boundaries.

The servers are real uvicorn processes started here with the production flags. The
database is a temporary SQLite file in the embedded run and a dedicated PostgreSQL
database when ``DATABASE_URL`` is set; both are migrated first and removed afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

BASE_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
EVENT_TIMEOUT = 5.0
# The test process's own settings must not leak into the servers.
DROPPED_ENV = ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "KAIRAN_TEST_RUN_ID")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ws_implementation() -> str:
    """Production runs ``--ws wsproto``; fall back to websockets where wsproto is absent."""
    return "wsproto" if importlib.util.find_spec("wsproto") else "websockets"


def seed() -> None:
    """Run in a subprocess with the servers' environment: print ids and session keys."""
    from django.contrib.auth.models import User
    from django.test import Client

    from circulars.services import CircularData, circular_create, circular_publish
    from communities.models import RoleKind
    from tests.factories import (
        BlockFactory,
        CommunityFactory,
        HouseholdFactory,
        MemberFactory,
        UserFactory,
        give_role,
    )

    # Group names are built from ids, and Redis pub/sub channels are shared by every run
    # that uses the same Redis: unusual ids keep other runs' events off this test's socket.
    base = random.randrange(10**8, 10**9)
    community = CommunityFactory.create(name="さくら町内会", slug="sakura-mp")
    block = BlockFactory.create(pk=base, community=community, name="1班", position=1)
    household = HouseholdFactory.create(pk=base, block=block, label="山田")
    resident = MemberFactory.create(
        household=household, user=UserFactory.create(pk=base), display_name="山田 花子"
    ).user
    chair = UserFactory.create(pk=base + 1, first_name="会長")
    give_role(user=chair, community=community, role=RoleKind.CHAIR)
    circular = circular_create(
        community=community, author=chair, data=CircularData(title="ごみ収集日の変更")
    )
    circular_publish(circular=circular)

    def session_key(user: User) -> str:
        client = Client()
        client.force_login(user)
        return str(client.cookies["sessionid"].value)

    print(
        json.dumps(
            {
                "slug": community.slug,
                "circular_id": circular.pk,
                "household_id": household.pk,
                "chair_session": session_key(chair),
                "resident_session": session_key(resident),
            }
        )
    )


@dataclass(frozen=True)
class Seeded:
    slug: str
    circular_id: int
    household_id: int
    chair_session: str
    resident_session: str


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def run_django(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{args[:2]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def database_env() -> Iterator[dict[str, str]]:
    """A fresh, empty database for the servers: a SQLite file or a PostgreSQL database."""
    with tempfile.TemporaryDirectory(prefix="kairan-mp-") as data_dir:
        env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
        env["KAIRAN_DATA_DIR"] = data_dir
        admin_url = os.environ.get("DATABASE_URL")
        if not admin_url:
            yield env
            return
        import psycopg
        from psycopg import sql

        name = f"kairan_mp_{os.getpid()}"
        parts = urlsplit(admin_url)
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield env
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@pytest.fixture
def server_env(database_env: dict[str, str], redis_url: str) -> dict[str, str]:
    env = {
        **database_env,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": redis_url,
        "KAIRAN_LOG_LEVEL": "WARNING",
    }
    run_django(env, "manage.py", "migrate", "--no-input", "-v", "0")
    return env


@pytest.fixture
def seeded(server_env: dict[str, str]) -> Seeded:
    script = "import django; django.setup(); from tests.test_multiprocess import seed; seed()"
    output = run_django(server_env, "-c", script)
    return Seeded(**json.loads(output.strip().splitlines()[-1]))


def wait_until_serving(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{read_log(server)}")
        try:
            status, _headers, _body = request(server, "GET", "/healthz")
        except OSError:
            time.sleep(0.2)
            continue
        if status == 200:
            return
        time.sleep(0.2)
    pytest.fail(f"server on port {server.port} did not start:\n{read_log(server)}")


def read_log(server: Server) -> str:
    return server.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@pytest.fixture
def servers(server_env: dict[str, str], seeded: Seeded) -> Iterator[tuple[Server, Server]]:
    """Process A and process B: the same application, database and Redis, nothing else."""
    started: list[Server] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = Path(server_env["KAIRAN_DATA_DIR"]) / f"server-{name}.log"
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "config.asgi:application",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--ws",
                        ws_implementation(),
                        "--ws-per-message-deflate",
                        "false",
                        "--ws-max-size",
                        "65536",
                        "--lifespan",
                        "off",
                        "--no-access-log",
                    ],
                    cwd=BASE_DIR,
                    env=server_env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            started.append(Server(port=port, process=process, log=log))
        for server in started:
            wait_until_serving(server)
        yield started[0], started[1]
    finally:
        for server in started:
            server.process.terminate()
        for server in started:
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=10)


def request(
    server: Server,
    method: str,
    path: str,
    *,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> tuple[int, dict[str, str], str]:
    """One HTTP request to one process; redirects are not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    all_headers = dict(headers or {})
    if cookies:
        all_headers["Cookie"] = "; ".join(f"{key}={value}" for key, value in cookies.items())
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        jar: SimpleCookie = SimpleCookie()
        for value in response.headers.get_all("Set-Cookie") or []:
            jar.load(value)
        returned = {key: morsel.value for key, morsel in jar.items()}
        return response.status, returned, response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()


def confirm_through(server: Server, seeded: Seeded) -> None:
    """The resident opens the circular on process A and presses 「確認しました」."""
    page = f"/c/{seeded.slug}/circulars/{seeded.circular_id}/"
    cookies = {"sessionid": seeded.resident_session}
    status, set_cookies, _body = request(server, "GET", page, cookies=cookies)
    assert status == 200
    csrf = set_cookies["csrftoken"]
    status, _cookies, body = request(
        server,
        "POST",
        f"{page}confirm/",
        cookies={**cookies, "csrftoken": csrf},
        headers={
            "X-CSRFToken": csrf,
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=urlencode({"key": str(uuid.uuid4())}),
    )
    assert status == 302, body[:2000]


async def receive_until(
    websocket: Any, match: dict[str, object], timeout: float
) -> list[dict[str, Any]]:
    """Every event up to and including the first that has all of ``match``'s items."""
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            pytest.fail(f"no event matching {match} within {timeout} s; got {seen}")
        try:
            raw = await asyncio.wait_for(websocket.recv(), remaining)
        except TimeoutError:
            continue
        event = json.loads(raw)
        seen.append(event)
        if all(event.get(key) == value for key, value in match.items()):
            return seen


def test_confirmation_through_process_a_reaches_ledger_socket_on_process_b(
    servers: tuple[Server, Server], seeded: Seeded
) -> None:
    server_a, server_b = servers
    ledger_path = f"/ws/c/{seeded.slug}/circulars/{seeded.circular_id}/ledger/"

    async def scenario() -> list[dict[str, Any]]:
        async with connect(
            f"ws://127.0.0.1:{server_b.port}{ledger_path}",
            origin=Origin(server_b.origin),
            additional_headers={"Cookie": f"sessionid={seeded.chair_session}"},
            compression=None,
            open_timeout=10,
        ) as websocket:
            hello = json.loads(await asyncio.wait_for(websocket.recv(), EVENT_TIMEOUT))
            assert hello == {"type": "hello"}
            await asyncio.to_thread(confirm_through, server_a, seeded)
            rows = await receive_until(
                websocket,
                {
                    "type": "ledger.receipt",
                    "circular_id": seeded.circular_id,
                    "household_id": seeded.household_id,
                    "status": "confirmed",
                },
                EVENT_TIMEOUT,
            )
            # Production settings: the block's counts follow apart from the row (coalesced).
            counts = await receive_until(
                websocket,
                {"type": "ledger.counts", "circular_id": seeded.circular_id},
                EVENT_TIMEOUT,
            )
            return [*rows, *counts]

    try:
        events = asyncio.run(scenario())
    except BaseException:
        for server in servers:
            print(f"--- server on {server.port} ---\n{read_log(server)}")
        raise
    [receipt] = [e for e in events if e["type"] == "ledger.receipt" and e["status"] == "confirmed"]
    assert receipt["method"] == "app"
    assert receipt["block_counts"] == {}
    assert events[-1]["block_id"] == receipt["block_id"]
    assert events[-1]["counts"]["confirmed"] == 1
