"""What the `lookout` commands share: loading a command's function, required settings, the
client config of remote commands, API error messages."""

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Any

from app.settings import Settings


def load(target: str) -> Any:
    """The function named "package.module:function", imported now (and only now).

    Commands name their function this way so that a command loads only its own module, and so
    that `lookout worker` and `lookout models` reach workers/cli.py without app/ importing
    workers/ (as a console-script entry point names its function).
    """
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def require(value: str | None, variable: str) -> str:
    if value is None:
        sys.exit(
            f"lookout: {variable} is not set and no `lookout up` is running on this data dir "
            "(LOOKOUT_DATA_DIR); start one, or set the variable"
        )
    return value


@dataclass(frozen=True)
class ClientConfig:
    url: str
    headers: dict[str, str]
    timeout_s: float


def client_config(settings: Settings, args: argparse.Namespace) -> ClientConfig:
    """The one client config of every remote command (`lookout people`, `lookout nodes`):
    --server and --api-key, else LOOKOUT_CLIENT__URL and LOOKOUT_CLIENT__API_KEY; an unset URL
    is the `lookout up` running on this data dir (app.cli.with_local_stack), else
    http://127.0.0.1:8000. No key is fine against a server with keys off (dev)."""
    server: str | None = getattr(args, "server", None)
    key: str | None = getattr(args, "api_key", None)
    if key is None and settings.client.api_key is not None:
        key = settings.client.api_key.get_secret_value()
    return ClientConfig(
        url=(server or settings.client.url).rstrip("/"),
        headers={"X-API-Key": key} if key else {},
        timeout_s=settings.client.timeout_s,
    )


def add_client_arguments(parser: argparse.ArgumentParser, *, key_help: str) -> None:
    """--server and --api-key, the same on every remote command."""
    parser.add_argument(
        "--server", help="API base URL (default LOOKOUT_CLIENT__URL, else the local API)"
    )
    parser.add_argument("--api-key", help=f"{key_help} (default LOOKOUT_CLIENT__API_KEY)")


def api_error(response: Any) -> int:
    try:
        body = response.json()
        message = f"{body.get('error')}: {body.get('detail')}"
    except ValueError:
        message = response.text[:300]
    print(f"lookout: the server answered {response.status_code} ({message})", file=sys.stderr)
    if response.status_code in (401, 403):
        print(
            "lookout: pass an API key with --api-key, or set LOOKOUT_CLIENT__API_KEY "
            "(create one: lookout apikey create NAME)",
            file=sys.stderr,
        )
    return 1


def unreachable(url: str, exc: Exception) -> int:
    """A server that could not be reached: its URL and why (some of httpx's errors have no
    message: their type says it then)."""
    reason = str(exc) or type(exc).__name__
    print(f"lookout: cannot reach {url}: {reason}", file=sys.stderr)
    return 1
