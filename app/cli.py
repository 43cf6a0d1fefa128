"""The `lookout` command.

lookout up        everything locally: embedded Postgres + Redis when no URLs are set,
                  migrations, the API and the workers; Ctrl-C stops it all cleanly
lookout api       the HTTP API alone (uvicorn)
lookout worker    detector worker processes
lookout migrate   upgrade the database schema to the latest revision
lookout apikey    create | list | revoke client API keys
lookout maintain  one reconciler + janitor pass now (the API also runs them on a schedule)
lookout models    list | pull | verify the model packs (workers/models.py has the manifest)
lookout nodes register NAME | list | revoke ID
                  manage edge nodes through the API (--server, default the local API)
lookout node run  the edge node client: capture, send changed frames, report heartbeats
"""

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.settings import PLACEHOLDER_NODE_SIGNING_KEY, Settings, get_settings, is_placeholder

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
    apikey = commands.add_parser("apikey", help="manage client API keys")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_commands.add_parser("create", help="create a key; prints it once")
    create.add_argument("name", help="who or what uses the key")
    create.add_argument(
        "--scopes", default="read,write", help="comma-separated: read, write, admin"
    )
    create.add_argument("--expires-in", help="lifetime, e.g. 90d, 12h, 30m (default: never)")
    apikey_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = apikey_commands.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix", help="the 12 characters after lk_ (see `lookout apikey list`)")
    commands.add_parser("maintain", help="run one reconciler + janitor pass now")
    people = commands.add_parser(
        "people", help="enroll faces through a running API (LOOKOUT_CLIENT__URL, __API_KEY)"
    )
    people_commands = people.add_subparsers(dest="people_command", required=True)
    enroll = people_commands.add_parser("enroll", help="enroll photos of one person")
    enroll.add_argument("name")
    enroll.add_argument("photos", nargs="+", type=Path)
    import_dir = people_commands.add_parser("import", help="enroll DIR/<person name>/*.jpg")
    import_dir.add_argument("directory", type=Path)
    models = commands.add_parser("models", help="list, download or check model packs")
    models.add_argument("action", choices=["list", "pull", "verify"])
    models.add_argument("packs", nargs="*", help="pack names (default: the configured packs)")
    _add_node_commands(commands)
    args = parser.parse_args(argv)

    settings = get_settings()
    if args.command == "nodes":
        server = args.server or f"http://{settings.api.host}:{settings.api.port}"
        return manage_nodes(args, server)
    if args.command == "node":
        from app.logging import configure_logging

        configure_logging(settings)
        return run_node(args)
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
    if args.command == "apikey":
        from app.errors import AppError

        try:
            return asyncio.run(apikey_command(settings, args))
        except AppError as exc:
            print(f"lookout: {exc.detail}", file=sys.stderr)
            return 1
    if args.command == "maintain":
        return asyncio.run(maintain_once(settings))
    if args.command == "models":
        return models_command(settings, args.action, args.packs)
    if args.command == "people":
        return asyncio.run(people_command(settings, args))
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


