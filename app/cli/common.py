"""What the `lookout` commands share: loading a command's function, required settings, API
error messages."""

import importlib
import sys
from typing import Any


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


def api_error(response: Any) -> int:
    try:
        body = response.json()
        message = f"{body.get('error')}: {body.get('detail')}"
    except ValueError:
        message = response.text[:300]
    print(f"lookout: the server answered {response.status_code} ({message})", file=sys.stderr)
    return 1
