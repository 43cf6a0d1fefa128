"""`lookout nodes | node run`: manage edge nodes through the API, and run one."""

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from app.cli.common import ClientConfig, api_error, client_config, unreachable
from app.logging import configure_logging
from app.settings import Settings


def run_nodes(settings: Settings, args: argparse.Namespace) -> int:
    return manage_nodes(args, client_config(settings, args))


def run_node_command(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging(settings)
    return run_node(args)


def manage_nodes(args: argparse.Namespace, client: ClientConfig) -> int:
    try:
        with httpx.Client(
            base_url=client.url, timeout=client.timeout_s, headers=client.headers
        ) as http:
            if args.action == "register":
                body: dict[str, Any] = {"name": args.name, "store_frames": args.store_frames}
                if args.tasks:
                    body["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
                response = http.post("/v1/nodes", json=body)
                if response.status_code != 201:
                    return api_error(response)
                return _print_registered(response.json(), args.secret_file, as_json=args.json)
            if args.action == "list":
                response = http.get("/v1/nodes")
                if response.status_code != 200:
                    return api_error(response)
                _print_fleet(response.json(), as_json=args.json)
                return 0
            response = http.delete(f"/v1/nodes/{args.node_id}")
            if response.status_code != 204:
                return api_error(response)
            print(f"node {args.node_id} revoked; its tokens stop working on its next request")
            return 0
    except httpx.TransportError as exc:
        return unreachable(client.url, exc)


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
    columns = (
        "id",
        "name",
        "online",
        "state",
        "capture fps",
        "send fps",
        "p50 ms",
        "frames/min",
        "last seen",
    )
    rows = [
        (
            n["id"],
            n["name"],
            "yes" if n["online"] else "no",
            n["state"] or "-",
            "-" if n["fps"] is None else f"{n['fps']:.1f}",
            f"{n.get('send_fps', 0):.2f}",
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
    # Imported here: OpenCV loads only where frames are captured.
    from clients.node import AuthRefused, NodeClient, NodeClientConfig

    try:
        secret = args.secret_file.read_text().strip()
    except OSError as exc:
        sys.exit(f"lookout: cannot read the secret file: {exc}")
    source = args.source
    if not source.isdigit() and "://" not in source and not Path(source).is_file():
        sys.exit(f"lookout: no such video file {source}")
    try:
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
    except ValueError as exc:
        sys.exit(f"lookout: {exc}")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await NodeClient(config).run(stop)

    try:
        asyncio.run(main())
    except AuthRefused as exc:
        # Final: a wrong secret or a revoked node does not heal by retrying.
        print(f"lookout: {exc}", file=sys.stderr)
        return 1
    return 0
