"""Where one 「確認しました」 spends its time: in-process, production settings, no load.

    .venv/bin/python bench/confirm_profile.py [--confirms 300] [--profile]

Uses the machine's PostgreSQL (``--pg``, default ``postgres://postgres@127.0.0.1:5432``; a
database ``kairan_confirm_profile`` is created afresh) and Redis (``--redis``, default
``redis://127.0.0.1:6379/3``), loads the benchmark city's main association (2,000
households, ``city.py``) and posts confirmations one after another through Django's test
client with the production middleware, sessions and channel layer. Prints CPU and wall
time per confirm (median, p90), SQL queries per confirm, and with ``--profile`` the
functions that took the most cumulative time.

This is not a load test (``production.py`` is): it tells what a confirm costs, so the
knee of scenario 1 can be read as ``cores / CPU per confirm``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

DATABASE = "kairan_confirm_profile"


def environment(args: argparse.Namespace, data: Path) -> None:
    os.environ.update(
        {
            "KAIRAN_ENV": "production",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "testserver",
            "KAIRAN_PUBLIC_URL": "https://testserver",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": "9",
            "DATABASE_URL": f"{args.pg}/{DATABASE}?pool_max=4",
            "REDIS_URL": args.redis,
            "KAIRAN_DATA_DIR": str(data / "data"),
            "KAIRAN_MEDIA_ROOT": str(data / "media"),
            "KAIRAN_LOG_LEVEL": "WARNING",
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--confirms", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    parser.add_argument("--sort", default="cumulative", help="cumulative or tottime")
    parser.add_argument("--queries", action="store_true", help="print one confirm's SQL")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/3")
    args = parser.parse_args()
    for sql in (f"DROP DATABASE IF EXISTS {DATABASE}", f"CREATE DATABASE {DATABASE}"):
        subprocess.run(["psql", args.pg + "/postgres", "-qc", sql], check=True)
    with tempfile.TemporaryDirectory(prefix="kairan-confirm-") as tmp:
        environment(args, Path(tmp))
        run(args)


def confirm(client: Any, url: str, csrf: str) -> Any:
    return client.post(
        url,
        {"key": str(uuid.uuid4())},
        secure=True,
        HTTP_X_CSRFTOKEN=csrf,
        HTTP_HX_REQUEST="true",
        HTTP_ORIGIN="https://testserver",
        HTTP_REFERER="https://testserver/",
    )


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from city import circulars_add, load
    from django.core.management import call_command
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from communities import ratelimit

    ratelimit.LIMITS["confirm"] = (10**6, 60)
    call_command("migrate", verbosity=0)
    town = load(households=2000, sessions=min(2000, args.confirms + 10))
    circular_id = circulars_add(
        community_id=town.community_id, author_id=town.chair_id, count=1, title="確認の測定"
    )[0]
    url = f"/c/{town.slug}/circulars/{circular_id}/confirm/"
    clients = []
    for resident in town.residents[: args.confirms]:
        client = Client(enforce_csrf_checks=True)
        for part in resident.cookie.split("; "):
            name, value = part.split("=", 1)
            client.cookies[name] = value
        clients.append((client, resident.csrf))
    # Warm up: imports, templates, pools, the channel layer's connection.
    warm_client, warm_csrf = clients.pop()
    confirm(warm_client, url, warm_csrf)
    cpu, wall, queries = [], [], []
    profiler = cProfile.Profile() if args.profile else None
    for client, csrf in clients:
        reset_queries()
        started_cpu, started = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        with CaptureQueriesContext(connection) as captured:
            response = confirm(client, url, csrf)
        if profiler:
            profiler.disable()
        cpu.append((time.process_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
        queries.append(len(captured))
        if response.status_code != 200:
            raise SystemExit(f"confirm answered {response.status_code}: {response.content[:300]!r}")
    time.sleep(0.5)  # the broadcasts after commit leave on the sender loop

    def p(values: list[float], q: float) -> float:
        return round(sorted(values)[int(q * (len(values) - 1))], 2)

    print(f"confirms              {len(cpu)}")
    print(f"cpu_ms_per_confirm    median {p(cpu, 0.5)}  p90 {p(cpu, 0.9)}")
    print(f"wall_ms_per_confirm   median {p(wall, 0.5)}  p90 {p(wall, 0.9)}")
    print(f"queries_per_confirm   median {statistics.median(queries)}  max {max(queries)}")
    if args.queries:
        for query in captured.captured_queries:
            print(f"{query['time']:>6}  {query['sql'][:300]}")
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.sort).print_stats(45)


if __name__ == "__main__":
    main()
