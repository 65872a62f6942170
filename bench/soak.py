"""Soak (issue 7 §2): scenario 1 at half the knee, with socket churn, for a long time.

    .venv/bin/python bench/soak.py [--minutes 120] [--rate R] [--city-households 2000]

``--minutes`` is wall-clock time under load, counted from the end of the knee probe: each
step is 60 s of confirms plus the churn and the sample (about 70 s in all), so 120 minutes
is about 100 steps.

Same production-shaped stack as ``production.py``. Without ``--rate`` it first finds the
knee (after a warm-up, confirm rates 25, 35, 50, 70, 100, 140, 200, 400, 800/s for 10 s
each; the knee is the highest with no error and p99 ≤ 100 ms) and soaks at half of it.
Then, step by step: a 60-second open-loop confirm step while the 999 resident sockets
are closed and opened again (every socket churns once a minute), and a sample of the
resident memory of each server process group, the Redis key count and the number of
PostgreSQL connections.

Prints a table and writes flat JSON to ``bench/results/soak-<date>-<host>.json``:
``soak_memory_growth_pct`` (total server memory, PSS, at the end against the first step's,
when the caches and pools are warm; ``soak_rss_memory_growth_pct`` the same in RSS, which
counts PostgreSQL's shared buffers once per backend; ``soak_servers_memory_growth_pct`` the
same without PostgreSQL, whose buffer cache fills with the data the soak writes),
``soak_redis_keys_start`` / ``_end``,
``soak_pg_connections_max``, ``soak_receipts_lost``, and the per-process-group growth.
Goals: memory growth ≤ 10 %, Redis keys flat, PostgreSQL connections within the pools
(gunicorn workers + uvicorn workers + worker + scheduler, each ``pool_max=10``).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))

from production import Run, log, machine, running_stack  # noqa: E402

GROUPS = ("gunicorn", "uvicorn", "db_worker", "scheduler", "nginx", "redis", "postgres")


def sample(run: Run) -> dict[str, float]:
    stack = run.stack
    values: dict[str, float] = {}
    for kind, measure in (("rss", stack.rss), ("pss", stack.pss)):
        for name in GROUPS:
            values[f"{kind}_kib_{name}"] = measure(name)
        values[f"{kind}_kib_total"] = sum(values[f"{kind}_kib_{name}"] for name in GROUPS)
    values["redis_keys"] = int(stack.redis_cli("dbsize") or 0)
    values["pg_connections"] = int(
        stack.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'kairan'") or 0
    )
    return values


def results_write(
    *,
    metrics: dict[str, float],
    samples: list[dict[str, float]],
    described: dict[str, str],
    started: float,
    path: Path,
    final: bool,
) -> None:
    """The flat JSON so far: written after every step, so a run cut short keeps its data."""
    metrics = dict(metrics)
    if samples:
        first, last = samples[0], samples[-1]
        metrics["soak_steps"] = len(samples)
        metrics["soak_wall_minutes"] = round(last["elapsed_s"] / 60, 1)
        # Growth of proportional memory (PSS): RSS summed over PostgreSQL's backends grows
        # as they touch its shared buffers, without the machine using more memory.
        for kind, prefix in (("pss", "soak_"), ("rss", "soak_rss_")):
            total = f"{kind}_kib_total"
            metrics[f"{prefix}memory_growth_pct"] = round(
                100 * (last[total] - first[total]) / first[total], 2
            )
            for name in GROUPS:
                key = f"{kind}_kib_{name}"
                if first[key]:
                    metrics[f"{prefix}growth_pct_{name}"] = round(
                        100 * (last[key] - first[key]) / first[key], 2
                    )
        # Kairan's own processes and the services' fixed parts, without PostgreSQL, whose
        # share grows with the database the soak writes (its buffer cache takes up pages
        # of new receipts and circulars, bounded by shared_buffers): a leak shows here.
        before = first["pss_kib_total"] - first["pss_kib_postgres"]
        after = last["pss_kib_total"] - last["pss_kib_postgres"]
        metrics["soak_servers_memory_growth_pct"] = round(100 * (after - before) / before, 2)
        metrics["soak_redis_keys_start"] = first["redis_keys"]
        metrics["soak_redis_keys_end"] = last["redis_keys"]
        metrics["soak_pg_connections_max"] = max(s["pg_connections"] for s in samples)
    metrics["soak_finished"] = int(final)
    metrics["run_seconds"] = round(time.time() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    path.with_suffix(".samples.json").write_text(json.dumps(samples, indent=1) + "\n")
    path.with_suffix(".machine.json").write_text(json.dumps(described, indent=1) + "\n")
    if final:
        width = max(len(k) for k in metrics)
        print()
        for key, value in metrics.items():
            print(key.ljust(width) + f"  {value}")
        print("\nClient load generators and the servers shared the machine's cores.")
        print(f"JSON: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--rate", type=float, default=None, help="confirms/s (default: knee/2)")
    parser.add_argument("--city-households", type=int, default=2000)
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    args.quick = False
    args.rates = None
    args.step_seconds = None
    args.knee = None
    args.sockets = None
    args.fanout_gap = 0
    metrics: dict[str, float] = {}
    samples: list[dict[str, float]] = []
    described: dict[str, str] = {}
    started = time.time()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M")
    path = args.output or BENCH / "results" / f"soak-{stamp}-{socket.gethostname()}.json"

    def write(*, final: bool) -> None:
        results_write(
            metrics=metrics,
            samples=samples,
            described=described,
            started=started,
            path=path,
            final=final,
        )

    pool = 10
    try:
        with running_stack(args, households=args.city_households, sessions=1000, pool=pool) as run:
            described = machine(run.stack)
            rate = args.rate
            if rate is None:
                knee = 0.0
                run.ensure_residents()
                # Fresh workers are slow at first (imports, templates, pools): without a
                # warm-up the first probe failed on its start-up p99 and the soak ran at
                # a quarter of the knee.
                run.confirm_step(10, 5)
                for probe in (25, 35, 50, 70, 100, 140, 200, 400, 800):
                    log(f"knee probe: {probe}/s for 10 s")
                    step = run.confirm_step(probe, 10)
                    log(f"  p99 {step['http_p99']} ms, errors {step['errors']}")
                    if step["errors"] or not 0 <= step["http_p99"] <= 100:
                        break
                    knee = probe
                rate = max(1.0, (knee or 10) / 2)
                metrics["soak_knee_per_s"] = knee
            metrics["soak_rate_per_s"] = rate
            lost = 0
            p99s = []
            metrics["soak_receipts_lost"] = lost
            metrics["soak_confirm_p99_ms_max"] = -1
            soak_started = time.monotonic()
            steps = 0
            while time.monotonic() - soak_started < args.minutes * 60:
                run.close_residents()  # churn: every resident socket closes …
                run.ensure_residents()  # … and opens again
                step = run.confirm_step(rate, 60)
                lost += step["lost"]
                p99s.append(step["http_p99"])
                values = sample(run)
                steps += 1
                values["minute"] = steps  # the step's number (the key older files use)
                values["elapsed_s"] = round(time.monotonic() - soak_started, 1)
                samples.append(values)
                log(
                    f"step {steps} ({values['elapsed_s'] / 60:.0f}/{args.minutes} min): "
                    f"p99 {step['http_p99']} ms, "
                    f"lost {step['lost']}, PSS {values['pss_kib_total'] / 1024:.0f} MiB, "
                    f"Redis keys {values['redis_keys']}, PG connections {values['pg_connections']}"
                )
                metrics["soak_receipts_lost"] = lost
                metrics["soak_confirm_p99_ms_max"] = max(p99s)
                write(final=False)
    except KeyboardInterrupt:
        log("interrupted: stopped")
    write(final=True)


if __name__ == "__main__":
    main()
