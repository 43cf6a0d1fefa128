"""cancel_and_wait ends a task whose first cancellation Python 3.11's asyncio.wait_for drops."""

import asyncio
import sys

from app.cancellation import cancel_and_wait


def loop_of_waits() -> tuple["asyncio.Task[None]", "asyncio.Future[None]", list[int]]:
    """A task that loops over wait_for (as redis-py's commands do), and the future its first
    wait is on; `rounds` counts the waits it has begun."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    rounds: list[int] = []

    async def run() -> None:
        future = first
        while True:
            rounds.append(1)
            await asyncio.wait_for(future, timeout=30)
            future = loop.create_future()  # the next wait never completes

    return asyncio.create_task(run()), first, rounds


async def test_a_cancellation_that_lands_as_the_wait_completes_still_ends_the_task():
    task, first, rounds = loop_of_waits()
    await asyncio.sleep(0)  # the task now waits on `first`
    first.set_result(None)  # the wait completes, and in the same step the task is cancelled
    await asyncio.wait_for(cancel_and_wait([task]), timeout=5)
    assert task.cancelled()
    if sys.version_info < (3, 12):  # the dropped cancellation: the loop went round again
        assert len(rounds) == 2


async def test_the_same_cancel_alone_is_lost_on_python_3_11():
    """Why cancel_and_wait exists: one cancel, at that moment, leaves the task running."""
    task, first, rounds = loop_of_waits()
    await asyncio.sleep(0)
    first.set_result(None)
    task.cancel()
    await asyncio.sleep(0.05)
    try:
        if sys.version_info < (3, 12):
            assert not task.done() and len(rounds) == 2
        else:
            assert task.cancelled()
    finally:
        await cancel_and_wait([task])


async def test_errors_and_finished_tasks_are_waited_for_not_raised():
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    failing = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    await cancel_and_wait([finished, failing])
    assert finished.done() and not finished.cancelled()
    assert isinstance(failing.exception(), RuntimeError)
