"""Where a bench's CPU goes: CPU seconds per process (psutil), and py-spy profiles summarised.

CPU time, not wall time: on a shared 2-core machine the wall clock measures the neighbours too,
while a process's own CPU seconds per job are what it costs (`CpuMeter`). py-spy samples the
Python stacks of a running process (`record`, `summary`): only threads that are on a CPU
(py-spy's default, no --idle), so its samples split the same CPU seconds by function.
"""

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.harness import REPO


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU seconds of a process (and of its children alive now: Postgres'
    backends, which live as long as their pooled connections). 0 when it is gone."""
    try:
        process = psutil.Process(pid)
        processes = [process, *(process.children(recursive=True) if children else [])]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for each in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            total += times.user + times.system
    return total


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds of Postgres: the postmaster, its backends alive now, and those it has reaped
    (the parallel workers a scan of every job starts and ends within the call)."""
    process = psutil.Process(postmaster)
    times = process.cpu_times()
    return float(
        times.user
        + times.system
        + times.children_user
        + times.children_system
        + sum(cpu_seconds(child.pid, children=False) for child in process.children())
    )


async def postgres_call(
    step: Callable[[], Awaitable[object]], postmaster: int
) -> tuple[float, float]:
    """One call of `step`: (Postgres CPU ms over it, `postgres_cpu_s`; wall ms)."""
    cpu_before, started = postgres_cpu_s(postmaster), time.perf_counter()
    await step()
    wall_ms = 1000 * (time.perf_counter() - started)
    return 1000 * (postgres_cpu_s(postmaster) - cpu_before), wall_ms


def cpu_mean(calls: list[tuple[float, float]]) -> float:
    """The mean CPU of `postgres_call`s: psutil counts in ticks of 10 ms, so a median of short
    calls would be 0 or 10."""
    return statistics.fmean(cpu for cpu, _ in calls)


def wall_median(calls: list[tuple[float, float]]) -> float:
    return statistics.median(wall for _, wall in calls)


class CpuMeter:
    """CPU seconds of named processes between `start` and `stop`, added over several spans.
    Each with its children (Postgres' backends), except those named in `alone` (the bench's
    own process, whose children are the very servers measured beside it)."""

    def __init__(self, pids: dict[str, int], *, alone: frozenset[str] = frozenset()) -> None:
        self.pids = pids
        self.alone = alone
        self.spent: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._started: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {
            name: cpu_seconds(pid, children=name not in self.alone)
            for name, pid in self.pids.items()
        }

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        for name, spent in self._now().items():
            self.spent[name] += spent - self._started[name]

    def ms_per(self, count: int) -> dict[str, float]:
        return {name: 1000 * self.spent[name] / count for name in self.pids}


def cpu_ms_per_s(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU ms a second of each process (with its children) over the next `seconds`: what a
    stack costs while it waits."""
    meter = CpuMeter(pids)
    meter.start()
    time.sleep(seconds)
    meter.stop()
    return {name: 1000 * spent / seconds for name, spent in meter.spent.items()}


def py_spy() -> str | None:
    """The py-spy executable of this environment (a dev dependency), if any."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def record(pids: dict[str, int], folder: Path, *, rate: int = 250) -> Iterator[dict[str, Path]]:
    """py-spy record each process (collapsed stacks, `--format raw`) while the block runs;
    yields the output file of each. `--nonblocking`: the process is never paused to be read, so
    the profile does not slow what it measures (a stack may now and then be torn: rare)."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed (`make install` installs the dev extras)")
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {name: folder / f"{name}.txt" for name in pids}
    options = ["--format", "raw", "--rate", str(rate), "--nonblocking"]
    spies = [
        subprocess.Popen(
            [executable, "record", "--pid", str(pid), *options, "--output", str(outputs[name])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        yield outputs
    finally:
        for spy in spies:  # SIGINT: py-spy stops sampling and writes its file
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()


# Leaf frames where a thread waits: the event loop's epoll, a thread pool's idle thread, a lock.
# py-spy counts a thread that is runnable (woken, waiting for one of two busy cores) as active,
# so on a loaded machine these show up; they are counted apart, not as work.
WAITING = (
    "EpollSelector.select (selectors.py",
    "_worker (concurrent/futures/thread.py",
    "Condition.wait (threading.py",
)


@dataclass(frozen=True)
class Profile:
    samples: int
    waiting: float  # share of the samples in WAITING frames, left out of the shares below
    by_package: list[tuple[str, float]]  # (where the sampled frame's code lives, share)
    by_function: list[tuple[str, float]]  # (function, share), self time
    by_step: list[tuple[str, float]]  # (the innermost Lookout function on the stack, share)


def summary(collapsed: Path, *, top: int = 8) -> Profile:
    """Self time by package and by function, and time by the innermost Lookout function on the
    stack (what Lookout code the CPU was spent for)."""
    packages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    total = waiting = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        leaf = frames[-1]
        if leaf.startswith(WAITING):
            waiting += count
            continue
        total += count
        packages[_package(leaf)] += count
        functions[_function(leaf)] += count
        steps[_step(frames)] += count
    if total == 0:
        return Profile(0, 1.0 if waiting else 0.0, [], [], [])

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)]

    waited = waiting / (total + waiting)
    return Profile(total, waited, shares(packages), shares(functions), shares(steps))


def _location(frame: str) -> tuple[str, str]:
    """(function, file) of a py-spy frame 'function (path/file.py:line)'."""
    function, _, where = frame.partition(" (")
    return function, where.rstrip(")").rpartition(":")[0]


def _package(frame: str) -> str:
    _, path = _location(frame)
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    relative = _in_repo(path)
    if relative is not None:
        return relative.split("/", 1)[0]  # app, workers, bench
    parts = Path(path).parts
    if "lib" in parts and len(parts) > parts.index("lib") + 2:  # lib/python3.11/asyncio/...
        return "stdlib " + parts[parts.index("lib") + 2].removesuffix(".py")
    return path or "?"


def _function(frame: str) -> str:
    function, path = _location(frame)
    relative = _in_repo(path)
    if relative is not None:
        return f"{function} ({relative})"
    return f"{function} ({_package(frame)})"


def _step(frames: list[str]) -> str:
    """The innermost Lookout function on the stack (app/ or workers/): the code whose calls the
    sample's CPU went to (a sample in asyncpg under the result write counts for the write)."""
    for frame in reversed(frames):
        path = _in_repo(_location(frame)[1])
        if (
            path is not None
            and path.startswith(("app/", "workers/"))
            and not path.startswith("app/cli")
        ):
            return _function(frame)
    return "no Lookout frame (event loop, server, libraries)"


def _in_repo(path: str) -> str | None:
    """The path relative to the repository (app/…, workers/…, bench/…), or None."""
    root = str(REPO) + os.sep
    if path.startswith(root):
        return path[len(root) :]
    if path.startswith(("app/", "workers/", "bench/")):
        return path
    return None
