"""A production-shaped Kairan on loopback, private to one benchmark run.

Its own PostgreSQL cluster (initdb into a temporary directory) and its own Redis, on free
ports; gunicorn for pages, uvicorn (wsproto, no deflate) for ``/ws/``, the task worker and
the scheduler; Debian's nginx in front sending ``/ws/`` to uvicorn and the rest to
gunicorn. Everything stops when the ``Stack`` is stopped, also after Ctrl-C or a failure.

TLS: nginx listens on plain loopback HTTP and sets ``X-Forwarded-Proto: https``, exactly
as it would behind a TLS terminator; the production settings honour it through
``SECURE_PROXY_SSL_HEADER``, so HTTPS redirects, secure cookies, HSTS and the CSRF origin
checks are all live. The cost of TLS itself is not measured.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The sandbox may cap the hard limit: nginx cannot raise itself above it.
NOFILE = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def free_port(preferred: int) -> int:
    for port in [preferred, *range(preferred + 1, preferred + 200)]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port near {preferred}")


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def ensure_nginx() -> str:
    """Debian's nginx, installed like ``./kairan`` installs Debian packages."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("nginx") or "/usr/sbin/nginx"


def children(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def _proc_kib(pid: int, name: str, field: str) -> int:
    """A ``field: N kB`` line of ``/proc/<pid>/<name>``; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    return _proc_kib(pid, "status", "VmRSS:")


def pss_kib(pid: int) -> int:
    """Proportional memory: shared pages divided among the processes sharing them.

    Summing RSS over PostgreSQL's backends counts its shared buffers once per backend
    that touched them (1.2 GB of RSS for 150 MB of memory in a soak), and over gunicorn's
    forked workers the pages they share; PSS adds up to what the machine really gives."""
    return _proc_kib(pid, "smaps_rollup", "Pss:")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy so far (every core; /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# The proxy itself is the shipped deploy/nginx/kairan.conf; the benchmark (and
# tests/test_proxy_errors.py) wrap it in a main configuration of their own (a private
# prefix, the sandbox's file limits) and put in their own ports and paths.
NGINX_MAIN = """
daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile {nofile};
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections {conns}; multi_accept on; }}
http {{
  include /etc/nginx/mime.types;  # as Debian's nginx.conf does; the site file relies on it
  default_type application/octet-stream;
  log_format timing '$msec $request_method $uri $status rt=$request_time '
    'uct=$upstream_connect_time uht=$upstream_header_time urt=$upstream_response_time';
  {access_log}
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
{site}
}}
"""
PROXY = ROOT / "deploy" / "nginx"
SITE = PROXY / "kairan.conf"
# Page requests nginx lets wait for gunicorn at once (see the site file).
PAGES_IN_FLIGHT = 256


def _put(text: str, old: str, new: str) -> str:
    """Replace the one occurrence of ``old``: if the site file changed shape, say so."""
    if text.count(old) != 1:
        raise RuntimeError(f"{SITE} should contain {old!r} exactly once")
    return text.replace(old, new)


def site_conf(
    *, gunicorn: int, uvicorn: int, nginx: int, pages_in_flight: int, static_root: Path
) -> str:
    site = SITE.read_text()
    site = _put(
        site,
        "server 127.0.0.1:8001 max_conns=256;",
        f"server 127.0.0.1:{gunicorn} max_conns={pages_in_flight};",
    )
    site = _put(site, "server 127.0.0.1:8002;", f"server 127.0.0.1:{uvicorn};")
    site = _put(site, "listen 127.0.0.1:8080 ", f"listen 127.0.0.1:{nginx} ")
    site = _put(site, "alias /srv/kairan/deploy/nginx/", f"alias {PROXY}/")
    site = _put(site, "alias /srv/kairan/var/staticfiles/;", f"alias {static_root}/;")
    return site


def nginx_conf(
    *,
    tmp: Path,
    gunicorn: int,
    uvicorn: int,
    nginx: int,
    static_root: Path,
    access_log: bool = False,
    pages_in_flight: int = PAGES_IN_FLIGHT,
) -> str:
    return NGINX_MAIN.format(
        tmp=tmp,
        nofile=NOFILE,
        conns=NOFILE - 1000,  # per worker; a proxied socket takes two
        access_log=(
            f"access_log {tmp}/nginx-access.log timing buffer=256k flush=1s;"
            if access_log
            else "access_log off;"
        ),
        site=site_conf(
            gunicorn=gunicorn,
            uvicorn=uvicorn,
            nginx=nginx,
            pages_in_flight=pages_in_flight,
            static_root=static_root,
        ),
    )


class Stack:
    def __init__(self, tmp: Path, *, gunicorn_workers: int = 4, uvicorn_workers: int = 2) -> None:
        self.tmp = tmp
        self.gunicorn_workers = gunicorn_workers
        self.uvicorn_workers = uvicorn_workers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pg_port = free_port(55432)
        self.redis_port = free_port(56379)
        self.gunicorn_port = free_port(58001)
        self.uvicorn_port = free_port(58101)
        self.nginx_port = free_port(58080)
        self.host = f"127.0.0.1:{self.nginx_port}"
        self.origin = f"https://{self.host}"
        self.http = f"http://{self.host}"
        self.ws = f"ws://{self.host}"
        self.pg_dsn = f"postgres://postgres@127.0.0.1:{self.pg_port}/kairan"
        self.confirm_limit = 100000
        # nginx's access log with upstream timings (where a request's time went); off by
        # default: at thousands of requests a second the log itself costs.
        self.access_log = bool(os.environ.get("KAIRAN_BENCH_ACCESS_LOG"))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAIRAN_", "DJANGO_"))},
            "KAIRAN_ENV": "production",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "KAIRAN_PUBLIC_URL": self.origin,
            # Nothing listens there: the synthetic members have no email address.
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": "9",
            "DATABASE_URL": self.pg_dsn + "?pool_max=10",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "KAIRAN_DATA_DIR": str(tmp / "data"),
            "KAIRAN_MEDIA_ROOT": str(tmp / "media"),
            "KAIRAN_LOG_LEVEL": "WARNING",
            "KAIRAN_BENCH_CONFIRM_LIMIT": str(self.confirm_limit),
            "PYTHONPATH": str(ROOT),
        }

    # --- processes --------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def _as_postgres(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def start_databases(self) -> None:
        pgdata = self.tmp / "pg"
        pgdata.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
            shutil.chown(pgdata, "postgres")
        subprocess.run(
            self._as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self._spawn(
            "postgres",
            self._as_postgres(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(pgdata),
                    "-p",
                    str(self.pg_port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={pgdata}",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=512MB",
                    "-c",
                    "log_min_messages=warning",
                ]
            ),
        )
        self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "30000",
                "--dir",
                str(self.tmp),
            ],
        )
        wait_port(self.pg_port)
        wait_port(self.redis_port)
        for _ in range(100):
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "postgres",
                "kairan",
            ],
            check=True,
        )

    def manage(self, *args: str) -> None:
        subprocess.run(
            [str(VENV / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start_uvicorn(self) -> None:
        self._spawn(
            "uvicorn",
            [
                str(VENV / "uvicorn"),
                "config.asgi:application",
                "--ws",
                "wsproto",
                "--ws-per-message-deflate",
                "false",
                "--ws-max-size",
                "65536",
                "--workers",
                str(self.uvicorn_workers),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.uvicorn_port),
                "--no-access-log",
                "--lifespan",
                "off",
                "--log-level",
                "warning",
                "--backlog",
                "4096",
            ],
        )

    def restart_uvicorn(self) -> None:
        """Fresh socket workers, so memory per socket is not hidden by an earlier peak."""
        proc = self.procs.pop("uvicorn")
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        self.start_uvicorn()
        wait_port(self.uvicorn_port)
        time.sleep(3)  # both workers up

    def start_servers(self) -> None:
        self._spawn(
            "gunicorn",
            [
                str(VENV / "gunicorn"),
                "bench.wsgi:application",
                "-w",
                str(self.gunicorn_workers),
                "-b",
                f"127.0.0.1:{self.gunicorn_port}",
                "--backlog",
                "4096",
                "--log-level",
                "warning",
                *(
                    # Seconds in the worker, per request and worker pid, beside nginx's log.
                    [
                        "--access-logfile",
                        str(self.tmp / "gunicorn-access.log"),
                        "--access-logformat",
                        "%(m)s %(U)s %(s)s %(L)s %(p)s",
                    ]
                    if self.access_log
                    else []
                ),
            ],
        )
        self.start_uvicorn()
        self._spawn("db_worker", [str(VENV / "python"), "manage.py", "db_worker"])
        self._spawn(
            "scheduler", [str(VENV / "python"), "manage.py", "run_scheduler", "--loop", "15"]
        )
        conf = self.tmp / "nginx.conf"
        conf.write_text(
            nginx_conf(
                tmp=self.tmp,
                gunicorn=self.gunicorn_port,
                uvicorn=self.uvicorn_port,
                nginx=self.nginx_port,
                static_root=self.tmp / "data" / "staticfiles",
                access_log=self.access_log,
                pages_in_flight=int(
                    os.environ.get("KAIRAN_BENCH_PAGES_IN_FLIGHT", PAGES_IN_FLIGHT)
                ),
            )
        )
        self._spawn("nginx", [ensure_nginx(), "-c", str(conf), "-p", str(self.tmp)])
        for port in (self.gunicorn_port, self.uvicorn_port, self.nginx_port):
            wait_port(port)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=5) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"/healthz did not answer 200; see the logs in {self.tmp}")
            time.sleep(0.3)

    def stop(self) -> None:
        order = ["nginx", "gunicorn", "uvicorn", "db_worker", "scheduler", "redis", "postgres"]
        for name in [*order, *[n for n in self.procs if n not in order]]:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            # SIGINT is PostgreSQL's fast shutdown; the others stop on SIGTERM.
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()

    # --- observation ------------------------------------------------------------------

    def pids(self, name: str) -> list[int]:
        proc = self.procs.get(name)
        return children(proc.pid) if proc else []

    def rss(self, *names: str) -> int:
        """Resident memory of the named processes and their children, in KiB."""
        return sum(rss_kib(pid) for name in names for pid in self.pids(name))

    def pss(self, *names: str) -> int:
        """Proportional memory of the named processes and their children, in KiB."""
        return sum(pss_kib(pid) for name in names for pid in self.pids(name))

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each named server and its children."""
        return {name: sum(cpu_seconds(pid) for pid in self.pids(name)) for name in self.procs}

    def settle(self, *, below: float = 0.15, quiet: float = 2.0, limit: float = 90.0) -> float:
        """Wait until the servers are idle (together under ``below`` of a core for ``quiet``
        seconds), so a scenario does not pay for the previous one's tail: thousands of
        closed sockets leaving their groups, the worker finishing its queue. Returns the
        seconds waited (``limit`` at most)."""
        names = list(self.procs)
        started = time.monotonic()
        calm_since = started
        before = sum(cpu_seconds(pid) for name in names for pid in self.pids(name))
        while time.monotonic() - started < limit:
            time.sleep(0.5)
            now = sum(cpu_seconds(pid) for name in names for pid in self.pids(name))
            if now - before > below * 0.5:
                calm_since = time.monotonic()
            before = now
            if time.monotonic() - calm_since >= quiet:
                break
        return time.monotonic() - started

    def redis_cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def psql(self, sql: str) -> str:
        return subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "postgres",
                "-d",
                "kairan",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
