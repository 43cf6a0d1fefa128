"""`lookout up | api | worker | events | migrate`: run Lookout's processes."""

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import load, require
from app.db import migrate
from app.logging import configure_logging
from app.settings import (
    PLACEHOLDER_NODE_SIGNING_KEY,
    Settings,
    available_cpus,
    is_placeholder,
)

if TYPE_CHECKING:
    from app.embedded import DataDirLock, EmbeddedServices
    from app.supervisor import Supervisor

# How long children get to drain in-flight work after SIGTERM before they are killed.
SHUTDOWN_GRACE_S = 30.0
# Several API processes run under gunicorn with the production config (REPO/deploy).
GUNICORN_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"
# Its graceful_timeout is max_wait_s + 5 s; `up` waits a little longer before a SIGKILL.
GUNICORN_GRACE_MARGIN_S = 10.0
# Each API process pools up to database.pool_size (20) connections: four, with the workers' and
# the events process's, stay within Postgres's default max_connections (100), the embedded one's.
AUTO_API_PROCESSES_MAX = 4


def migrate_command(settings: Settings, _args: argparse.Namespace) -> int:
    migrate(require(settings.database.url, "LOOKOUT_DATABASE__URL"))
    print("database schema is up to date")
    return 0


def run_api(settings: Settings, *, host: str | None, port: int | None) -> int:
    processes = settings.api.processes or 1
    if processes > 1:
        return _exec_gunicorn(settings, processes, host=host, port=port)
    import uvicorn  # only the API process needs the server

    from app.server import server_options

    configure_logging(settings)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        # RequestContext logs every request (with its request id); uvicorn's would repeat it.
        access_log=False,
        log_config=None,  # keep our structlog setup: JSON lines in production
        **server_options(settings.api.header_timeout_s),  # head deadline, no WS compression
    )
    return 0


def _exec_gunicorn(
    settings: Settings, processes: int, *, host: str | None, port: int | None
) -> int:
    """Become gunicorn with `processes` uvicorn workers: the production setup (deploy/), so the
    port is shared, a dead worker is replaced and /metrics merges every worker's numbers. The
    same process id: whoever supervises this one (`lookout up`) signals gunicorn itself."""
    if not GUNICORN_CONFIG.is_file():
        print(
            f"lookout: {processes} API processes run under gunicorn with {GUNICORN_CONFIG}, "
            "which this installation lacks; set LOOKOUT_API__PROCESSES=1",
            file=sys.stderr,
        )
        return 2
    command = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG)]
    command += ["--workers", str(processes)]
    if host or port:
        command += ["--bind", f"{host or settings.api.host}:{port or settings.api.port}"]
    sys.stdout.flush()
    sys.stderr.flush()
    # No shell: the interpreter itself, with arguments from settings and the command line.
    os.execv(sys.executable, [*command, "app.main:create_app()"])  # noqa: S606


def api_processes(settings: Settings, cpus: int) -> int:
    """How many API processes `up` runs: LOOKOUT_API__PROCESSES, else the CPUs its workers leave
    (at least one, at most AUTO_API_PROCESSES_MAX). The API's work per upload is small and a
    single event loop is one core's worth: on a machine with cores to spare beside the models (a
    GPU box running few workers), one process would cap the uploads a second (bench/RESULTS.md,
    plumbing)."""
    if settings.api.processes is not None:
        return settings.api.processes
    return max(1, min(AUTO_API_PROCESSES_MAX, cpus - settings.worker.processes))


def _hung_up(stop_requested: threading.Event) -> None:
    """The terminal closed (or the ssh session dropped): stop as for Ctrl-C. Its parts run in
    sessions of their own and never hear the hangup; by default `up` died of it at once and
    left them all running. Output meant for that terminal goes nowhere now: writes to a hung-up
    terminal fail (EIO), and a failed write must not stop the stop."""
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
    stop_requested.set()


