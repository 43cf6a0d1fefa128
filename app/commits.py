"""The one commit point, and the work that waits for it (as Polar's JobQueueManager).

Routes and services never commit. What must happen only once their writes are committed (the
XADD that hands a job to the workers, a node event on the firehose) is queued on the session
with `after_commit`; `commit` commits, then runs it in order. The request's session dependency
(app/deps.py get_session) calls `commit` when the route returns; a route that waits for the
workers (?wait=, the gallery) reaches the same commit point early with `await commit(session)`.
Code outside requests (the CLI, background loops, the node socket relay) calls `commit` too.
An upload (POST /v1/images) has no session: its job is one INSERT, committed as it runs, and its
XADD follows (app/jobs/service.py submit_upload).

If queued work fails after the commit, the work queued after it is dropped and the error is
raised. What was committed stays safe as before: the reconciler re-enqueues a job whose message
never reached Redis (app/maintenance.py).
"""

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

# Where a session keeps its queued work (session.info is the session's own dict).
_PENDING = "lookout_after_commit"

Action = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, action: Action) -> None:
    """Run `action` once the session's transaction has committed (at `commit`)."""
    session.info.setdefault(_PENDING, []).append(action)


def discard_pending(session: AsyncSession) -> None:
    """Drop the work queued on the session (its writes were rolled back)."""
    session.info.pop(_PENDING, None)


async def commit(session: AsyncSession) -> None:
    """Commit the session, then run the work queued for after the commit, in order."""
    await session.commit()
    pending: list[Action] = session.info.pop(_PENDING, [])
    for action in pending:
        await action()
