"""Benchmark: a city-wide 安否確認 (issue 6 goal: all 100,000 households notified in 60 s).

Run on demand, never in the test suite:

    .venv/bin/python bench/safety_city.py [--communities 500] [--households 200]
        [--workers 2] [--starters 4] [--verify-every 50]

What it does, all on this machine:

1. Creates its own PostgreSQL database ``kairan_bench_city_<pid>`` on 127.0.0.1:5432
   (user postgres; ``--admin-url`` to change) and drops it at the end. No other database
   is touched.
2. Starts a light Web Push service in its own process (``bench/push_sink.py``): it accepts
   and counts every push and checks every Nth one as strictly as the test fake does (VAPID
   JWT, TTL, aes128gcm body decrypted with the subscription's keys).
3. Migrates and loads ``communities × households`` households (10 blocks each), every
   household one member with a user and one push subscription at the sink, and a chair
   per community.
4. Starts ``--workers`` ``manage.py db_worker`` processes with a production environment
   (``KAIRAN_ENV=production``, ``DATABASE_URL``, ``KAIRAN_TASKS_BACKEND=database``,
   ``REDIS_URL`` with a private channel prefix unless ``--no-redis``, a VAPID key from the
   environment).
5. ``--starters`` processes then start a drill safety check in every community at once
   through the real service (``circulars.safety.safety_check_start``), as 500 chairs would
   after an earthquake, and the bench waits until the sink has received a push for every
   household.

Prints a table and writes flat JSON to ``bench/results/safety-city-<date>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH = BASE_DIR / "bench"
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench.stack import cpu_seconds  # noqa: E402

BLOCKS = 10
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# An unusable password hash, as make_password(None) gives, without hashing 100,000 times.
UNUSABLE = "!"


# --- helpers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def sink_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return dict(json.loads(response.read()))


def git_revision() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


# --- the database -----------------------------------------------------------------------


def create_database(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}", query="pool_max=4"))


def drop_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --- loading (in this process, Django set up) -------------------------------------------


def load_city(
    *, communities: int, households: int, blocks: int, origin: str, seed: str
) -> list[int]:
    """Write the city with bulk inserts; returns the community ids."""
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.utils import timezone

    from bench.push_sink import sink_subscription
    from communities.models import (
        Block,
        Community,
        DeliveryMode,
        Household,
        Member,
        RoleAssignment,
        RoleKind,
    )
    from communities.services import CONSENT_VERSION
    from notifications.models import PushSubscription

    now = timezone.now()
    year = timezone.localdate().year
    with transaction.atomic():
        rows = Community.objects.bulk_create(
            [Community(name=f"市内{n:03d}町内会", slug=f"city-{n:03d}") for n in range(communities)]
        )
        community_ids = [c.pk for c in rows]
        chairs = User.objects.bulk_create(
            [User(username=f"chair{n:03d}", password=UNUSABLE) for n in range(communities)]
        )
        RoleAssignment.objects.bulk_create(
            [
                RoleAssignment(
                    community_id=cid, user_id=chair.pk, role=RoleKind.CHAIR, fiscal_year=year
                )
                for cid, chair in zip(community_ids, chairs, strict=True)
            ]
        )
        block_rows = Block.objects.bulk_create(
            [
                Block(community_id=cid, name=f"{b + 1}班", position=b + 1)
                for cid in community_ids
                for b in range(blocks)
            ],
            batch_size=5000,
        )
    per_block = max(1, households // blocks)
    number = 0
    chunk = 100  # communities per transaction
    for start in range(0, communities, chunk):
        batch_ids = community_ids[start : start + chunk]
        house_rows: list[Household] = []
        for index, cid in enumerate(batch_ids, start=start):
            community_blocks = block_rows[index * blocks : (index + 1) * blocks]
            for h in range(households):
                block = community_blocks[min(h // per_block, blocks - 1)]
                house_rows.append(
                    Household(
                        community_id=cid,
                        block_id=block.pk,
                        label=f"世帯{h + 1:03d}",
                        circulation_order=h,
                        delivery_mode=DeliveryMode.APP,
                    )
                )
        first = number
        with transaction.atomic():
            house_rows = Household.objects.bulk_create(house_rows, batch_size=5000)
            users = User.objects.bulk_create(
                [User(username=f"r{first + i}", password=UNUSABLE) for i in range(len(house_rows))],
                batch_size=5000,
            )
            Member.objects.bulk_create(
                [
                    Member(
                        household_id=house.pk,
                        user_id=user.pk,
                        display_name=f"住民{first + i}",
                        consented_at=now,
                        consent_version=CONSENT_VERSION,
                    )
                    for i, (house, user) in enumerate(zip(house_rows, users, strict=True))
                ],
                batch_size=5000,
            )
            subscriptions = []
            for i, user in enumerate(users):
                sid = f"h{first + i}"
                p256dh, auth = sink_subscription(seed, sid)
                subscriptions.append(
                    PushSubscription(
                        user_id=user.pk, endpoint=f"{origin}/push/{sid}", p256dh=p256dh, auth=auth
                    )
                )
            PushSubscription.objects.bulk_create(subscriptions, batch_size=5000)
        number += len(house_rows)
    return community_ids


# --- the starter role (a subprocess) ------------------------------------------------------


def run_starter(community_ids: list[int]) -> None:
    """Set up, say ready, wait for "go" on stdin, start a drill in each community."""
    import resource

    import django

    django.setup()
    from circulars.safety import safety_check_start
    from communities.models import Community, RoleAssignment, RoleKind

    chairs = {
        ra.community_id: ra.user
        for ra in RoleAssignment.objects.filter(
            community_id__in=community_ids, role=RoleKind.CHAIR
        ).select_related("user")
    }
    communities = {c.pk: c for c in Community.objects.filter(pk__in=community_ids)}
    print("ready", flush=True)
    sys.stdin.readline()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_at_go = usage.ru_utime + usage.ru_stime
    starts: list[tuple[float, float]] = []
    for cid in community_ids:
        begin = time.time()
        safety_check_start(community=communities[cid], author=chairs[cid], drill=True)
        starts.append((begin, time.time()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_at_go
    print(json.dumps({"starts": starts, "cpu": cpu}), flush=True)


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="City-scale safety check benchmark")
    parser.add_argument("--communities", type=int, default=500)
    parser.add_argument("--households", type=int, default=200, help="per community")
    parser.add_argument("--blocks", type=int, default=BLOCKS, help="per community")
    parser.add_argument("--workers", type=int, default=2, help="db_worker processes")
    parser.add_argument("--starters", type=int, default=4, help="processes starting checks")
    parser.add_argument("--verify-every", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for pushes")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--profile", type=Path, help="run workers and starters under cProfile, stats here"
    )
    parser.add_argument("--role", default="main", choices=["main", "starter"])
    parser.add_argument("--ids", default="")
    args = parser.parse_args()

    if args.role == "starter":
        run_starter([int(part) for part in args.ids.split(",") if part])
        return

    metrics: dict[str, Any] = {
        "city_date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "city_git": git_revision(),
        "city_cpus": os.cpu_count(),
        "city_load_avg_start": load_average(),
        "city_communities": args.communities,
        "city_households": args.communities * args.households,
        "city_workers": args.workers,
        "city_starters": args.starters,
        "city_verify_every": args.verify_every,
        "city_redis": not args.no_redis,
    }
    expected = args.communities * args.households
    name = f"kairan_bench_city_{os.getpid()}"
    data_dir = Path(tempfile.mkdtemp(prefix="kairan-bench-city-"))
    seed = secrets.token_hex(8)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []
    workers: list[subprocess.Popen[bytes]] = []
    sink: subprocess.Popen[bytes] | None = None
    created = False
    failed = True

    def python(role: str) -> list[str]:
        if args.profile is None:
            return [sys.executable]
        args.profile.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "cProfile", "-o", str(args.profile / f"{role}.prof")]

    def stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    try:
        database_url = create_database(args.admin_url, name)
        created = True
        from py_vapid import Vapid02

        vapid = Vapid02()
        vapid.generate_keys()
        env = {
            key: value
            for key, value in os.environ.items()
            if key
            not in {
                "DJANGO_SETTINGS_MODULE",
                "KAIRAN_TEST_RUN_ID",
                "DATABASE_URL",
                "PYTHONDONTWRITEBYTECODE",
            }
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "KAIRAN_ENV": "production",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "KAIRAN_PUBLIC_URL": "https://kairan.example.jp",
                "EMAIL_HOST": "127.0.0.1",  # no household has an address: nothing is mailed
                "DATABASE_URL": database_url,
                "KAIRAN_TASKS_BACKEND": "database",
                "KAIRAN_DATA_DIR": str(data_dir),
                "KAIRAN_VAPID_PRIVATE_KEY": vapid.private_pem().decode().replace("\n", "\\n"),
                "KAIRAN_VAPID_SUBJECT": "mailto:bench@kairan.example.jp",
                "KAIRAN_LOG_LEVEL": "WARNING",
                # Compiled modules in a private cache, as an installed app would have them
                # (this machine's environment turns bytecode caching off).
                "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "kairan-bench-pycache"),
                "PYTHONPATH": str(BASE_DIR),
            }
        )
        if args.no_redis:
            env.pop("REDIS_URL", None)
        else:
            env["REDIS_URL"] = args.redis_url
            env["KAIRAN_CHANNEL_PREFIX"] = f"bench-city-{os.getpid()}"

        sink = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "push_sink.py"),
                "--port",
                str(port),
                "--seed",
                seed,
                "--verify-every",
                str(args.verify_every),
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != b"ready":
            raise RuntimeError("the push sink did not start")

        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=BASE_DIR,
            env=env,
            check=True,
        )
        metrics["city_migrate_s"] = round(time.perf_counter() - began, 1)

        os.environ.update(env)
        import django

        django.setup()
        from django.db import connections

        began = time.perf_counter()
        community_ids = load_city(
            communities=args.communities,
            households=args.households,
            blocks=args.blocks,
            origin=origin,
            seed=seed,
        )
        metrics["city_load_s"] = round(time.perf_counter() - began, 1)
        connections.close_all()

        logs = data_dir / "logs"
        logs.mkdir()
        for n in range(args.workers):
            with (logs / f"worker{n}.log").open("ab") as log:
                workers.append(
                    subprocess.Popen(
                        [*python(f"worker{n}"), "manage.py", "db_worker", "--no-reload"],
                        cwd=BASE_DIR,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        starters: list[subprocess.Popen[bytes]] = []
        for n in range(args.starters):
            ids = community_ids[n :: args.starters]
            starters.append(
                subprocess.Popen(
                    [
                        *python(f"starter{n}"),
                        __file__,
                        "--role",
                        "starter",
                        "--ids",
                        ",".join(map(str, ids)),
                    ],
                    cwd=BASE_DIR,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    start_new_session=True,
                )
            )
        processes.extend(starters)
        for starter in starters:
            assert starter.stdout is not None
            if starter.stdout.readline().strip() != b"ready":
                raise RuntimeError("a starter did not start")
        deadline = time.monotonic() + 120
        for n in range(len(workers)):
            while b"Starting worker" not in (logs / f"worker{n}.log").read_bytes():
                if time.monotonic() > deadline or workers[n].poll() is not None:
                    raise RuntimeError(f"worker {n} did not start: see {logs}")
                time.sleep(0.1)
        worker_cpu_before = sum(cpu_seconds(w.pid) for w in workers)
        sink_cpu_before = cpu_seconds(sink.pid)
        metrics["city_load_avg_go"] = load_average()

        t0 = time.time()
        for starter in starters:
            assert starter.stdin is not None
            starter.stdin.write(b"go\n")
            starter.stdin.flush()

        stats = sink_stats(port)
        progress_at = time.monotonic()
        while stats["distinct"] < expected:
            if time.time() - t0 > args.timeout:
                break
            dead = [w for w in workers if w.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited: see {logs}")
            time.sleep(0.25)
            stats = sink_stats(port)
            if time.monotonic() - progress_at > 10:
                progress_at = time.monotonic()
                print(
                    f"  {time.time() - t0:6.1f} s: {stats['distinct']:>7} / {expected} pushed",
                    flush=True,
                )
        done_at = time.time()
        worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - worker_cpu_before
        sink_cpu = cpu_seconds(sink.pid) - sink_cpu_before
        metrics["city_load_avg_end"] = load_average()

        starts: list[tuple[float, float]] = []
        starter_cpu = 0.0
        for starter in starters:
            out, _ = starter.communicate(timeout=args.timeout)
            result = json.loads(out.decode().strip().splitlines()[-1])
            starts.extend(tuple(pair) for pair in result["starts"])
            starter_cpu += result["cpu"]
        durations = [(end - begin) * 1000 for begin, end in starts]
        last_start = max(end for _, end in starts)

        from django.db.models import Count, Max, Min
        from django_tasks_db.models import DBTaskResult

        from notifications.models import Delivery

        statuses = dict(
            Delivery.objects.filter(step="publish")
            .values_list("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )
        tasks = DBTaskResult.objects.aggregate(
            n=Count("pk"), first=Min("started_at"), last=Max("finished_at")
        )
        ready = DBTaskResult.objects.filter(finished_at__isnull=True).count()
        connections.close_all()

        complete = stats["distinct"] >= expected
        notify_s = (stats["last_new_at"] - t0) if complete else None
        push_span = max(stats["last_at"] - stats["first_at"], 1e-6)
        task_span = (
            (tasks["last"] - tasks["first"]).total_seconds()
            if tasks["first"] and tasks["last"]
            else 0.0
        )
        metrics.update(
            {
                "city_start_all_s": round(last_start - t0, 2),
                "city_start_p50_ms": round(statistics.median(durations), 1),
                "city_start_p95_ms": round(pct(durations, 95), 1),
                "city_start_max_ms": round(max(durations), 1),
                "city_notify_all_s": round(notify_s, 2) if notify_s is not None else None,
                "city_notify_after_last_start_s": (
                    round(stats["last_new_at"] - last_start, 2) if complete else None
                ),
                "city_notified": stats["distinct"],
                "city_push_per_s": round(stats["accepted"] / push_span, 1),
                "city_push_first_s": round(stats["first_at"] - t0, 2)
                if stats["first_at"]
                else None,
                "city_push_duplicates": stats["duplicates"],
                "city_push_verified": stats["verified"],
                "city_push_rejected": stats["rejected"],
                "city_push_reject_reasons": json.dumps(stats["reject_reasons"], ensure_ascii=False),
                "city_push_connections": stats["connections"],
                "city_tasks": tasks["n"],
                "city_tasks_unfinished": ready,
                "city_task_per_s": round(tasks["n"] / task_span, 1) if task_span else None,
                "city_deliveries_sent": statuses.get("sent", 0),
                "city_deliveries_not_sent": sum(statuses.values()) - statuses.get("sent", 0),
                "city_worker_cpu_s": round(worker_cpu, 1),
                "city_worker_cpu_pct": round(100 * worker_cpu / (done_at - t0), 1),
                "city_worker_cpu_ms_per_push": round(
                    1000 * worker_cpu / max(stats["accepted"], 1), 3
                ),
                "city_sink_cpu_s": round(sink_cpu, 1),
                "city_starter_cpu_s": round(starter_cpu, 1),
                "city_wall_s": round(done_at - t0, 1),
            }
        )
        failed = not complete
    finally:
        for process in [*processes, *workers]:
            stop(process)
        if sink is not None:
            stop(sink)
        if created:
            drop_database(args.admin_url, name)
        if failed and (data_dir / "logs").exists():
            for path in sorted((data_dir / "logs").iterdir()):
                tail = path.read_text(errors="replace")[-2000:]
                print(f"--- {path.name} (last lines)\n{tail}")
        shutil.rmtree(data_dir, ignore_errors=True)

    print_table(metrics)
    output = args.output or (
        BENCH / "results" / f"safety-city-{datetime.now(UTC).strftime('%Y-%m-%d')}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(metrics, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(
        f"written to {output.relative_to(BASE_DIR) if output.is_relative_to(BASE_DIR) else output}"
    )


def print_table(metrics: dict[str, Any]) -> None:
    goal = 60.0
    notify = metrics.get("city_notify_all_s")
    rows = [
        (
            "households / communities",
            f"{metrics['city_households']} / {metrics['city_communities']}",
        ),
        ("workers / starters", f"{metrics['city_workers']} / {metrics['city_starters']}"),
        (
            "load average at start / go / end",
            f"{metrics['city_load_avg_start']} / "
            f"{metrics.get('city_load_avg_go')} / {metrics.get('city_load_avg_end')}",
        ),
        ("migrate / load", f"{metrics.get('city_migrate_s')} s / {metrics.get('city_load_s')} s"),
        (
            "start all checks",
            f"{metrics['city_start_all_s']} s (p50 {metrics['city_start_p50_ms']} ms, "
            f"p95 {metrics['city_start_p95_ms']} ms per check)",
        ),
        ("first push after go", f"{metrics['city_push_first_s']} s"),
        (
            "all notified",
            f"{notify} s (goal ≤ {goal:g} s: "
            f"{'met' if notify is not None and notify <= goal else 'NOT met'})",
        ),
        ("notified", f"{metrics['city_notified']} / {metrics['city_households']}"),
        ("pushes/s (sink, first→last)", f"{metrics['city_push_per_s']}"),
        ("tasks / tasks/s", f"{metrics['city_tasks']} / {metrics['city_task_per_s']}"),
        (
            "worker CPU",
            f"{metrics['city_worker_cpu_s']} s ({metrics['city_worker_cpu_pct']} % of one "
            f"core), {metrics['city_worker_cpu_ms_per_push']} ms per push",
        ),
        (
            "sink / starters CPU",
            f"{metrics['city_sink_cpu_s']} s / {metrics['city_starter_cpu_s']} s",
        ),
        (
            "sink checks",
            f"every {metrics['city_verify_every']}th push fully verified: "
            f"{metrics['city_push_verified']} ok, {metrics['city_push_rejected']} refused "
            f"{metrics['city_push_reject_reasons']}",
        ),
        (
            "duplicates / not sent",
            f"{metrics['city_push_duplicates']} / {metrics['city_deliveries_not_sent']}",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
