"""A private production-shaped stack for fault tests: PostgreSQL, Redis and uvicorn servers
that a test may kill and restart without touching the shared services on 5432 and 6379.

PostgreSQL is a throw-away cluster (initdb into a temporary directory, trust auth, its own
port and socket directory); Redis is a ``redis-server`` with no persistence on its own
port. The application processes are the real ``uvicorn config.asgi:application`` with the
production flags, as in ``tests/test_multiprocess.py``, pointed at both.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from tests.conftest import service_unavailable
from tests.test_multiprocess import BASE_DIR, DROPPED_ENV, free_port, ws_implementation

PG_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]
START_TIMEOUT = 30.0


def binary(name: str) -> str:
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        service_unavailable(f"{name} is not installed")
    return str(found)


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


# --- PostgreSQL ---------------------------------------------------------------------------


@dataclass
class PrivatePostgres:
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str, **query: str) -> str:
        suffix = f"?{urlencode(query)}" if query else ""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}{suffix}"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # The postgres user must reach its directory inside root's temporary one.
            self.root.parent.chmod(0o711)
            shutil.chown(self.root, "postgres", "postgres")
        result = subprocess.run(
            _as_postgres(
                [
                    binary("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            ),
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode:
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c fsync=off -c max_connections=60"
        )
        result = subprocess.run(
            _as_postgres(
                [
                    binary("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.root / "postgres.log"),
                    "-w",
                    "-t",
                    "30",
                    "start",
                ]
            ),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}")

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no shutdown checkpoint, recovery from WAL on start."""
        subprocess.run(
            _as_postgres([binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
            timeout=60,
        )

    def sql(self, database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query, params or None)
            return list(cursor.fetchall()) if cursor.description else []


# --- Redis --------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


# --- Application servers ------------------------------------------------------------------


@dataclass
class AppServer:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def server_env(*, data_dir: Path, database_url: str, redis_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            # Production-shaped: no debug pages, errors go through the handlers.
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "KAIRAN_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "KAIRAN_CHANNEL_PREFIX": f"faults{os.getpid()}.",
            "KAIRAN_LOG_LEVEL": "WARNING",
        }
    )
    return env


def run_python(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args[:2]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def launch_server(env: dict[str, str], name: str) -> AppServer:
    port = free_port()
    log = Path(env["KAIRAN_DATA_DIR"]) / f"server-{name}.log"
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
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return AppServer(name=name, port=port, process=process, log=log)


def wait_serving(server: AppServer) -> AppServer:
    process, name = server.process, server.name
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server {name} exited:\n{server.log_tail()}")
        try:
            if request(server, "GET", "/healthz").status == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"server {name} did not start:\n{server.log_tail()}")
        time.sleep(0.2)


# --- Talking to the servers ---------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: str


def request(
    server: AppServer,
    method: str,
    path: str,
    *,
    session: str = "",
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15,
) -> Response:
    """One HTTP request; a POST carries a CSRF token pair as a browser's would."""
    headers = dict(headers or {})
    cookies: dict[str, str] = {}
    if session:
        cookies["sessionid"] = session
    body = None
    if method == "POST":
        token = secrets.token_hex(16)  # 32 characters: an unmasked secret
        cookies["csrftoken"] = token
        headers["X-CSRFToken"] = token
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(form or {})
    if cookies:
        headers["Cookie"] = "; ".join(f"{key}={value}" for key, value in cookies.items())
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Response(
            status=response.status,
            headers={key.lower(): value for key, value in response.getheaders()},
            body=response.read().decode("utf-8", errors="replace"),
        )
    finally:
        connection.close()


def confirm(server: AppServer, *, slug: str, circular_id: int, session: str) -> Response:
    return request(
        server,
        "POST",
        f"/c/{slug}/circulars/{circular_id}/confirm/",
        session=session,
        form={"key": str(uuid.uuid4())},
    )


@dataclass(frozen=True)
class Ledger:
    """Which 配布状況 to open, as whom."""

    slug: str
    circular_id: int
    session: str

    @property
    def path(self) -> str:
        return f"/ws/c/{self.slug}/circulars/{self.circular_id}/ledger/"


async def open_ledger(server: AppServer, ledger: Ledger, *, timeout: float = 5) -> ClientConnection:
    """A 配布状況 socket, returned once the server has said hello."""
    websocket = await connect(
        f"ws://127.0.0.1:{server.port}{ledger.path}",
        origin=Origin(server.origin),
        additional_headers={"Cookie": f"sessionid={ledger.session}"},
        compression=None,
        open_timeout=timeout,
    )
    try:
        hello = json.loads(await asyncio.wait_for(websocket.recv(), timeout))
    except BaseException:
        await websocket.close()
        raise
    assert hello == {"type": "hello"}, hello
    return websocket


async def reconnect_ledger(
    servers: list[AppServer], ledger: Ledger, *, within: float
) -> tuple[ClientConnection, AppServer, int]:
    """What the page's script does: try again (every 0.25 s here) until a socket says hello.

    Returns the socket, the server it reached and the number of attempts.
    """
    deadline = time.monotonic() + within
    attempts = 0
    last_error: Exception | None = None
    while True:
        for server in servers:
            attempts += 1
            try:
                socket = await open_ledger(server, ledger, timeout=2)
            except Exception as error:  # refused, reset or closed before hello: try again
                last_error = error
                continue
            return socket, server, attempts
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no ledger socket within {within} s ({attempts} attempts): {last_error!r}"
            )
        await asyncio.sleep(0.25)