def _add_node_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    nodes = commands.add_parser("nodes", help="register, list and revoke edge nodes (admin)")
    actions = nodes.add_subparsers(dest="action", required=True)
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--server", help="API base URL (default: the local API from settings)")
    server.add_argument(
        "--api-key",
        help="an admin API key (lookout apikey create … --scopes admin); not needed "
        "when the server runs with keys off (dev)",
    )
    register = actions.add_parser(
        "register", parents=[server], help="register a node; prints its id and secret"
    )
    register.add_argument("name")
    register.add_argument("--tasks", help="comma-separated tasks its frames run (default faces)")
    register.add_argument(
        "--store-frames",
        action="store_true",
        help="keep its frames (default: frames are never written to disk or Postgres)",
    )
    register.add_argument(
        "--secret-file", type=Path, help="write the secret to this file (mode 600), not stdout"
    )
    register.add_argument("--json", action="store_true", help="print the API response as JSON")
    listing = actions.add_parser(
        "list", parents=[server], help="the fleet: online, last seen, fps, latency"
    )
    listing.add_argument("--json", action="store_true", help="print the API response as JSON")
    revoke = actions.add_parser(
        "revoke", parents=[server], help="revoke a node; its tokens stop working at once"
    )
    revoke.add_argument("node_id", type=uuid.UUID)

    node = commands.add_parser("node", help="run on an edge device")
    node_actions = node.add_subparsers(dest="action", required=True)
    run = node_actions.add_parser("run", help="capture frames and stream them to the server")
    run.add_argument("--source", required=True, help="video file, rtsp:// URL or camera index")
    run.add_argument("--server", required=True, help="API base URL, e.g. http://10.0.0.5:8000")
    run.add_argument("--node-id", required=True, type=uuid.UUID)
    run.add_argument("--secret-file", required=True, type=Path)
    run.add_argument("--max-interval-s", type=float, default=10.0, help="send at least this often")
    run.add_argument(
        "--change-fraction", type=float, default=0.02, help="share of pixels that must change"
    )
    run.add_argument("--idle-after-s", type=float, default=30.0, help="no change → idle")
    run.add_argument("--dark-luma", type=float, default=40.0, help="dark-scene threshold, 0–255")
    run.add_argument("--max-in-flight", type=int, default=4)
    run.add_argument("--backoff-max-s", type=float, default=10.0, help="longest reconnect wait")
    run.add_argument("--loop", action="store_true", help="replay a video file forever")
    run.add_argument(
        "--no-realtime",
        action="store_true",
        help="read a video file as fast as possible instead of at its frame rate",
    )


