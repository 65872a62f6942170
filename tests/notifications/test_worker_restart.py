"""A worker killed mid-batch and restarted: every household notified exactly once.

Everything here is real and in its own processes: the database task backend
(django-tasks-db) on a fresh database (a temporary SQLite file, or a dedicated PostgreSQL
database when ``DATABASE_URL`` is set), ``manage.py db_worker`` as the worker, Django's
SMTP backend talking to an aiosmtpd server on loopback that this test runs. The server
answers slowly, so the worker is mid-batch when it receives SIGKILL.

After the kill, a row the worker was sending stays ``sending``: ``deliveries_recover``
hands it back once the stuck window (5 minutes) has passed, and ``scheduler_tick`` enqueues
it again. A mail whose 250 the dead worker never read is therefore sent a second time, with
the same Message-ID (derived from circular, household and kind), so a mail client shows it
once. The assertion counts distinct Message-IDs per address; raw duplicates are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiosmtpd.controller import Controller

BASE_DIR = Path(__file__).resolve().parents[2]
HOUSEHOLDS = 30
KILL_AFTER_MAILS = 5
# The test process's own settings must not leak into the subprocesses.
DROPPED_ENV = ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "KAIRAN_TEST_RUN_ID")


def address(n: int) -> str:
    return f"household{n:02d}@example.jp"


# --- Run inside the subprocesses (config.settings from the environment) -----------------


def seed() -> None:
    """A community of HOUSEHOLDS digital households with an email each; publish one
    circular. No quiet hours, so the test does not depend on the time of day."""
    from datetime import time as clock

    from django.contrib.auth.models import User
    from django.utils import timezone

    from circulars.services import CircularData, circular_create, circular_publish
    from communities.models import Block, Community, DeliveryMode, Household, Member, RoleKind
    from communities.services import CONSENT_VERSION, role_assign

    community = Community.objects.create(
        name="ひばり町内会", slug="hibari", quiet_start=clock(0), quiet_end=clock(0)
    )
    block = Block.objects.create(community=community, name="1班", position=1)
    chair = User.objects.create_user(username="chair", email="chair@example.jp")
    role_assign(community=community, user=chair, role=RoleKind.CHAIR)
    for n in range(HOUSEHOLDS):
        household = Household.objects.create(
            community=community,
            block=block,
            label=f"世帯{n:02d}",
            circulation_order=n,
            delivery_mode=DeliveryMode.APP,
        )
        user = User.objects.create_user(username=f"resident{n:02d}")
        Member.objects.create(
            household=household,
            user=user,
            display_name=f"住民{n:02d}",
            email=address(n),
            consented_at=timezone.now(),
            consent_version=CONSENT_VERSION,
        )
    circular = circular_create(
        community=community, author=chair, data=CircularData(title="防災訓練のお知らせ")
    )
    circular_publish(circular=circular)
    from notifications.models import Delivery

    assert Delivery.objects.filter(circular=circular).count() == HOUSEHOLDS
    print(json.dumps({"circular": circular.pk}))


def recover_after_the_stuck_window() -> None:
    """What the scheduler does once five minutes have passed since the kill."""
    from datetime import timedelta

    from django.utils import timezone

    from notifications.ladder import deliveries_recover
    from notifications.scheduler import scheduler_tick

    later = timezone.now() + timedelta(minutes=10)
    recovered = deliveries_recover(now=later)
    tick = scheduler_tick(now=later)
    print(json.dumps({"recovered": recovered, "enqueued": tick.enqueued}))


def report() -> None:
    from notifications.models import Delivery

    rows = list(Delivery.objects.values("step", "channel", "status", "attempts"))
    print(json.dumps(rows))


# --- The test process -------------------------------------------------------------------


@dataclass
class SlowSmtp:
    """Keeps every accepted mail, then waits before answering 250, so a kill lands while
    mails are in flight."""

    delay: float = 0.25
    received: list[tuple[str, str]] = field(default_factory=list)  # (recipient, Message-ID)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message_id = str(message_from_bytes(envelope.content)["Message-ID"])
        for recipient in envelope.rcpt_tos:
            self.received.append((recipient, message_id))
        await asyncio.sleep(self.delay)
        return "250 OK"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_python(env: dict[str, str], *args: str, timeout: float = 120) -> str:
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


def run_here(env: dict[str, str], function: str) -> Any:
    """Call one of this module's functions in a subprocess with Django set up; its last
    printed line is JSON."""
    code = (
        "import django; django.setup(); "
        f"from tests.notifications.test_worker_restart import {function}; {function}()"
    )
    output = run_python(env, "-c", code)
    return json.loads(output.strip().splitlines()[-1])


def start_worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "db_worker",
                "--no-reload",
                "--no-startup-delay",
                "--interval",
                "0.1",
                *extra,
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def database_env() -> Iterator[dict[str, str]]:
    """A fresh database for the subprocesses: a SQLite file, or a PostgreSQL database."""
    with tempfile.TemporaryDirectory(prefix="kairan-worker-") as data_dir:
        env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
        env["DJANGO_SETTINGS_MODULE"] = "config.settings"
        env["KAIRAN_DATA_DIR"] = data_dir
        admin_url = os.environ.get("DATABASE_URL")
        if not admin_url:
            yield env
            return
        import psycopg
        from psycopg import sql

        name = f"kairan_worker_{os.getpid()}"
        env["DATABASE_URL"] = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
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
def smtp() -> Iterator[tuple[SlowSmtp, int]]:
    handler = SlowSmtp()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def wait_for(condition: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def test_a_worker_killed_mid_batch_and_restarted_notifies_every_household_once(
    database_env: dict[str, str], smtp: tuple[SlowSmtp, int]
) -> None:
    server, port = smtp
    env = {
        **database_env,
        "KAIRAN_TASKS_BACKEND": "database",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(port),
        "EMAIL_USE_TLS": "0",
        "KAIRAN_PUBLIC_URL": "https://kairan.example.jp",
        "KAIRAN_LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "0",
    }
    log = Path(env["KAIRAN_DATA_DIR"]) / "worker.log"
    run_python(env, "manage.py", "migrate", "--noinput", "-v", "0")
    run_here(env, "seed")  # publishes: 30 tasks wait in the database
    assert server.received == []  # nothing is sent before a worker runs

    worker = start_worker(env, log)
    try:
        wait_for(
            lambda: len(server.received) >= KILL_AFTER_MAILS or worker.poll() is not None,
            timeout=60,
            what=f"{KILL_AFTER_MAILS} mails from the first worker",
        )
        kill(worker)
    finally:
        kill(worker)
    before_restart = len(server.received)
    assert KILL_AFTER_MAILS <= before_restart < HOUSEHOLDS, "the kill did not land mid-batch"

    recovery = run_here(env, "recover_after_the_stuck_window")
    run_python(env, "manage.py", "run_scheduler")  # once, in real time: nothing new is due

    restarted = start_worker(env, log, "--batch")
    try:
        restarted.wait(timeout=120)
    finally:
        kill(restarted)
    assert restarted.returncode == 0, log.read_text(errors="replace")[-3000:]

    by_address: dict[str, list[str]] = {}
    for recipient, message_id in server.received:
        by_address.setdefault(recipient, []).append(message_id)
    expected = {address(n) for n in range(HOUSEHOLDS)}
    assert set(by_address) == expected
    distinct = {recipient: len(set(ids)) for recipient, ids in by_address.items()}
    assert set(distinct.values()) == {1}, distinct
    duplicates = len(server.received) - HOUSEHOLDS
    print(
        f"\nworker restart: {before_restart} mails before the kill, "
        f"recovered {recovery['recovered']} rows, re-enqueued {recovery['enqueued']}, "
        f"{len(server.received)} mails in all, {duplicates} raw duplicate(s) "
        "(same Message-ID)"
    )
    # At most the mails in flight at the kill can be sent twice.
    assert duplicates <= 1

    rows = run_here(env, "report")
    assert len(rows) == HOUSEHOLDS
    assert {(row["step"], row["channel"], row["status"]) for row in rows} == {
        ("publish", "email", "sent")
    }