async def drain_receipts(
    websocket: ClientConnection, *, wanted: set[int], timeout: float
) -> set[int]:
    """Household ids of confirmed-receipt events until all ``wanted`` arrived or time is up
    (events for other households that arrive meanwhile are included)."""
    seen: set[int] = set()
    deadline = asyncio.get_running_loop().time() + timeout
    while not wanted <= seen:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        try:
            raw = await asyncio.wait_for(websocket.recv(), remaining)
        except TimeoutError:
            break
        event = json.loads(raw)
        if event.get("type") == "ledger.receipt" and event.get("status") == "confirmed":
            seen.add(int(event["household_id"]))
    return seen


# --- Seeding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    slug: str
    circular_ids: list[int]
    household_ids: list[int]
    resident_sessions: list[str]
    second_device_session: str
    chair_session: str


def seed(households: int, circulars: int) -> None:
    """Run in a subprocess with the servers' environment; prints the ids and sessions.

    One block of ``households`` households with a resident each (the first household has
    a second phone), a chair, and ``circulars`` published circulars to every household.
    """
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

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

    community = CommunityFactory.create(name="さくら町内会", slug="sakura-faults")
    block = BlockFactory.create(community=community, name="1班", position=1)
    homes = [HouseholdFactory.create(block=block, label=f"世帯{i}") for i in range(households)]
    residents = [MemberFactory.create(household=home).user for home in homes]
    second = MemberFactory.create(household=homes[0]).user
    chair = UserFactory.create(first_name="会長")
    give_role(user=chair, community=community, role=RoleKind.CHAIR)
    published = []
    for number in range(circulars):
        circular = circular_create(
            community=community, author=chair, data=CircularData(title=f"お知らせ {number}")
        )
        published.append(circular_publish(circular=circular).pk)

    def session_key(user: User) -> str:
        # What login() stores, without its signals and rotation: quick for many users.
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        return str(store.session_key)

    print(
        json.dumps(
            {
                "slug": community.slug,
                "circular_ids": published,
                "household_ids": [home.pk for home in homes],
                "resident_sessions": [session_key(user) for user in residents],
                "second_device_session": session_key(second),
                "chair_session": session_key(chair),
            }
        )
    )


def run_seed(env: dict[str, str], *, households: int, circulars: int = 1) -> Seeded:
    script = (
        "import django; django.setup(); from tests.faults.stack import seed; "
        f"seed({households}, {circulars})"
    )
    output = run_python(env, "-c", script)
    return Seeded(**json.loads(output.strip().splitlines()[-1]))


@dataclass
class Stack:
    """What a fault test gets: the private services, its database and a way to add servers."""

    postgres: PrivatePostgres
    redis: PrivateRedis
    database: str
    env: dict[str, str]
    servers: list[AppServer] = field(default_factory=list)

    def serve(self, *names: str) -> list[AppServer]:
        """Start one server process per name, side by side, and wait until all answer."""
        started = [launch_server(self.env, name) for name in names]
        self.servers.extend(started)
        return [wait_serving(server) for server in started]

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in self.servers)

    def confirmed(self, circular_id: int) -> int:
        rows = self.postgres.sql(
            self.database,
            "SELECT count(*) FROM circulars_receipt "
            "WHERE circular_id = %s AND confirmed_at IS NOT NULL",
            circular_id,
        )
        return int(rows[0][0])


def stop_all(servers: Iterator[AppServer] | list[AppServer]) -> None:
    for server in servers:
        server.stop()
