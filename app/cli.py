"""The `lookout` command.

lookout up        everything locally: embedded Postgres + Redis when no URLs are set,
                  migrations, the API and the workers; Ctrl-C stops it all cleanly
lookout api       the HTTP API alone (uvicorn)
lookout worker    detector worker processes
lookout migrate   upgrade the database schema to the latest revision
lookout models    list | pull | verify the model packs (workers/models.py has the manifest)
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from app.settings import Settings, get_settings

# How long children get to drain in-flight work after SIGTERM before they are killed.
SHUTDOWN_GRACE_S = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lookout", description="Lookout vision inference gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start everything locally (embedded Postgres/Redis if no URLs)")
    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    worker = commands.add_parser("worker", help="run detector workers")
    worker.add_argument("--processes", type=int, help="worker processes (default from settings)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    commands.add_parser("migrate", help="upgrade the database schema")
    models = commands.add_parser("models", help="list, download or check model packs")
    models.add_argument("action", choices=["list", "pull", "verify"])
    models.add_argument("packs", nargs="*", help="pack names (default: the configured packs)")
    args = parser.parse_args(argv)

    settings = get_settings()
    if args.command == "up":
        return up(settings)
    if args.command == "api":
        return run_api(settings, host=args.host, port=args.port)
    if args.command == "worker":
        from workers.pool import serve

        return serve(
            settings, processes=args.processes or settings.worker.processes, burst=args.burst
        )
    if args.command == "migrate":
        from app.db import migrate

        migrate(_require(settings.database.url, "LOOKOUT_DATABASE__URL"))
        print("database schema is up to date")
        return 0
    if args.command == "models":
        return models_command(settings, args.action, args.packs)
    parser.error(f"unknown command {args.command}")
    return 2


def models_command(settings: Settings, action: str, pack_names: Sequence[str]) -> int:
    """`lookout models list|pull|verify [PACK …]`; exit 1 when a file is missing or wrong."""
    from workers import models

    try:
        if action == "list":
            lines = models.list_packs(settings)
            good = True
        elif action == "pull":
            lines = models.pull_packs(settings, models.packs_named(settings, pack_names))
            good = True
        else:
            good, lines = models.verify_packs(settings, models.packs_named(settings, pack_names))
    except models.ModelError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0 if good else 1


def _require(value: str | None, variable: str) -> str:
    if value is None:
        sys.exit(f"lookout: {variable} is not set (or use `lookout up` for embedded servers)")
    return value


def run_api(settings: Settings, *, host: str | None, port: int | None) -> int:
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    return 0


def up(settings: Settings) -> int:
    """Supervise embedded servers (if needed), migrations, the API and the workers."""
    from app.db import migrate
    from app.embedded import EmbeddedServices, start_embedded

    embedded: EmbeddedServices | None = None
    env = dict(os.environ)
    if settings.database.url is None or settings.redis.url is None:
        embedded = start_embedded(settings.data_dir)
        if settings.database.url is None:
            env["LOOKOUT_DATABASE__URL"] = embedded.database_url
        if settings.redis.url is None:
            env["LOOKOUT_REDIS__URL"] = embedded.redis_url
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    children: list[subprocess.Popen[bytes]] = []
    exit_code = 0
    try:
        migrate(env["LOOKOUT_DATABASE__URL"])
        # Children ignore the terminal's Ctrl-C (own session); we stop them in order below.
        names = ("api", "worker")
        for name in names:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", name], env=env, start_new_session=True
                )
            )
        base = f"http://{settings.api.host}:{settings.api.port}"
        print(f"Lookout is up: {base}  (docs {base}/docs, firehose ws{base[4:]}/v1/ws)", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        while not stopping:
            exited = [(n, c) for n, c in zip(names, children, strict=True) if c.poll() is not None]
            if exited:
                name, child = exited[0]
                print(f"lookout: the {name} process exited ({child.returncode}); stopping")
                exit_code = 1
                break
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if embedded is not None:
            embedded.stop()
    return exit_code


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


if __name__ == "__main__":
    sys.exit(main())