def up(settings: Settings) -> int:
    """Embedded servers (if needed), migrations, the API and the workers, supervised.

    The data dir is locked first: a second `up` on it stops with the first one's pid. A part
    that dies is restarted with backoff (app/supervisor.py); one that keeps dying stops it all.
    Ctrl-C stops in order: the API, then the workers (drained), then the outbound events
    process (`lookout events`), then Redis, then Postgres.
    """
    # Imported here: the API and worker processes that `up` starts load this module too.
    from app.embedded import EmbeddedServices
    from app.supervisor import GiveUp, Supervisor

    configure_logging(settings)
    lock = _preflight(settings)
    if isinstance(lock, int):
        return lock
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop_requested.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop_requested.set())
    signal.signal(signal.SIGHUP, lambda _signum, _frame: _hung_up(stop_requested))
    embedded: EmbeddedServices | None = None
    supervisor = Supervisor()
    worker_names = [f"worker-{i}" for i in range(settings.worker.processes)]
    try:
        env, embedded = _start_servers(settings, worker_names)
        env["LOOKOUT_API__PROCESSES"] = str(api_processes(settings, available_cpus()))
        _add_parts(supervisor, settings, env, embedded, worker_names)
        base = f"http://{settings.api.host}:{settings.api.port}"
        lock.record(
            {
                "api_url": base,
                "database_url": env["LOOKOUT_DATABASE__URL"],
                "redis_url": env["LOOKOUT_REDIS__URL"],
            }
        )
        _supervise(supervisor, base, env, stop_requested, keys_off=_zero_config_dev(settings))
        return 0
    except GiveUp as exc:
        print(f"lookout: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # API first (no new work), then workers (they finish what they hold), then the events
        # process (it reads what the workers published), then Redis.
        supervisor.stop([["api"], worker_names, ["events"], ["redis"]])
        if embedded is not None:
            embedded.stop()
        lock.release()


def _preflight(settings: Settings) -> "DataDirLock | int":
    """The data dir's lock, or the exit code when `up` cannot start: a model is missing (one
    clear message before anything starts, rather than an API that accepts jobs no worker can
    run), another `up` holds the data dir, or the API's port is taken."""
    from app.embedded import DataDirBusy, DataDirLock

    models_ready: Callable[[Settings], bool] = load("workers.cli:models_ready")
    if not models_ready(settings):
        return 2
    try:
        lock = DataDirLock(settings.data_dir)
    except DataDirBusy as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 1
    busy = _port_in_use(settings.api.host, settings.api.port)
    if busy:
        lock.release()
        print(
            f"lookout: port {settings.api.port} on {settings.api.host} is in use ({busy}); "
            "stop what uses it or set LOOKOUT_API__PORT",
            file=sys.stderr,
        )
        return 1
    return lock


def _start_servers(
    settings: Settings, worker_names: list[str]
) -> "tuple[dict[str, str], EmbeddedServices | None]":
    """Embedded Postgres/Redis where no URL is set, migrations; the children's environment."""
    from app.embedded import start_embedded

    env = dict(os.environ)
    embedded = None
    if settings.database.url is None or settings.redis.url is None:
        embedded = start_embedded(settings.data_dir)
        if settings.database.url is None:
            env["LOOKOUT_DATABASE__URL"] = embedded.database_url
        if settings.redis.url is None:
            env["LOOKOUT_REDIS__URL"] = embedded.redis_url
    env.update(_auth_env(settings))
    # /health/ready reports a degraded pool when fewer than these are alive.
    env["LOOKOUT_WORKER__EXPECTED"] = str(len(worker_names))
    migrate(env["LOOKOUT_DATABASE__URL"])
    return env, embedded


def _add_parts(
    supervisor: "Supervisor",
    settings: Settings,
    env: dict[str, str],
    embedded: "EmbeddedServices | None",
    worker_names: list[str],
) -> None:
    """Every part `up` runs: its Redis (if embedded), the API, the workers, `lookout events`."""
    from app.supervisor import Part

    if embedded is not None and settings.redis.url is None:
        supervisor.adopt(
            Part("redis", start=embedded.start_redis, stop=embedded.stop_redis),
            embedded.redis_process,
        )
    # Children ignore the terminal's Ctrl-C (own session); `up` stops them in order. Several
    # API processes are gunicorn's, which lets a request (a ?wait= upload) finish first.
    api_grace_s = SHUTDOWN_GRACE_S
    if int(env["LOOKOUT_API__PROCESSES"]) > 1:
        api_grace_s = max(api_grace_s, settings.api.max_wait_s + GUNICORN_GRACE_MARGIN_S)
    supervisor.add(Part("api", start=_child_starter(["api"], env), grace_s=api_grace_s, group=True))
    for index, name in enumerate(worker_names):
        command = ["worker", "--processes", "1", "--index", str(index)]
        supervisor.add(
            Part(name, start=_child_starter(command, env), grace_s=SHUTDOWN_GRACE_S, group=True)
        )
    # Webhooks and MQTT: reads the firehose in its own consumer group (app/events_out/).
    supervisor.add(
        Part("events", start=_child_starter(["events"], env), grace_s=SHUTDOWN_GRACE_S, group=True)
    )


def _supervise(
    supervisor: "Supervisor",
    base: str,
    env: dict[str, str],
    stop_requested: threading.Event,
    *,
    keys_off: bool,
) -> None:
    """Keep the parts alive until Ctrl-C/SIGTERM; print the banner once the API is ready."""
    print("Starting Lookout: Postgres, Redis, the API and the workers…", flush=True)
    announced = False
    next_probe = 0.0
    while not stop_requested.is_set():
        supervisor.poll()
        if not announced and time.monotonic() >= next_probe:
            next_probe = time.monotonic() + 0.5
            if _ready(base):
                announced = True
                _print_banner(base, env, keys_off=keys_off)
        time.sleep(0.2)


def _child_starter(
    command: list[str], env: dict[str, str]
) -> Callable[[], subprocess.Popen[bytes]]:
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *command], env=env, start_new_session=True
        )

    return start


