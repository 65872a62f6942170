"""Fixtures for the fault tests: one private PostgreSQL cluster per session (migrated once
into a template database that each test clones), a private Redis per test, and the
servers a test starts, stopped afterwards whatever happened."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.stack import PrivatePostgres, PrivateRedis, Stack, run_python, server_env

TEMPLATE = "kairan_template"
_numbers = itertools.count()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    with tempfile.TemporaryDirectory(prefix="kairan-faults-pg-") as root:
        cluster = PrivatePostgres(root=Path(root) / "pg")
        try:
            cluster.init()
            cluster.start()
        except Exception as error:
            from tests.conftest import service_unavailable

            service_unavailable(f"a private PostgreSQL cluster could not start: {error!r}")
        try:
            cluster.sql("postgres", f"CREATE DATABASE {TEMPLATE}")
            env = server_env(data_dir=Path(root), database_url=cluster.url(TEMPLATE), redis_url="")
            run_python(env, "manage.py", "migrate", "--no-input", "-v", "0")
            yield cluster
        finally:
            cluster.stop("immediate")


@pytest.fixture
def stack(private_postgres: PrivatePostgres) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="kairan-faults-") as root:
        redis = PrivateRedis(root=Path(root) / "redis")
        try:
            redis.start()
        except Exception as error:
            from tests.conftest import service_unavailable

            service_unavailable(f"a private Redis could not start: {error!r}")
        database = f"faults_{os.getpid()}_{next(_numbers)}"
        private_postgres.sql("postgres", f"CREATE DATABASE {database} TEMPLATE {TEMPLATE}")
        env = server_env(
            data_dir=Path(root),
            # A short pool timeout: an outage answers in seconds, not after ten.
            database_url=private_postgres.url(database, pool_max="6", pool_timeout="3"),
            redis_url=redis.url,
        )
        built = Stack(postgres=private_postgres, redis=redis, database=database, env=env)
        try:
            yield built
        finally:
            for server in built.servers:
                server.stop()
            redis.kill()
            # A test may have left the cluster stopped; starting a running one fails.
            with contextlib.suppress(RuntimeError):
                private_postgres.start()
            private_postgres.sql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
