"""Production-shaped load benchmark (issue 7): one command, loopback only.

    .venv/bin/python bench/production.py                 # full run (100,000-household city)
    .venv/bin/python bench/production.py --quick         # minutes: small rates, short steps
    .venv/bin/python bench/production.py --city-households 20000 --scenarios receipts,pages

What it does:

1. Starts a private production-shaped stack on 127.0.0.1 (see ``stack.py``): its own
   PostgreSQL 15 cluster (initdb in a temporary directory) and Redis on free ports,
   gunicorn (pages, ``bench.wsgi`` = ``config.wsgi`` + one trivial page), uvicorn
   ``--ws wsproto --ws-per-message-deflate false --workers 2`` for ``/ws/``,
   ``manage.py db_worker`` and ``run_scheduler``, and Debian's nginx in front splitting
   ``/ws/`` from the rest (installed with apt-get when missing). ``KAIRAN_ENV=production``:
   nginx sets ``X-Forwarded-Proto: https`` as a TLS terminator would, so the HTTPS-only
   settings (secure cookies, HSTS, CSRF origin checks, SSL redirect) are live over plain
   loopback HTTP. The confirm rate limit is raised for the run (``KAIRAN_BENCH_CONFIRM_LIMIT``
   read by ``bench/wsgi.py``) because a load test confirms far more often per person than a
   phone does; the value is in the JSON.
2. Loads a synthetic city with bulk_create (``city.py``): one association of 2,000
   households in 40 blocks plus associations of ~200 households up to ``--city-households``.
   Residents are logged in with database sessions, as joining with an invite card does.
3. Runs the scenarios (open loop: fixed arrival schedule, latency from the scheduled send
   time; client processes in ``clients.py``): receipts, overload, fanout, sockets, pages,
   print, ceilings. Client and server share the machine's cores, and the output says so.
4. Stops everything (also on Ctrl-C or failure), prints a table, and writes flat JSON (one
   number per key) to ``bench/results/<date>-<host>.json`` (``quick-…`` for ``--quick``)
   with the machine description beside it in ``….machine.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from clients import Jobs  # noqa: E402
from stack import ROOT, VENV, Stack, free_port, machine_cpu_seconds, wait_port  # noqa: E402

SCENARIOS = ["receipts", "overload", "fanout", "sockets", "pages", "print", "ceilings"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return -1.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return round(ordered[index], 1)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {message}", flush=True)


class Run:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.quick = args.quick
        self.metrics: dict[str, float] = {}
        self.city: Any = None
        self.pool_used = 0
        self.knee = 0.0
        self.resident_jobs: Jobs | None = None

    # --- helpers --------------------------------------------------------------------

    def circulars(self, count: int) -> list[int]:
        from city import circulars_add

        city = self.city
        if self.pool_used + count > len(city.pool):
            city.pool += circulars_add(
                community_id=city.community_id,
                author_id=city.chair_id,
                count=self.pool_used + count - len(city.pool),
                title="確認のお願い",
            )
        chosen = city.pool[self.pool_used : self.pool_used + count]
        self.pool_used += count
        return chosen

    def socket_jobs(
        self,
        name: str,
        sockets: list[tuple[str, str, int]],
        *,
        processes: int,
        record: list[str],
        connect_rate: float = 400,
        drop: bool = False,
    ) -> dict[str, Any]:
        jobs = []
        for p in range(processes):
            jobs.append(
                {
                    "kind": "sockets",
                    "name": f"{name}-{p}",
                    "base": self.stack.ws,
                    "origin": self.stack.origin,
                    "sockets": sockets[p::processes],
                    "record": record,
                    "connect_rate": connect_rate / processes,
                    "drop": drop,
                }
            )
        return {"jobs": jobs}

    def start_sockets(self, name: str, sockets: list[tuple[str, str, int]], **kwargs: Any):
        runner = Jobs()
        spec = self.socket_jobs(name, sockets, **kwargs)
        runner.start(spec["jobs"])
        ready = runner.wait_ready(len(spec["jobs"]), timeout=300)
        connected = sum(r[2] for r in ready)
        errors = sum(r[3] for r in ready)
        ramp = max(r[4] for r in ready)
        return runner, connected, errors, ramp

    def ledger_path(self, circular_id: int) -> str:
        return f"/ws/c/{self.city.slug}/circulars/{circular_id}/ledger/"

    def db_confirmed(self, circular_ids: list[int]) -> set[tuple[int, int]]:
        from circulars.models import Receipt

        return set(
            Receipt.objects.filter(
                circular_id__in=circular_ids, confirmed_at__isnull=False
            ).values_list("circular_id", "household_id")
        )

    # --- scenario 1 and 2: receipts -------------------------------------------------

    def confirm_step(self, rate: float, duration: float) -> dict[str, Any]:
        city = self.city
        households = city.residents[:999]
        count = int(rate * duration)
        circulars = self.circulars(math.ceil(count / len(households)))
        # One chair ledger socket per circular in play (a real chair watches one; the
        # confirms need a fresh circular every 999 households).
        ledger, _, _, _ = self.start_sockets(
            "ledger",
            [(self.ledger_path(c), city.chair.cookie, c) for c in circulars],
            processes=1,
            record=["ledger.receipt", "ledger.totals"],
            connect_rate=200,
        )
        order = list(range(len(households)))
        random.Random(int(rate)).shuffle(order)
        items, schedule = [], {}
        for i in range(count):
            circular = circulars[i // len(households)]
            resident = households[order[i % len(households)]]
            path = f"/c/{city.slug}/circulars/{circular}/confirm/"
            items.append([i, path, resident.cookie, resident.csrf])
            schedule[(circular, resident.household_id)] = i
        processes = max(1, math.ceil(rate / 400))
        redis_before = self.redis_connections()
        cpu_before, machine_before = self.stack.cpu(), machine_cpu_seconds()
        t0 = time.time() + 3.0
        runner = Jobs()
        runner.start(
            [
                {
                    "kind": "open_loop",
                    "name": f"confirm-{p}",
                    "method": "POST",
                    "base": self.stack.http,
                    "origin": self.stack.origin,
                    "t0": t0,
                    "rate": rate,
                    "items": items[p::processes],
                }
                for p in range(processes)
            ]
        )
        try:
            done = runner.finish(timeout=duration + 120)
        finally:
            runner.kill()
        send_end = t0 + count / rate
        self.drain(circulars)
        cpu_after, machine_after = self.stack.cpu(), machine_cpu_seconds()
        redis_connections = self.redis_connections() - redis_before
        records = ledger.finish()
        ledger.kill()
        results = [r for job in done.values() for r in job["results"]]
        by_index = {i: (c, h) for (c, h), i in schedule.items()}
        acked = {by_index[i] for i, status, _, _ in results if 200 <= status < 400}
        db = self.db_confirmed(circulars)
        lost = len(acked - db)
        events: dict[tuple[int, int], float] = {}
        totals: dict[int, list[tuple[float, int]]] = {}
        for job in records.values():
            for _tag, kind, circular_id, value, at in job["record"]:
                if kind == "ledger.receipt":
                    events.setdefault((circular_id, value), at)
                else:
                    totals.setdefault(circular_id, []).append((at, value))
        ledger_ms = [
            (at - (t0 + schedule[key] / rate)) * 1000 for key, at in events.items() if key in acked
        ]
        http_ms = [latency for _, status, latency, _ in results if 200 <= status < 400]
        last_answer = max((t0 + i / rate + lat / 1000 for i, _, lat, _ in results), default=t0)
        # When did each circular's ledger last reach the database's count?
        final_db: dict[int, int] = {}
        for circular_id, _ in db:
            final_db[circular_id] = final_db.get(circular_id, 0) + 1
        resync = 0.0
        in_sync = True
        for circular_id in circulars:
            seen = sorted(totals.get(circular_id, []))
            target = final_db.get(circular_id, 0)
            reached = [at for at, value in seen if value == target]
            if target and (not seen or seen[-1][1] != target or not reached):
                in_sync = False
                continue
            if reached:
                resync = max(resync, reached[0] - send_end)
        statuses: dict[int, int] = {}
        for _, status, _, _ in results:
            statuses[status] = statuses.get(status, 0) + 1
        # Where the machine's CPU went, per confirmation recorded: each server with its
        # children (PostgreSQL with its backends), and the rest of the machine (the client
        # processes, the sockets' clients, anything else running).
        served = max(1, len(acked))
        cpu_ms = {
            name: round((cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / served, 2)
            for name in cpu_after
        }
        cpu_ms["machine"] = round((machine_after - machine_before) * 1000 / served, 2)
        cpu_ms["clients_and_other"] = round(
            cpu_ms["machine"] - sum(v for k, v in cpu_ms.items() if k != "machine"), 2
        )
        return {
            "offered": count,
            "acked": len(acked),
            "db": len(db),
            "lost": lost,
            "errors": sum(v for k, v in statuses.items() if not 200 <= k < 400),
            "statuses": statuses,
            "http_p50": pct(http_ms, 50),
            "http_p99": pct(http_ms, 99),
            "ledger_p50": pct(ledger_ms, 50),
            "ledger_p99": pct(ledger_ms, 99),
            "ledger_missed": len(acked - set(events)),
            "lag_p99": pct([lag for *_, lag in results], 99),
            "achieved": len(acked) / max(0.001, last_answer - t0),
            "answers_done_s": max(0.0, last_answer - send_end),
            "resync_s": round(resync, 2) if in_sync else -1.0,
            "redis_connections_per_confirm": round(redis_connections / max(1, count), 2),
            "cpu_ms_per_confirm": cpu_ms,
        }

    def redis_connections(self) -> int:
        """Connections Redis has accepted so far (INFO stats)."""
        for line in self.stack.redis_cli("info", "stats").splitlines():
            if line.startswith("total_connections_received:"):
                return int(line.split(":")[1])
        return 0

    def drain(self, circulars: list[int], quiet: float = 3.0, limit: float = 180.0) -> None:
        """Wait until the server has worked off its queue: no new receipt for ``quiet`` s.

        Requests the client gave up on may still be in nginx's or gunicorn's queue; the
        next step must not start on top of them."""
        last, since, deadline = -1, time.time(), time.time() + limit
        while time.time() < deadline:
            now = len(self.db_confirmed(circulars))
            if now != last:
                last, since = now, time.time()
            elif time.time() - since >= quiet:
                return
            time.sleep(0.5)

    def ensure_residents(self) -> None:
        if self.resident_jobs is not None:
            return
        city = self.city
        sockets = [("/ws/inbox/", r.cookie, r.household_id) for r in city.residents[:999]]
        log("opening 999 resident sockets")
        runner, connected, errors, _ramp = self.start_sockets(
            "residents", sockets, processes=1, record=[], connect_rate=300
        )
        self.resident_jobs = runner
        self.metrics["resident_sockets_connected"] = connected
        self.metrics["resident_sockets_errors"] = errors

    def close_residents(self) -> None:
        if self.resident_jobs is not None:
            self.resident_jobs.finish()
            self.resident_jobs.kill()
            self.resident_jobs = None

    def scenario_receipts(self) -> None:
        self.ensure_residents()
        # 25 and 50 find the knee of a small machine; 300 and 1,000 are the goals.
        rates = self.args.rates or ([20, 60] if self.quick else [25, 50, 100, 300, 1000])
        duration = self.args.step_seconds or (5 if self.quick else 60)
        m = self.metrics
        m["receipt_step_s"] = duration
        log("receipts: unloaded latency, 10 confirms at 2/s")
        step = self.confirm_step(2, 5)
        m["confirm_unloaded_p50_ms"] = step["http_p50"]
        m["receipt_unloaded_p50_ms"] = step["ledger_p50"]
        lost = step["lost"]
        knee = 0.0
        for rate in rates:
            log(f"receipts: {rate}/s for {duration} s")
            step = self.confirm_step(rate, duration)
            r = int(rate)
            m[f"confirm_p50_ms_at_{r}"] = step["http_p50"]
            m[f"confirm_p99_ms_at_{r}"] = step["http_p99"]
            m[f"receipt_p50_ms_at_{r}"] = step["ledger_p50"]
            m[f"receipt_p99_ms_at_{r}"] = step["ledger_p99"]
            m[f"confirm_errors_at_{r}"] = step["errors"]
            # How the refused were answered: 503 (the busy page, from nginx or Django), 502
            # (nginx could not hand it on), 0 (no answer at all: refused or timed out).
            for status in (503, 502, 0):
                m[f"confirm_status_{status}_at_{r}"] = step["statuses"].get(status, 0)
            m[f"confirm_achieved_per_s_at_{r}"] = round(step["achieved"], 1)
            m[f"ledger_events_missed_at_{r}"] = step["ledger_missed"]
            m[f"client_lag_p99_ms_at_{r}"] = step["lag_p99"]
            m[f"redis_connections_per_confirm_at_{r}"] = step["redis_connections_per_confirm"]
            for name, value in step["cpu_ms_per_confirm"].items():
                m[f"cpu_ms_per_confirm_at_{r}_{name}"] = value
            lost += step["lost"]
            log(f"  {step}")
            if step["errors"] == 0 and 0 <= step["http_p99"] <= 100:
                knee = max(knee, rate)
        m["receipts_lost"] = lost
        # The highest rate served without errors at p99 <= 100 ms; 0 when none was (the
        # overload scenario then starts from the lowest rate tried).
        m["receipt_knee_per_s"] = knee
        self.knee = knee or min(rates)

    def scenario_overload(self) -> None:
        self.ensure_residents()
        if not self.knee:
            self.knee = self.args.knee or (30 if self.quick else 300)
        rate = 2 * self.knee
        duration = 5 if self.quick else 30
        log(f"overload: {rate}/s for {duration} s (2 x knee {self.knee})")
        step = self.confirm_step(rate, duration)
        log(f"  {step}")
        m = self.metrics
        m["overload_rate_per_s"] = rate
        m["overload_resync_s"] = step["resync_s"]
        m["overload_answers_done_s"] = round(step["answers_done_s"], 2)
        m["overload_confirm_p99_ms"] = step["http_p99"]
        m["overload_errors"] = step["errors"]
        m["overload_lost"] = step["lost"]
        m["receipts_lost"] = m.get("receipts_lost", 0) + step["lost"]

    # --- scenario 3: fan-out --------------------------------------------------------

    def publish(self, title: str) -> tuple[int, float, float]:
        from django.contrib.auth.models import User

        from circulars import services
        from communities.models import Community

        community = Community.objects.get(pk=self.city.community_id)
        chair = User.objects.get(pk=self.city.chair_id)
        circular = services.circular_create(
            community=community, author=chair, data=services.CircularData(title=title, body="本文")
        )
        start = time.time()
        services.circular_publish(circular=circular)
        return circular.pk, start, time.time()

    def fanout(self, sockets: int, publishes: int, processes: int) -> dict[str, Any]:
        residents = self.city.residents[: len(self.city.main_household_ids)]
        targets = [("/ws/inbox/", residents[i % len(residents)].cookie, i) for i in range(sockets)]
        runner, connected, errors, _ = self.start_sockets(
            f"fanout{sockets}",
            targets,
            processes=processes,
            record=["inbox.circular"],
            connect_rate=600,
        )
        time.sleep(1.0)
        published = []
        try:
            for n in range(publishes):
                published.append(self.publish(f"一斉配信 {sockets}-{n}"))
                if self.args.fanout_gap:
                    time.sleep(self.args.fanout_gap)
            # Until every socket has every publish, or nothing arrived for 5 s: a message
            # still on its way when the clients stop must not read as lost.
            runner.wait_recorded(connected * publishes, quiet=5.0, limit=120.0)
        finally:
            records = runner.finish()
            runner.kill()
        arrivals: dict[int, list[float]] = {}
        for job in records.values():
            for _tag, _kind, circular_id, _h, at in job["record"]:
                arrivals.setdefault(circular_id, []).append(at)
        return {
            "connected": connected,
            "errors": errors,
            "published": published,
            "arrivals": arrivals,
        }

    def scenario_fanout(self) -> None:
        m = self.metrics
        self.close_residents()
        small = 1000
        log(f"fan-out: {small} sockets, 3 publishes one by one")
        self.args.fanout_gap = 1.5
        got = self.fanout(small, 3, processes=1)
        lasts, publish_ms, after_commit = [], [], []
        for circular_id, start, end in got["published"]:
            times = got["arrivals"].get(circular_id, [])
            complete = len(times) >= got["connected"]
            lasts.append((max(times) - start) * 1000 if complete else -1)
            # From the commit (the publish call's return) to the last socket: the live
            # layer's own part, without the publish transaction (receipts, planning).
            after_commit.append((max(times) - end) * 1000 if complete else -1)
            publish_ms.append((end - start) * 1000)
            m["fanout_delivered_1000"] = len(times)
        m["fanout_last_ms_1000"] = round(statistics.median(lasts), 1)
        m["fanout_after_commit_ms_1000"] = round(statistics.median(after_commit), 1)
        m["fanout_publish_call_ms_1000"] = round(statistics.median(publish_ms), 1)
        m["fanout_connected_1000"] = got["connected"]
        big = 2000 if self.quick else 5000
        publishes = 3 if self.quick else 5
        log(f"fan-out: {big} sockets, {publishes} publishes back to back")
        self.args.fanout_gap = 0
        got = self.fanout(big, publishes, processes=2)
        first = min(start for _, start, _ in got["published"])
        ours = {c for c, _, _ in got["published"]}
        times = [t for c, ts in got["arrivals"].items() if c in ours for t in ts]
        span = (max(times) - first) if times else 0
        key = "5000" if not self.quick else str(big)
        m[f"delivered_msgs_per_s_{key}"] = round(len(times) / span, 1) if span else -1
        if self.quick:
            m["delivered_msgs_per_s_5000"] = m[f"delivered_msgs_per_s_{key}"]
        m[f"fanout_connected_{key}"] = got["connected"]
        m[f"fanout_expected_{key}"] = got["connected"] * publishes
        m[f"fanout_delivered_{key}"] = len(times)

    # --- scenario 4: idle sockets ---------------------------------------------------

    def scenario_sockets(self) -> None:
        m = self.metrics
        self.close_residents()
        total = self.args.sockets or (2000 if self.quick else 10000)
        residents = self.city.residents
        targets = [("/ws/inbox/", residents[i % len(residents)].cookie, i) for i in range(total)]
        names = ("uvicorn", "nginx", "redis")
        log("sockets: restarting uvicorn for a clean memory baseline")
        self.stack.restart_uvicorn()
        before = self.stack.rss(*names)
        before_uvicorn = self.stack.rss("uvicorn")
        log(f"sockets: ramping to {total} idle sockets")
        runner, connected, errors, ramp = self.start_sockets(
            "idle", targets, processes=4, record=[], connect_rate=500, drop=True
        )
        try:
            time.sleep(3)
            after = self.stack.rss(*names)
            after_uvicorn = self.stack.rss("uvicorn")
            log(f"  {connected} connected, {errors} errors in {ramp:.1f} s; dropping all")
            runner.drop_flag.set()
            time.sleep(12)
        finally:
            done = runner.finish()
            runner.kill()
        dropped = sum(job["counts"]["dropped"] for job in done.values())
        kinds: dict[str, int] = {}
        for job in done.values():
            for key, value in job["counts"].items():
                if key.startswith("error_"):
                    kinds[key] = kinds.get(key, 0) + value
        if kinds:
            log(f"  socket errors by kind: {kinds}")
        within, delays = 0, []
        for job in done.values():
            delays += [at - job["drop_at"] for at in job["reconnects"]]
            within += sum(1 for at in job["reconnects"] if at - job["drop_at"] <= 5.0)
        m["sockets_target"] = total
        m["sockets_connected"] = connected
        m["socket_connect_errors"] = errors
        m["socket_ramp_s"] = round(ramp, 1)
        m["socket_kib"] = round((after - before) / max(1, connected), 1)
        m["socket_kib_uvicorn"] = round((after_uvicorn - before_uvicorn) / max(1, connected), 1)
        m["reconnect_dropped"] = dropped
        m["reconnect_success_pct"] = round(100 * within / max(1, dropped), 2)
        m["reconnect_before_end_pct"] = round(100 * len(delays) / max(1, dropped), 2)
        m["reconnect_p50_s"] = pct(delays, 50)
        m["reconnect_p99_s"] = pct(delays, 99)

    # --- scenario 5: pages ----------------------------------------------------------

    def open_loop_get(self, items: list[list[Any]], rate: float, processes: int) -> dict:
        t0 = time.time() + 2.5
        runner = Jobs()
        runner.start(
            [
                {
                    "kind": "open_loop",
                    "name": f"get-{p}",
                    "method": "GET",
                    "base": self.stack.http,
                    "origin": self.stack.origin,
                    "t0": t0,
                    "rate": rate,
                    "items": items[p::processes],
                }
                for p in range(processes)
            ]
        )
        try:
            done = runner.finish(timeout=len(items) / rate + 120)
        finally:
            runner.kill()
        results = [r for job in done.values() for r in job["results"]]
        ok = [lat for _, status, lat, _ in results if status == 200]
        last = max((t0 + i / rate + lat / 1000 for i, _, lat, _ in results), default=t0)
        return {
            "p50": pct(ok, 50),
            "p95": pct(ok, 95),
            "p99": pct(ok, 99),
            "errors": len(results) - len(ok),
            "achieved": len(ok) / max(0.001, last - t0),
            "lag_p99": pct([lag for *_, lag in results], 99),
        }

    def count_queries(self, path: str, user_id: int) -> int:
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        client = Client(HTTP_HOST="127.0.0.1", headers={"X-Forwarded-Proto": "https"})
        client.force_login(User.objects.get(pk=user_id))
        client.get(path, secure=True)  # warm: session, caches
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(path, secure=True)
        assert answer.status_code == 200, (path, answer.status_code)
        return len(queries)

    def scenario_pages(self) -> None:
        m = self.metrics
        self.close_residents()
        city = self.city
        page = f"/c/{city.slug}/circulars/{city.page_circular_id}/"
        ledger = f"/c/{city.slug}/circulars/{city.page_circular_id}/ledger/"
        m["page_queries"] = self.count_queries(page, city.residents[0].user_id)
        m["ledger_queries"] = self.count_queries(ledger, city.chair_id)
        # The ledger first, on idle servers: the page ramp below overloads them on purpose,
        # and requests its clients gave up on are still being turned away for seconds.
        ledger_rate = 5
        count = ledger_rate * (4 if self.quick else 20)
        items = [[i, ledger, city.chair.cookie, ""] for i in range(count)]
        log(f"pages: 2,000-household ledger at {ledger_rate}/s, {count} requests")
        step = self.open_loop_get(items, ledger_rate, processes=1)
        log(f"  {step}")
        m["ledger_p50_ms"] = step["p50"]
        m["ledger_p95_ms"] = step["p95"]
        m["ledger_errors"] = step["errors"]
        residents = city.residents[: len(city.main_household_ids)]
        # From a rate a small machine sustains up to the goal, so the figure is measured.
        rates = [50, 100] if self.quick else [50, 100, 150, 200, 250, 500, 1000, 2000]
        duration = 3 if self.quick else 10
        best = None
        for rate in rates:
            count = int(rate * duration)
            items = [[i, page, residents[i % len(residents)].cookie, ""] for i in range(count)]
            log(f"pages: resident circular page at {rate}/s for {duration} s")
            step = self.open_loop_get(items, rate, processes=max(1, math.ceil(rate / 500)))
            log(f"  {step}")
            m[f"page_p99_ms_at_{rate}"] = step["p99"]
            m[f"page_achieved_per_s_at_{rate}"] = round(step["achieved"], 1)
            m[f"page_errors_at_{rate}"] = step["errors"]
            if step["errors"] == 0 and step["p99"] <= 50:
                best = (rate, step)
            if step["p99"] > 2000:
                break
        m["page_goal_rate_met"] = int(best is not None)
        if best is None:
            # No rate within p99 ≤ 50 ms: the most the servers answered, at the lowest rate's
            # p99 (not the lowest rate offered, which read as if it had been served).
            rate = rates[0]
            m["page_req_per_s"] = max(
                m[f"page_achieved_per_s_at_{r}"] for r in rates if f"page_p99_ms_at_{r}" in m
            )
            m["page_p99_ms"] = m[f"page_p99_ms_at_{rate}"]
        else:
            m["page_req_per_s"] = best[0]
            m["page_p99_ms"] = best[1]["p99"]

    # --- scenario 6: print and photos -----------------------------------------------

    def scenario_print(self) -> None:
        m = self.metrics
        runs = "2" if self.quick else "10"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIRAN_", "DJANGO_"))}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env.pop("EMAIL_HOST", None)
        log("print packs (bench/print_pack.py)")
        out = subprocess.run(
            [str(VENV / "python"), str(BENCH / "print_pack.py"), "--runs", runs],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        ).stdout
        medians = [float(x) for x in re.findall(r"median\s+([\d.]+) ms", out)]
        m["print_pack_50_ms"], m["print_pack_50_furigana_ms"], m["print_pack_community_ms"] = (
            medians[:3]
        )
        log("photo ingest (bench/photo_ingest.py)")
        out = subprocess.run(
            [str(VENV / "python"), str(BENCH / "photo_ingest.py"), "--runs", runs],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        ).stdout
        m["photo_ingest_ms"] = float(re.findall(r"median\s+([\d.]+) ms", out)[0])

    # --- scenario 7: ceilings -------------------------------------------------------

    def scenario_ceilings(self) -> None:
        m = self.metrics
        stack = self.stack
        seconds = 3 if self.quick else 10
        log("ceiling: redis-benchmark PUBLISH")
        out = subprocess.run(
            [
                "redis-benchmark",
                "-h",
                "127.0.0.1",
                "-p",
                str(stack.redis_port),
                "-c",
                "50",
                "-n",
                "20000" if self.quick else "200000",
                "--csv",
                "PUBLISH",
                "bench",
                "hello",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [line for line in out.splitlines() if line.startswith('"PUBLISH')]
        m["ceiling_redis_publish_per_s"] = float(rows[-1].split(",")[1].strip('"'))
        log("ceiling: pgbench single-row insert")
        stack.psql("CREATE TABLE IF NOT EXISTS bench_insert (id bigserial primary key, v int)")
        script = stack.tmp / "insert.sql"
        script.write_text("INSERT INTO bench_insert (v) VALUES (1);\n")
        out = subprocess.run(
            [
                "/usr/lib/postgresql/15/bin/pgbench",
                "-n",
                "-h",
                "127.0.0.1",
                "-p",
                str(stack.pg_port),
                "-U",
                "postgres",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                str(script),
                "kairan",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        m["ceiling_pg_insert_per_s"] = float(re.findall(r"tps = ([\d.]+)", out)[0])
        log("ceiling: trivial Django page on the same gunicorn, through nginx")
        runner = Jobs()
        runner.start(
            [
                {
                    "kind": "closed_loop",
                    "name": f"trivial-{p}",
                    "url": stack.http + "/bench/trivial/",
                    "concurrency": 32,
                    "duration": seconds,
                }
                for p in range(2)
            ]
        )
        done = runner.finish(timeout=seconds + 60)
        latencies = [x for job in done.values() for x in job["latencies"]]
        m["ceiling_trivial_page_req_per_s"] = round(len(latencies) / seconds, 1)
        m["ceiling_trivial_page_p99_ms"] = pct(latencies, 99)
        m["ceiling_trivial_page_errors"] = sum(job["errors"] for job in done.values())
        log("ceiling: bare websockets broadcast server")
        port = free_port(58201)
        server = subprocess.Popen(
            [str(VENV / "python"), str(BENCH / "ws_broadcast.py"), str(port)],
            start_new_session=True,
        )
        try:
            wait_port(port)
            sockets = 2000 if self.quick else 5000
            messages = 10 if self.quick else 20
            runner = Jobs()
            runner.start(
                [
                    {
                        "kind": "ws_broadcast_clients",
                        "name": f"wsb-{p}",
                        "url": f"ws://127.0.0.1:{port}/",
                        "sockets": sockets // 2,
                        "messages": messages,
                        "trigger": p == 0,
                    }
                    for p in range(2)
                ]
            )
            runner.wait_ready(2)
            time.sleep(0.5)
            runner.drop_flag.set()
            time.sleep(5 if self.quick else 8)
            done = runner.finish()
            runner.kill()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(10)
        sent = max(job["sent_at"] for job in done.values())
        arrivals = [t for job in done.values() for t in job["arrivals"]]
        span = max(arrivals) - sent if arrivals else 0
        m["ceiling_ws_broadcast_msgs_per_s"] = round(len(arrivals) / span, 1) if span else -1
        m["ceiling_ws_broadcast_delivered"] = len(arrivals)


def machine(stack: Stack) -> dict[str, str]:
    def version(args: list[str]) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=20)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    import django

    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram_gib": f"{mem_kib / 1024 / 1024:.1f}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": version(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "redis": version(["redis-server", "--version"]),
        "nginx": version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "gunicorn": version([str(VENV / "gunicorn"), "--version"]),
        "uvicorn": version([str(VENV / "uvicorn"), "--version"]),
        "load_average_at_start": f"{os.getloadavg()[0]:.2f}",
        "shared_cores": "client load generators and all servers shared the same cores",
        "gunicorn_workers": str(stack.gunicorn_workers),
        "uvicorn_workers": str(stack.uvicorn_workers),
        "tls": "none: nginx on loopback HTTP sets X-Forwarded-Proto https",
        "confirm_rate_limit_per_60s": str(stack.confirm_limit),
    }


RATIOS: list[tuple[str, str, str]] = [
    (
        "ratio_confirm_knee_to_trivial_page_pct",
        "receipt_knee_per_s",
        "ceiling_trivial_page_req_per_s",
    ),
    ("ratio_confirm_knee_to_pg_insert_pct", "receipt_knee_per_s", "ceiling_pg_insert_per_s"),
    ("ratio_page_to_trivial_page_pct", "page_req_per_s", "ceiling_trivial_page_req_per_s"),
    (
        "ratio_fanout_to_ws_broadcast_pct",
        "delivered_msgs_per_s_5000",
        "ceiling_ws_broadcast_msgs_per_s",
    ),
    (
        "ratio_fanout_to_redis_publish_pct",
        "delivered_msgs_per_s_5000",
        "ceiling_redis_publish_per_s",
    ),
]


def report(metrics: dict[str, float], path: Path, elapsed: float) -> None:
    for key, top, bottom in RATIOS:
        if metrics.get(top, -1) > 0 and metrics.get(bottom, -1) > 0:
            metrics[key] = round(100 * metrics[top] / metrics[bottom], 1)
    metrics["client_server_shared_cores"] = 1
    metrics["run_seconds"] = round(elapsed, 1)
    width = max(len(k) for k in metrics)
    print("\n" + "metric".ljust(width) + "  value")
    for key, value in metrics.items():
        print(key.ljust(width) + f"  {value}")
    print("\nClient load generators and the servers shared the machine's cores.")
    print(f"JSON: {path}")


@contextlib.contextmanager
def running_stack(
    args: argparse.Namespace, *, households: int, sessions: int, pool: int
) -> Iterator[Run]:
    """Start the stack, load the city, yield a ``Run``; stop everything however it ends."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with &
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID prints where a run hangs
    tmp = Path(tempfile.mkdtemp(prefix="kairan-bench-"))
    os.chmod(tmp, 0o755)  # noqa: S103 - PostgreSQL's user must reach its data directory
    stack = Stack(tmp, gunicorn_workers=args.gunicorn_workers)
    run = Run(args, stack)
    try:
        log(
            f"stack in {tmp}: PostgreSQL :{stack.pg_port}, Redis :{stack.redis_port}, "
            f"nginx :{stack.nginx_port}"
        )
        stack.start_databases()
        stack.manage("migrate", "--no-input")
        stack.manage("collectstatic", "--no-input")
        os.environ.update(stack.env)
        import django

        django.setup()
        from city import load
        from django.db import connections

        log(f"loading a city of {households:,} households")
        started = time.time()
        run.city = load(households=households, sessions=sessions, pool=pool)
        run.metrics["city_households"] = run.city.households
        run.metrics["city_communities"] = run.city.communities
        run.metrics["city_load_s"] = round(time.time() - started, 1)
        connections.close_all()
        log(f"city loaded in {run.metrics['city_load_s']} s; starting servers")
        stack.start_servers()
        yield run
        run.close_residents()
    finally:
        Jobs.kill_all()
        stack.stop()
        if getattr(args, "keep", False):
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small rates and short steps")
    parser.add_argument(
        "--city-households",
        type=int,
        default=None,
        help="households in the city (default 100,000; --quick 2,000)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=None,
        help="receipt rates per second (default 25,50,100,300,1000)",
    )
    parser.add_argument("--step-seconds", type=float, default=None, help="seconds per rate")
    parser.add_argument("--knee", type=float, default=None, help="knee for overload alone")
    parser.add_argument("--sockets", type=int, default=None, help="idle sockets (default 10,000)")
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    households = args.city_households or (2000 if args.quick else 100_000)
    needs_sockets = args.sockets or (2000 if args.quick else 10000)
    started = time.time()
    run = Run(args, Stack(Path("/nonexistent"), gunicorn_workers=args.gunicorn_workers))
    described: dict[str, str] = {}
    failed = False
    try:
        with running_stack(
            args,
            households=households,
            sessions=min(households, needs_sockets),
            pool=3 if args.quick else 20,
        ) as run:
            described = machine(run.stack)
            for name in chosen:
                waited = run.stack.settle()
                run.metrics[f"settle_s_before_{name}"] = round(waited, 1)
                log(f"{name}: servers idle after {waited:.1f} s")
                try:
                    getattr(run, f"scenario_{name}")()
                except KeyboardInterrupt:
                    raise
                except Exception as error:
                    failed = True
                    log(f"scenario {name} FAILED: {error!r}")
                    traceback.print_exc()
    except KeyboardInterrupt:
        failed = True
        log("interrupted: stopped")
    if not run.metrics:
        sys.exit(1)
    host = socket.gethostname()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M")
    name = f"{'quick-' if args.quick else ''}{stamp}-{host}"
    path = args.output or BENCH / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report(run.metrics, path, time.time() - started)
    path.write_text(json.dumps(run.metrics, indent=1, sort_keys=True) + "\n")
    path.with_suffix(".machine.json").write_text(
        json.dumps(described or {"note": "stack did not start"}, indent=1) + "\n"
    )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
