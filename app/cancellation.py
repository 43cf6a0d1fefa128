"""Cancel tasks and wait for them to end, also when a cancellation is lost on the way.

Python 3.11's asyncio.wait_for returns the awaited result, and drops the cancellation, when a
cancel lands just as the awaited operation completes (fixed in 3.12: gh-86296); redis-py runs
every command's write under wait_for when a socket timeout is set, as ours is. A task
cancelled there carries on: an import ran to its end during shutdown, and a loop would never
end. So whatever still runs a moment after its cancel is cancelled again.
"""

import asyncio
from collections.abc import Iterable
from typing import Any

# Long enough for a cancelled task's cleanup (a lock released, a rollback) to finish before it
# is cancelled again; short enough that a lost cancellation costs a shutdown little.
RECANCEL_AFTER_S = 0.1


async def cancel_and_wait(tasks: Iterable["asyncio.Task[Any]"]) -> None:
    """Cancel the tasks and return when every one has ended; their errors are not raised."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER_S)
        except asyncio.CancelledError:  # the caller is cancelled too: leave none running
            for task in pending:
                task.cancel()
            raise
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a task that failed on its way out is not logged twice
