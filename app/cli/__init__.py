"""The `lookout` command.

lookout up        everything locally: embedded Postgres + Redis when no URLs are set,
                  migrations, the API and the workers; Ctrl-C stops it all cleanly
lookout api       the HTTP API alone (uvicorn)
lookout worker    detector worker processes
lookout events    webhook deliveries and the MQTT bridge (outbound events)
lookout migrate   upgrade the database schema to the latest revision
lookout apikey    create | list | limit | revoke client API keys
lookout maintain  one reconciler + janitor pass now (the API also runs them on a schedule)
lookout models    list | pull | verify the model packs (workers/models/ has the manifest)
lookout people    enroll | import faces through a running API
lookout gallery   reindex: rebuild the gallery's index for its size; reembed --model NEW:
                  move every enrolled face to another embedding model, from its stored crop
lookout nodes register NAME | list | revoke ID
                  manage edge nodes through the API (--server, default the local API)
lookout node run  the edge node client: capture, send changed frames, report heartbeats

The arguments of every command are declared here; what runs them lives in one module per
audience: `server` (up, api, worker, events, migrate), `admin` (apikey, maintain, models,
people), `node` (nodes, node run), `gallery` (reindex; reembed runs in workers/cli.py). Each
subcommand names its function as "package.module:function" (`run(settings, args) -> exit
code`), and only that module is imported:
`lookout nodes list` does not load SQLAlchemy, `lookout migrate` does not load httpx. `worker`
and `models` run in workers/cli.py, named the same way: app/ never imports workers/.
"""

import argparse
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.cli.common import add_client_arguments, load
from app.settings import Settings, get_settings