def manage_nodes(args: argparse.Namespace, server: str) -> int:
    import httpx

    try:
        headers = {"X-API-Key": args.api_key} if args.api_key else {}
        with httpx.Client(base_url=server, timeout=30.0, headers=headers) as http:
            if args.action == "register":
                body: dict[str, Any] = {"name": args.name, "store_frames": args.store_frames}
                if args.tasks:
                    body["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
                response = http.post("/v1/nodes", json=body)
                if response.status_code != 201:
                    return _api_error(response)
                return _print_registered(response.json(), args.secret_file, as_json=args.json)
            if args.action == "list":
                response = http.get("/v1/nodes")
                if response.status_code != 200:
                    return _api_error(response)
                _print_fleet(response.json(), as_json=args.json)
                return 0
            response = http.delete(f"/v1/nodes/{args.node_id}")
            if response.status_code != 204:
                return _api_error(response)
            print(f"node {args.node_id} revoked; its tokens stop working on its next request")
            return 0
    except httpx.TransportError as exc:
        print(f"lookout: cannot reach {server}: {exc}", file=sys.stderr)
        return 1


def _api_error(response: Any) -> int:
    try:
        body = response.json()
        message = f"{body.get('error')}: {body.get('detail')}"
    except ValueError:
        message = response.text[:300]
    print(f"lookout: the server answered {response.status_code} ({message})", file=sys.stderr)
    return 1


def _print_registered(node: dict[str, Any], secret_file: Path | None, *, as_json: bool) -> int:
    secret = node["secret"]
    if secret_file is not None:
        # Created with mode 600 from the start: the secret is never readable by others.
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        node = {**node, "secret": f"(written to {secret_file})"}
    if as_json:
        print(json.dumps(node, indent=2))
        return 0
    print(f"node registered: {node['name']}")
    print(f"  id:     {node['id']}")
    print(f"  secret: {node['secret']}")
    if secret_file is None:
        print("  (shown once: only its hash is stored; keep it in a file readable by the node)")
    print(f"  policy: tasks={','.join(node['tasks'])} store_frames={node['store_frames']}")
    return 0


def _print_fleet(fleet: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(fleet, indent=2))
        return
    columns = ("id", "name", "online", "state", "fps", "p50 ms", "frames/min", "last seen")
    rows = [
        (
            n["id"],
            n["name"],
            "yes" if n["online"] else "no",
            n["state"] or "-",
            "-" if n["fps"] is None else f"{n['fps']:.1f}",
            "-" if n["latency_ms_p50"] is None else f"{n['latency_ms_p50']:.0f}",
            str(n["frames_per_min"]),
            n["last_seen_at"] or "never",
        )
        for n in fleet["items"]
    ]
    widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for n in fleet["items"]:
        if n["last_error"] or n["dark_scene"]:
            warning = "dark scene; " if n["dark_scene"] else ""
            print(f"{n['name']}: {warning}{n['last_error'] or ''}".rstrip("; "))


def run_node(args: argparse.Namespace) -> int:
    """The edge node client until Ctrl-C / SIGTERM (or the end of a non-looping video file)."""
    from app.nodes.client import NodeClient, NodeClientConfig

    try:
        secret = args.secret_file.read_text().strip()
    except OSError as exc:
        sys.exit(f"lookout: cannot read the secret file: {exc}")
    source = args.source
    if not source.isdigit() and "://" not in source and not Path(source).is_file():
        sys.exit(f"lookout: no such video file {source}")
    config = NodeClientConfig(
        server=args.server.rstrip("/"),
        node_id=args.node_id,
        secret=secret,
        source=source,
        max_interval_s=args.max_interval_s,
        change_fraction=args.change_fraction,
        idle_after_s=args.idle_after_s,
        dark_luma=args.dark_luma,
        max_in_flight=args.max_in_flight,
        backoff_max_s=args.backoff_max_s,
        loop=args.loop,
        realtime=not args.no_realtime,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await NodeClient(config).run(stop)

    asyncio.run(main())
    return 0


async def people_command(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from app.gallery.client import enroll_people, people_in

    if args.people_command == "enroll":
        people = {args.name: list(args.photos)}
    else:
        people = people_in(args.directory)
    key = settings.client.api_key
    headers = {"X-API-Key": key.get_secret_value()} if key is not None else {}
    try:
        async with httpx.AsyncClient(
            base_url=settings.client.url, headers=headers, timeout=settings.client.timeout_s
        ) as client:
            lines = await enroll_people(client, people)
    except httpx.TransportError as exc:
        print(f"lookout: cannot reach {settings.client.url}: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPStatusError as exc:
        return _api_error(exc.response)
    print("\n".join(lines))
    return 0 if all(line.startswith("ok") for line in lines) else 1


def _require(value: str | None, variable: str) -> str:
    if value is None:
        sys.exit(f"lookout: {variable} is not set (or use `lookout up` for embedded servers)")
    return value


_DURATION = re.compile(r"^(\d+)([dhms])$")
_DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 90d, 12h, 30m")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


async def apikey_command(settings: Settings, args: argparse.Namespace) -> int:
    from app.apikeys import service
    from app.db import create_engine, create_sessionmaker

    _require(settings.database.url, "LOOKOUT_DATABASE__URL")
    engine = create_engine(settings.database)
    try:
        if args.apikey_command == "create":
            expires_in = parse_duration(args.expires_in) if args.expires_in else None
            # Committed before it is printed: a key shown to someone is a key that exists.
            async with create_sessionmaker(engine).begin() as session:
                key, token = await service.create_key(
                    session,
                    name=args.name,
                    scopes=service.parse_scopes(args.scopes),
                    expires_in=expires_in,
                )
            print(token, flush=True)
            expiry = key.expires_at.isoformat() if key.expires_at else "never"
            print(
                f"created key {key.prefix} ({args.name}; scopes {','.join(key.scopes)}; "
                f"expires {expiry}). The key is shown only this once.",
                file=sys.stderr,
            )
            return 0
        async with create_sessionmaker(engine).begin() as session:
            if args.apikey_command == "list":
                print("PREFIX        NAME                 SCOPES             STATE    LAST USED")
                for key in await service.list_keys(session):
                    state = (
                        "revoked"
                        if key.revoked_at
                        else "expired"
                        if key.expires_at and key.expires_at.timestamp() <= time.time()
                        else "active"
                    )
                    last = (
                        key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "-"
                    )
                    print(
                        f"{key.prefix:<13} {key.name[:20]:<20} {','.join(key.scopes):<18} "
                        f"{state:<8} {last}"
                    )
            else:
                key = await service.revoke_key(session, args.prefix)
                print(f"revoked key {key.prefix} ({key.name})")
    finally:
        await engine.dispose()
    return 0


async def maintain_once(settings: Settings) -> int:
    from app.db import (
        close_redis,
        create_engine,
        create_frames_redis,
        create_redis,
        create_sessionmaker,
    )
    from app.maintenance import run_maintenance
    from app.storage import Storage

    _require(settings.database.url, "LOOKOUT_DATABASE__URL")
    engine = create_engine(settings.database)
    redis = create_redis(settings.redis)
    frames_redis = create_frames_redis(settings.redis, redis)
    try:
        report = await run_maintenance(
            settings,
            create_sessionmaker(engine),
            redis,
            Storage(settings.storage_dir),
            frames_redis=frames_redis,
        )
    finally:
        await close_redis(redis, frames_redis)
        await engine.dispose()
    print(report)
    return 0


def run_api(settings: Settings, *, host: str | None, port: int | None) -> int:
    import uvicorn

    from app.logging import configure_logging
    from app.server import protocol_class

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
        http=protocol_class(settings.api.header_timeout_s),  # slow request heads are cut off
    )
    return 0


def up(settings: Settings) -> int:
    """Supervise embedded servers (if needed), migrations, the API and the workers."""
    from app.db import migrate
    from app.embedded import EmbeddedServices, start_embedded
    from workers import models

    # Models first: a missing file is one clear message before anything starts, rather than
    # an API that accepts jobs no worker can run.
    try:
        for pack in models.configured_packs(settings):
            models.resolve_pack(settings, pack)
    except models.ModelError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 2
    embedded: EmbeddedServices | None = None
    env = dict(os.environ)
    if settings.database.url is None or settings.redis.url is None:
        embedded = start_embedded(settings.data_dir)
        if settings.database.url is None:
            env["LOOKOUT_DATABASE__URL"] = embedded.database_url
        if settings.redis.url is None:
            env["LOOKOUT_REDIS__URL"] = embedded.redis_url
    if _zero_config_dev(settings):
        # `make up` + curl with no key, as the quickstart promises: a dev server on loopback.
        # Only when the user chose neither an environment nor auth, and nothing else can reach
        # the port; anything else keeps API keys on.
        env["LOOKOUT_ENV"] = "dev"
        env["LOOKOUT_AUTH__ENABLED"] = "false"
    else:
        env.update(local_secrets_env(settings))
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
        print(f"Database: {env['LOOKOUT_DATABASE__URL']}", flush=True)
        if env.get("LOOKOUT_AUTH__ENABLED") == "false":
            print("Dev mode on loopback: API keys are off (set LOOKOUT_ENV to require them).")
        print("Ctrl-C stops everything. API keys: `lookout apikey create NAME`.", flush=True)
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


def _zero_config_dev(settings: Settings) -> bool:
    chosen = settings.model_fields_set
    loopback = settings.api.host in ("127.0.0.1", "localhost", "::1")
    return loopback and "env" not in chosen and "auth" not in chosen


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


def _local_secret_key(data_dir: Path, name: str = "secret_key") -> str:
    """A random secret kept in the data dir (mode 0600), made on first use."""
    path = data_dir / name
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


if __name__ == "__main__":
    sys.exit(main())
