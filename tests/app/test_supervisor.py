"""The supervisor of `lookout up` with real child processes: restart with backoff, give up on a
part that keeps dying, stop group by group in order; and the data dir lock."""

import os
import signal
import subprocess
import sys
import time

import psutil
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


def leader_with_a_child(*, ignore_term: bool = False) -> subprocess.Popen[bytes]:
    """A part in a session of its own that started a process of its own, as gunicorn starts
    its workers; with ignore_term, both ignore SIGTERM (a stop that never finishes)."""
    trap = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else ""
    child = f"{trap}import time; time.sleep(60)"
    code = (
        f"{trap}import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    )
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def its_child(part: Part) -> psutil.Process:
    assert part.process is not None
    leader = psutil.Process(part.process.pid)
    deadline = time.monotonic() + 10
    while not leader.children() and time.monotonic() < deadline:
        time.sleep(0.02)
    (child,) = leader.children()
    return child


def gone(process: psutil.Process) -> bool:
    """Dead: no such process, or a zombie its new parent has not reaped yet."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_group_part_that_dies_takes_what_it_started_with_it():
    supervisor = Supervisor(RestartPolicy(initial_backoff_s=0.2))
    part = supervisor.add(Part("api", start=leader_with_a_child, group=True))
    try:
        child = its_child(part)
        assert part.process is not None
        part.process.send_signal(signal.SIGKILL)  # the child is orphaned, not signalled
        poll_until(supervisor, lambda: gone(child))
        poll_until(supervisor, lambda: part.restarts == 1)
        its_child(part)  # restarted whole
    finally:
        supervisor.stop([["api"]])


def test_a_group_part_that_will_not_stop_is_killed_with_what_it_started():
    supervisor = Supervisor()
    part = supervisor.add(
        Part("api", start=lambda: leader_with_a_child(ignore_term=True), grace_s=0.5, group=True)
    )
    child = its_child(part)
    supervisor.stop([["api"]])
    assert not supervisor.alive("api")
    deadline = time.monotonic() + 5
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(child)


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
