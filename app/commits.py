"""The one commit point, and the work that waits for it (as Polar's JobQueueManager).

Routes and services never commit. What must happen only once their writes are committed (the
XADD that hands a job to the workers, a node event on the firehose) is queued on the session
with `after_commit`; `commit` commits, then runs it in order. The request's session dependency
(app/deps.py get_session) calls `commit` when the route returns; a route that waits for the
workers (?wait=, the gallery) reaches the same commit point early with `await commit(session)`.
Code outside requests (the CLI, background loops, the node socket relay) calls `commit` too.

If queued work fails after the commit, its `undo` (if any) runs and is committed, the work
queued after it is dropped, and the error is raised. What was committed stays safe as before:
the reconciler re-enqueues a job whose message never reached Redis (app/maintenance.py).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger()

# Where a session keeps its queued work (session.info is the session's own dict).
_PENDING = "lookout_after_commit"

Action = Callable[[], Awaitable[None]]
Undo = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class _Pending:
    action: Action
    undo: Undo | None
    undo_name: str  # logged as "<undo_name>_failed" when the undo fails too
    log_fields: dict[str, Any] = field(default_factory=dict)


def after_commit(
    session: AsyncSession,
    action: Action,
    *,
    undo: Undo | None = None,
    undo_name: str = "undo",
    **log_fields: Any,
) -> None:
    """Run `action` once the session's transaction has committed (at `commit`).

    `undo(session)`: what to write back if the action fails (e.g. withdraw a job that could
    not be enqueued); it runs in a transaction of its own, which `commit` commits. If that
    fails too, "<undo_name>_failed" is logged with `log_fields`.
    """
    session.info.setdefault(_PENDING, []).append(_Pending(action, undo, undo_name, log_fields))


def discard_pending(session: AsyncSession) -> None:
    """Drop the work queued on the session (its writes were rolled back)."""
    session.info.pop(_PENDING, None)


async def commit(session: AsyncSession) -> None:
    """Commit the session, then run the work queued for after the commit, in order."""
    await session.commit()
    pending: list[_Pending] = session.info.pop(_PENDING, [])
    for item in pending:
        try:
            await item.action()
        except Exception:
            if item.undo is not None:
                try:
                    await item.undo(session)
                    await session.commit()
                except Exception as exc:
                    log.warning(f"{item.undo_name}_failed", **item.log_fields, error=repr(exc))
            raise
