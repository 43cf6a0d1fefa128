"""Credentials of long-lived sockets are checked for as long as the socket is open.

A WebSocket authenticates once, at the handshake; without more, a key revoked (or expired) an
hour later would keep its firehose. Each socket therefore runs a guard next to its handler: it
re-checks the credentials every `auth.websocket_recheck_s` and at the moment they expire, and
returns the error (401) that the handler turns into close code 4401. A Postgres outage during a
re-check keeps the socket (the next check decides): an outage is not a revocation.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from app.errors import AppError, is_outage

log = structlog.get_logger()

# Never spin: a check right at an expiry may see it a hair early.
MIN_WAIT_S = 0.05


async def guard_credentials(
    check: Callable[[], Awaitable[None]],
    *,
    interval_s: float,
    expires_at: Callable[[], datetime | None],
) -> AppError:
    """Run `check` every `interval_s` (and at `expires_at()`) until it raises an AppError.

    `expires_at` is read before every wait, so a node that refreshes its token moves it.
    """
    while True:
        wait_s = interval_s
        deadline = expires_at()
        if deadline is not None:
            wait_s = min(wait_s, (deadline - datetime.now(UTC)).total_seconds())
        await asyncio.sleep(max(MIN_WAIT_S, wait_s))
        try:
            await check()
        except AppError as exc:
            return exc
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("socket_recheck_unavailable", error=repr(exc))