Handler = Callable[[Settings, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every error a user can cause is one line on stderr, never a traceback:
    a missing file, a bad setting, a refused request (exit 1)."""
    from pydantic import ValidationError

    from app.errors import AppError

    try:
        args = build_parser().parse_args(argv)
        handler: Handler = load(args.run)
        settings = get_settings()
        if args.command in ("apikey", "maintain", "migrate", "nodes", "people", "gallery"):
            settings = with_local_stack(settings)
        return handler(settings, args)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        print(f"lookout: invalid settings: {problems}", file=sys.stderr)
    except AppError as exc:
        print(f"lookout: {exc.detail}", file=sys.stderr)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"lookout: {exc.strerror or exc}{where and ':' + where}", file=sys.stderr)
    return 1


def with_local_stack(settings: Settings) -> Settings:
    """Fill in what the user did not set from the `lookout up` running on this data dir (its
    lock file records its URLs): admin commands in a second terminal find the embedded
    Postgres and Redis, client commands its API."""
    from app.embedded import running_stack

    stack = running_stack(settings.data_dir)
    if stack is None:
        return settings
    updates: dict[str, Any] = {}
    if settings.database.url is None and stack.get("database_url"):
        updates["database"] = settings.database.model_copy(update={"url": stack["database_url"]})
    if settings.redis.url is None and stack.get("redis_url"):
        updates["redis"] = settings.redis.model_copy(update={"url": stack["redis_url"]})
    if "url" not in settings.client.model_fields_set and stack.get("api_url"):
        updates["client"] = settings.client.model_copy(update={"url": stack["api_url"]})
    return settings.model_copy(update=updates)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookout", description="Lookout vision inference gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    _server_commands(commands)
    _admin_commands(commands)
    _node_commands(commands)
    return parser


def _server_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """up, api, worker, events, migrate (app/cli/server.py)."""
    up_command = commands.add_parser(
        "up", help="start everything locally (embedded Postgres/Redis if no URLs)"
    )
    up_command.set_defaults(run="app.cli.server:run_up")
    api = commands.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(run="app.cli.server:run_api_command")
    worker = commands.add_parser("worker", help="run detector workers")
    worker.add_argument("--processes", type=int, help="worker processes (default from settings)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    worker.set_defaults(run="workers.cli:run_worker")
    commands.add_parser("events", help="deliver webhooks and publish to MQTT").set_defaults(
        run="app.cli.server:run_events_command"
    )
    commands.add_parser("migrate", help="upgrade the database schema").set_defaults(
        run="app.cli.server:migrate_command"
    )


def _admin_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """apikey, maintain, people, models (app/cli/admin.py)."""
    apikey = commands.add_parser("apikey", help="manage client API keys")
    apikey.set_defaults(run="app.cli.admin:run_apikey")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_commands.add_parser("create", help="create a key; prints it once")
    create.add_argument("name", help="who or what uses the key")
    create.add_argument(
        "--scopes", default="read,write", help="comma-separated: read, write, admin"
    )
    create.add_argument("--expires-in", help="lifetime, e.g. 90d, 12h, 30m (default: never)")
    create.add_argument(
        "--rate-limit",
        type=int,
        help="its own limit, requests per LOOKOUT_AUTH__RATE_LIMIT_WINDOW_S (0: none; default: "
        "LOOKOUT_AUTH__RATE_LIMIT_REQUESTS). Frigate's detector posts every frame: give its "
        "key 0 or a few thousand",
    )
    apikey_commands.add_parser("list", help="list keys (never their secrets)")
    limit = apikey_commands.add_parser("limit", help="set a key's own rate limit")
    limit.add_argument("prefix", help="the 12 characters after lk_ (see `lookout apikey list`)")
    limit.add_argument(
        "requests",
        help="requests per LOOKOUT_AUTH__RATE_LIMIT_WINDOW_S; 0: none; `default`: the server's",
    )
    revoke = apikey_commands.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix", help="the 12 characters after lk_ (see `lookout apikey list`)")
    commands.add_parser("maintain", help="run one reconciler + janitor pass now").set_defaults(
        run="app.cli.admin:run_maintain"
    )
    people = commands.add_parser(
        "people", help="enroll faces through a running API (LOOKOUT_CLIENT__URL, __API_KEY)"
    )
    people.set_defaults(run="app.cli.admin:run_people")
    people_commands = people.add_subparsers(dest="people_command", required=True)
    client = argparse.ArgumentParser(add_help=False)
    add_client_arguments(client, key_help="an API key with the write scope")
    enroll = people_commands.add_parser(
        "enroll", parents=[client], help="enroll photos of one person"
    )
    enroll.add_argument("name")
    enroll.add_argument("photos", nargs="+", type=Path)
    import_dir = people_commands.add_parser(
        "import", parents=[client], help="enroll DIR/<person name>/*.jpg"
    )
    import_dir.add_argument("directory", type=Path)
    gallery = commands.add_parser("gallery", help="the gallery's index and embedding model")
    gallery_commands = gallery.add_subparsers(dest="gallery_command", required=True)
    reindex = gallery_commands.add_parser(
        "reindex", help="rebuild the gallery's index with the parameters for its size"
    )
    reindex.add_argument("--model", action="append", help="only this embedding model")
    reindex.set_defaults(run="app.cli.gallery:run_gallery")
    reembed = gallery_commands.add_parser(
        "reembed",
        help="embed every enrolled face again with another model, from its stored crop; resumable",
    )
    reembed.add_argument("--model", required=True, help="the new embedding model's name")
    reembed.add_argument(
        "--drop-old",
        action="store_true",
        help="drop the old vectors even if no live worker runs the new model yet",
    )
    reembed.add_argument("--batch", type=int, default=64, help="faces per transaction")
    reembed.set_defaults(run="workers.cli:run_reembed")
    models = commands.add_parser("models", help="list, download or check model packs")
    models.add_argument("action", choices=["list", "pull", "verify"])
    models.add_argument("packs", nargs="*", help="pack names (default: the configured packs)")
    models.set_defaults(run="workers.cli:run_models")


def _node_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """nodes, node run (app/cli/node.py)."""
    nodes = commands.add_parser("nodes", help="register, list and revoke edge nodes (admin)")
    actions = nodes.add_subparsers(dest="action", required=True)
    server = argparse.ArgumentParser(add_help=False)
    add_client_arguments(
        server,
        key_help="an admin API key (lookout apikey create … --scopes admin); not needed "
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
    nodes.set_defaults(run="app.cli.node:run_nodes")

    node = commands.add_parser("node", help="run on an edge device")
    node.set_defaults(run="app.cli.node:run_node_command")
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
