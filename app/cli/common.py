"""What the `lookout` commands share: required settings, API error messages."""

import sys
from typing import Any


def require(value: str | None, variable: str) -> str:
    if value is None:
        sys.exit(f"lookout: {variable} is not set (or use `lookout up` for embedded servers)")
    return value


def api_error(response: Any) -> int:
    try:
        body = response.json()
        message = f"{body.get('error')}: {body.get('detail')}"
    except ValueError:
        message = response.text[:300]
    print(f"lookout: the server answered {response.status_code} ({message})", file=sys.stderr)
    return 1
