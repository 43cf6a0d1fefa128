"""Secrets never reach a log line: API keys, node secrets, node tokens, ?api_key= values.

Browsers pass an API key to a WebSocket as `?api_key=` (they cannot set headers), and uvicorn
logs every WebSocket handshake with its full path; an access log would log every query string.
`redact` rewrites any text that may hold one; `RedactingFilter` applies it to every standard
library record (uvicorn, gunicorn, SQLAlchemy) and `redact_event` to every structlog event.
What stays is enough to tell keys apart in a log: an API key keeps its public prefix.
"""

import logging
import re
from collections.abc import MutableMapping
from typing import Any

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # lk_<prefix>_<secret>: keep the prefix (stored in clear, it names the key), drop the secret.
    (re.compile(r"\b(lk_[0-9a-f]{12}_)[A-Za-z0-9_-]+"), rf"\g<1>{REDACTED}"),
    # Node secrets (lkn_…), webhook signing secrets (whsec_…, base64) and JWTs (three
    # base64url parts, the first starting {"…).
    (re.compile(r"\blkn_[A-Za-z0-9_-]+"), f"lkn_{REDACTED}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), f"whsec_{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # Whatever rides in a credential parameter or header, well-formed or not.
    (
        re.compile(
            r"((?:api_key|apikey|access_token|token|secret)=)(?!lk_[0-9a-f]{12}_\[)[^&\s\"']+",
            re.IGNORECASE,
        ),
        rf"\g<1>{REDACTED}",
    ),
    (
        re.compile(
            r"((?:x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)[^\"'\s,}&]+",
            re.IGNORECASE,
        ),
        rf"\g<1>{REDACTED}",
    ),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Render the record's message once, redacted; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's problem
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


def redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """structlog processor: redact every string of the event, in lists and dicts too (a
    rendered traceback is a list of frames)."""
    for name, value in event.items():
        event[name] = _redact_value(value)
    return event


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


# Loggers that servers configure with handlers of their own (gunicorn gives uvicorn's loggers
# its error log's handlers and stops propagation): a root handler's filter never sees them.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")


def install(handler: logging.Handler | None = None) -> None:
    """Attach one RedactingFilter to the server loggers and to `handler` (idempotent)."""
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in SERVER_LOGGERS]
    if handler is not None:
        targets.append(handler)
    for target in targets:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())
