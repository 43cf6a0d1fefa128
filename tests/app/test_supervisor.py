"""The supervisor of `lookout up` with real child processes: restart with backoff, give up on a
part that keeps dying, stop group by group in order; and the data dir lock."""

import os
import signal
import subprocess
import sys
import time

import pytest

from app.embedded import DataDirBusy, DataDirLock, running_stack
from app.supervisor import GiveUp, Part, RestartPolicy, Supervisor


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def poll_until(supervisor: Supervisor, condition, timeout_s: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.poll()
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_part_killed_with_9_is_restarted_after_a_growing_backoff():
    supervisor = Supervisor(RestartPolicy(initial_backoff_s=0.2, max_backoff_s=5))
    part = supervisor.add(Part("worker-0", start=sleeper))
    try:
        for restarts, backoff_s in ((1, 0.2), (2, 0.4)):
            old = part.process
            assert old is not None
            old.send_signal(signal.SIGKILL)
            old.wait()
            killed_at = time.monotonic()
            poll_until(supervisor, lambda: supervisor.alive("worker-0"))
            waited_s = time.monotonic() - killed_at
            assert part.restarts == restarts
            assert part.process is not old
            assert waited_s >= backoff_s
            assert part.exit_codes[-1] == -signal.SIGKILL
    finally:
        supervisor.stop([["worker-0"]])
    assert not supervisor.alive("worker-0")


def test_a_part_that_keeps_dying_stops_everything():
    def failing() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    supervisor = Supervisor(RestartPolicy(initial_backoff_s=0.01, max_quick_failures=3))
    supervisor.add(Part("api", start=failing))
    with pytest.raises(GiveUp, match="api process exited \\(exit code 3\\) 3 times"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            supervisor.poll()
            time.sleep(0.02)
    assert supervisor.parts["api"].restarts == 2


def test_stop_goes_group_by_group(tmp_path):
    """Each part writes when it got SIGTERM; the second group is signalled only after the first
    has exited (the API before the workers, the workers before Redis)."""
    record = tmp_path / "order"
    script = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    time.sleep(0.3)\n"
        f"    open({str(record)!r}, 'a').write(sys.argv[1] + chr(10)); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(60)\n"
    )

    def child(name: str):  # type: ignore[no-untyped-def]
        return lambda: subprocess.Popen([sys.executable, "-c", script, name])

    supervisor = Supervisor()
    for name in ("redis", "worker-0", "worker-1", "api"):
        supervisor.add(Part(name, start=child(name)))
    time.sleep(1.0)  # every child has its handler installed
    supervisor.stop([["api"], ["worker-0", "worker-1"], ["redis"]])
    order = record.read_text().split()
    assert order[0] == "api"
    assert sorted(order[1:3]) == ["worker-0", "worker-1"]
    assert order[3] == "redis"


def test_the_data_dir_lock_names_the_running_pid_and_dies_with_its_holder(tmp_path):
    data_dir = tmp_path / "data"
    lock = DataDirLock(data_dir)
    lock.record({"api_url": "http://127.0.0.1:1"})
    with pytest.raises(DataDirBusy, match=f"already running in .* \\(pid {os.getpid()}\\)"):
        DataDirLock(data_dir)
    assert running_stack(data_dir) == {"pid": os.getpid(), "api_url": "http://127.0.0.1:1"}
    lock.release()
    assert running_stack(data_dir) is None
    DataDirLock(data_dir).release()

    # A holder killed with -9 leaves the file but not the lock.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from app.embedded import DataDirLock; "
            f"held = DataDirLock(Path({str(data_dir)!r})); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    with pytest.raises(DataDirBusy, match=f"pid {holder.pid}"):
        DataDirLock(data_dir)
    holder.kill()
    holder.wait()
    DataDirLock(data_dir).release()
