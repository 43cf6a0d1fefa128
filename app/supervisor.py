"""`lookout up`'s process supervisor: a part that dies is restarted with backoff, and a part
that keeps dying stops everything (never a half-alive stack). Stopping goes in order.

Each part is a child process started by a function (so Redis can be restarted on its socket).
The supervisor never blocks on a child: `poll()` is called from `lookout up`'s loop.
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger()


def process_exists(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@dataclass(frozen=True)
class RestartPolicy:
    # The first restart waits initial_backoff_s, each further one twice as long, up to max.
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # A part that ran this long before it died counts as healthy again: backoff starts over.
    stable_after_s: float = 60.0
    # This many deaths in a row, each before stable_after_s: stop everything.
    max_quick_failures: int = 5


class GiveUp(RuntimeError):
    """A part kept dying; the whole stack must stop."""


@dataclass
class Part:
    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    # Stop: SIGTERM, then SIGKILL after grace_s (a worker drains its batch in that time).
    grace_s: float = 30.0
    stop: Callable[[], None] | None = None  # a custom stop (embedded Redis); None: SIGTERM
    # The process leads a process group of its own (started in a new session): what it started
    # (gunicorn's workers) goes with it when it is killed or dies, and never holds its port.
    group: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # monotonic time of the pending restart
    quick_failures: int = 0
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.parts: dict[str, Part] = {}

    def add(self, part: Part) -> Part:
        """Start `part` now and watch it."""
        self.parts[part.name] = part
        part.process = part.start()
        part.started_at = time.monotonic()
        log.info("part_started", part=part.name, pid=part.process.pid)
        return part

    def adopt(self, part: Part, process: subprocess.Popen[bytes]) -> Part:
        """Watch `part`, already running as `process` (restarts use part.start)."""
        self.parts[part.name] = part
        part.process = process
        part.started_at = time.monotonic()
        return part

    def alive(self, name: str) -> bool:
        process = self.parts[name].process
        return process is not None and process.poll() is None

    def poll(self, now: float | None = None) -> None:
        """Notice parts that died and restart the ones whose backoff is over.

        Raises GiveUp when a part died max_quick_failures times in a row, each soon after start.
        """
        now = time.monotonic() if now is None else now
        for part in self.parts.values():
            if part.restart_at is None:
                process = part.process
                if process is None or process.poll() is None:
                    continue
                code = process.returncode
                if part.group:
                    _kill_group(process)  # its children left behind (a gunicorn killed -9)
                part.exit_codes.append(code)
                ran_s = now - part.started_at
                part.quick_failures = (
                    1 if ran_s >= self.policy.stable_after_s else (part.quick_failures + 1)
                )
                if part.quick_failures >= self.policy.max_quick_failures:
                    log.error(
                        "part_gave_up", part=part.name, exit_code=code, deaths=part.quick_failures
                    )
                    raise GiveUp(
                        f"the {part.name} process exited ({_describe(code)}) "
                        f"{part.quick_failures} times in a row; stopping everything"
                    )
                backoff_s = min(
                    self.policy.max_backoff_s,
                    self.policy.initial_backoff_s * 2 ** (part.quick_failures - 1),
                )
                part.restart_at = now + backoff_s
                log.warning(
                    "part_died",
                    part=part.name,
                    pid=process.pid,
                    exit_code=code,
                    reason=_describe(code),
                    ran_s=round(ran_s, 1),
                    restart_in_s=backoff_s,
                )
            elif now >= part.restart_at:
                part.restart_at = None
                try:
                    part.process = part.start()
                except Exception as exc:  # e.g. Redis did not answer in time: try again later
                    log.warning("part_restart_failed", part=part.name, error=str(exc))
                    part.process = None
                    part.started_at = now
                    part.quick_failures += 1
                    if part.quick_failures >= self.policy.max_quick_failures:
                        raise GiveUp(f"the {part.name} process cannot be restarted: {exc}") from exc
                    part.restart_at = now + min(
                        self.policy.max_backoff_s,
                        self.policy.initial_backoff_s * 2 ** (part.quick_failures - 1),
                    )
                    continue
                part.started_at = time.monotonic()
                part.restarts += 1
                log.warning(
                    "part_restarted", part=part.name, pid=part.process.pid, restarts=part.restarts
                )

    def stop(self, order: Sequence[Sequence[str]]) -> None:
        """Stop the parts group by group: each group is signalled together and waited for
        before the next one starts stopping (API, then workers, then Redis)."""
        for group in order:
            parts = [self.parts[name] for name in group if name in self.parts]
            for part in parts:
                part.restart_at = None
                if part.stop is None and part.process is not None and part.process.poll() is None:
                    part.process.send_signal(signal.SIGTERM)
            for part in parts:
                if part.stop is not None:
                    part.stop()
                elif part.process is not None:
                    try:
                        part.process.wait(timeout=part.grace_s)
                    except subprocess.TimeoutExpired:
                        if part.group:
                            _kill_group(part.process)
                        part.process.kill()
                        part.process.wait()
                log.info("part_stopped", part=part.name)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group `process` leads (gone already: nothing to do). Its id is not
    handed to a new process while any member is alive, so this reaches only what it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
