"""The `lookout` command.

lookout up        everything locally: embedded Postgres + Redis when no URLs are set,
                  migrations, the API and the workers; Ctrl-C stops it all cleanly
lookout api       the HTTP API alone (uvicorn)
lookout worker    detector worker processes
lookout migrate   upgrade the database schema to the latest revision
lookout nodes register NAME | list | revoke ID
                  manage edge nodes through the API (--server, default the local API)
lookout node run  the edge node client: capture, send changed frames, report heartbeats
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    parser.error(f"unknown command {args.command}")
    return 2


def _add_node_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    nodes = commands.add_parser("nodes", help="register, list and revoke edge nodes (admin)")
    actions = nodes.add_subparsers(dest="action", required=True)
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--server", help="API base URL (default: the local API from settings)")
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
        with httpx.Client(base_url=server, timeout=30.0) as http:
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