def _port_in_use(host: str, port: int) -> str | None:
    """Why the API could not listen on host:port, or None when it can."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _ready(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _print_banner(base: str, env: dict[str, str], *, keys_off: bool) -> None:
    print(f"Lookout is up: {base}  (docs {base}/docs, firehose ws{base[4:]}/v1/ws)", flush=True)
    print(f"Database: {env['LOOKOUT_DATABASE__URL']}", flush=True)
    print(
        f"Processes: {env['LOOKOUT_API__PROCESSES']} API, {env['LOOKOUT_WORKER__EXPECTED']} "
        "workers (LOOKOUT_API__PROCESSES, LOOKOUT_WORKER__PROCESSES)",
        flush=True,
    )
    if keys_off:
        print(
            "WARNING: dev mode on loopback, API keys are OFF: any request is accepted, with or "
            "without X-API-Key. To require keys, start it with LOOKOUT_ENV=local.",
            flush=True,
        )
        print("Ctrl-C stops everything.", flush=True)
    else:
        # In the checkout: `lookout` is .venv/bin/lookout, and finds this stack by its data dir.
        print(
            "Ctrl-C stops everything. API keys: `.venv/bin/lookout apikey create NAME`.",
            flush=True,
        )


def _auth_env(settings: Settings) -> dict[str, str]:
    """What `up` sets for its children about keys: dev mode, or local secrets of the data dir."""
    if _zero_config_dev(settings):
        # `make up` + curl with no key, as the quickstart promises: a dev server on loopback.
        # Only when the user chose neither an environment nor auth, and nothing else can reach
        # the port; anything else keeps API keys on.
        return {"LOOKOUT_ENV": "dev", "LOOKOUT_AUTH__ENABLED": "false"}
    return local_secrets_env(settings)


def local_secrets_env(settings: Settings) -> dict[str, str]:
    """Variables that replace placeholder secrets with random ones kept in the data dir.

    Only for local/dev, where `lookout up` is the whole deployment; staging and prod must set
    their own (startup refuses placeholders there). The node signing key is never left at the
    public placeholder: anyone could sign node tokens with it.
    """
    if settings.env not in ("local", "dev"):
        return {}
    env = {}
    if settings.env == "local" and is_placeholder(settings.secret_key.get_secret_value()):
        # Zero-config: a random secret of this data dir rather than a placeholder.
        env["LOOKOUT_SECRET_KEY"] = _local_secret_key(settings.data_dir)
    if settings.nodes.signing_key.get_secret_value() == PLACEHOLDER_NODE_SIGNING_KEY:
        env["LOOKOUT_NODES__SIGNING_KEY"] = _local_secret_key(
            settings.data_dir, name="node_signing_key"
        )
    return env


def _zero_config_dev(settings: Settings) -> bool:
    chosen = settings.model_fields_set
    loopback = settings.api.host in ("127.0.0.1", "localhost", "::1")
    return loopback and "env" not in chosen and "auth" not in chosen


def _local_secret_key(data_dir: Path, name: str = "secret_key") -> str:
    """A random secret kept in the data dir (mode 0600), made on first use."""
    path = data_dir / name
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def run_up(settings: Settings, _args: argparse.Namespace) -> int:
    return up(settings)


def run_events_command(settings: Settings, _args: argparse.Namespace) -> int:
    from app.events_out.runner import run_events

    return run_events(settings)


def run_api_command(settings: Settings, args: argparse.Namespace) -> int:
    return run_api(settings, host=args.host, port=args.port)
