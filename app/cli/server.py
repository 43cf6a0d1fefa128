"""`lookout up | api | worker | migrate`: run Lookout's processes."""

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import load, require
from app.db import migrate
from app.logging import configure_logging
from app.settings import Settings, is_placeholder

if TYPE_CHECKING:
    from app.embedded import EmbeddedServices

# How long children get to drain in-flight work after SIGTERM before they are killed.
SHUTDOWN_GRACE_S = 30.0


def migrate_command(settings: Settings, _args: argparse.Namespace) -> int:
    migrate(require(settings.database.url, "LOOKOUT_DATABASE__URL"))
    print("database schema is up to date")
    return 0


def run_api(settings: Settings, *, host: str | None, port: int | None) -> int:
    import uvicorn  # only the API process needs the server

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
    )
    return 0


def up(settings: Settings) -> int:
    """Supervise embedded servers (if needed), migrations, the API and the workers."""
    # Models first: a missing file is one clear message before anything starts, rather than
    # an API that accepts jobs no worker can run.
    models_ready: Callable[[Settings], bool] = load("workers.cli:models_ready")
    if not models_ready(settings):
        return 2
    env = dict(os.environ)
    embedded = _start_embedded_if_needed(settings, env)
    env.update(_auth_env(settings))
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    children: list[subprocess.Popen[bytes]] = []
    try:
        migrate(env["LOOKOUT_DATABASE__URL"])
        names = ("api", "worker")
        children.extend(_start_child(name, env) for name in names)
        _print_banner(settings, env)
        return _supervise(names, children, lambda: stopping)
    finally:
        _stop_children(children)
        if embedded is not None:
            embedded.stop()


def _start_embedded_if_needed(settings: Settings, env: dict[str, str]) -> "EmbeddedServices | None":
    """Embedded Postgres and Redis for what has no URL; their URLs go into `env`."""
    # Imported here: the API and worker processes that `up` starts load this module too.
    from app.embedded import start_embedded

    if settings.database.url is not None and settings.redis.url is not None:
        return None
    embedded = start_embedded(settings.data_dir)
    if settings.database.url is None:
        env["LOOKOUT_DATABASE__URL"] = embedded.database_url
    if settings.redis.url is None:
        env["LOOKOUT_REDIS__URL"] = embedded.redis_url
    return embedded


def _start_child(name: str, env: dict[str, str]) -> "subprocess.Popen[bytes]":
    # Children ignore the terminal's Ctrl-C (own session); `up` stops them in order.
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", name], env=env, start_new_session=True
    )


def _auth_env(settings: Settings) -> dict[str, str]:
    """What `up` sets for its children about keys: dev mode, or a local secret key."""
    if _zero_config_dev(settings):
        # `make up` + curl with no key, as the quickstart promises: a dev server on loopback.
        # Only when the user chose neither an environment nor auth, and nothing else can reach
        # the port; anything else keeps API keys on.
        return {"LOOKOUT_ENV": "dev", "LOOKOUT_AUTH__ENABLED": "false"}
    if settings.env == "local" and is_placeholder(settings.secret_key.get_secret_value()):
        # Zero-config: a random secret of this data dir rather than a placeholder.
        return {"LOOKOUT_SECRET_KEY": _local_secret_key(settings.data_dir)}
    return {}


def _print_banner(settings: Settings, env: dict[str, str]) -> None:
    base = f"http://{settings.api.host}:{settings.api.port}"
    print(f"Lookout is up: {base}  (docs {base}/docs, firehose ws{base[4:]}/v1/ws)", flush=True)
    print(f"Database: {env['LOOKOUT_DATABASE__URL']}", flush=True)
    if env.get("LOOKOUT_AUTH__ENABLED") == "false":
        print("Dev mode on loopback: API keys are off (set LOOKOUT_ENV to require them).")
    print("Ctrl-C stops everything. API keys: `lookout apikey create NAME`.", flush=True)


def _supervise(
    names: tuple[str, ...],
    children: list[subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
) -> int:
    """Wait until asked to stop (0) or until a child exits (1)."""
    while not stopping():
        exited = [(n, c) for n, c in zip(names, children, strict=True) if c.poll() is not None]
        if exited:
            name, child = exited[0]
            print(f"lookout: the {name} process exited ({child.returncode}); stopping")
            return 1
        time.sleep(0.2)
    return 0


def _zero_config_dev(settings: Settings) -> bool:
    chosen = settings.model_fields_set
    loopback = settings.api.host in ("127.0.0.1", "localhost", "::1")
    return loopback and "env" not in chosen and "auth" not in chosen


def _local_secret_key(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_up(settings: Settings, _args: argparse.Namespace) -> int:
    return up(settings)


def run_api_command(settings: Settings, args: argparse.Namespace) -> int:
    return run_api(settings, host=args.host, port=args.port)
