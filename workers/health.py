"""Worker liveness from heartbeat files; `python -m workers.health` is the container's check.

Every worker process touches `<heartbeat dir>/<hostname>-<pid>` each time its consumer loop comes
round: after each read of the jobs stream (at least every `block_ms` while idle) and after each
job. The check (Docker HEALTHCHECK, Kubernetes liveness probe) runs in the same container, so it
sees the same directory and process ids: healthy when every live worker process beat within
`job_timeout_s + block_ms` — a job that runs longer is reclaimed by other workers anyway.
Files of processes that are gone are ignored. Redis is not asked: a consumer that reads an empty
stream leaves no trace there before Redis 7.2.
"""

import socket
import sys
import tempfile
import time
from pathlib import Path

from app.settings import Settings, get_settings
from app.supervisor import process_exists

HEARTBEAT_DIR_NAME = "lookout-worker-heartbeats"


def heartbeat_dir() -> Path:
    """Inside the container's temporary directory (TMPDIR): private to the container."""
    return Path(tempfile.gettempdir()) / HEARTBEAT_DIR_NAME


class Heartbeat:
    """One worker process's heartbeat file."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name

    def beat(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)


def max_age_s(settings: Settings) -> float:
    """The longest a healthy loop goes without coming round: a batch past job_timeout_s is run
    again job by job, each with its own job_timeout_s (workers/consumer.py infer), so a batch of
    slow images takes up to (batch_size + 1) timeouts; a limit of one timeout had liveness kill
    a worker that was only busy."""
    worker = settings.worker
    return worker.job_timeout_s * (worker.batch_size + 1) + worker.block_ms / 1000


def check(
    directory: Path, *, hostname: str, max_age_s: float, now: float | None = None
) -> tuple[bool, str]:
    """(healthy, reason) for the worker processes of `hostname` that are still running."""
    now = time.time() if now is None else now
    ages: dict[str, float] = {}
    for path in directory.glob(f"{hostname}-*"):
        pid = path.name.rsplit("-", 1)[1]
        if not pid.isdigit() or not process_exists(int(pid)):
            continue  # left by a process that is gone
        try:
            ages[path.name] = now - path.stat().st_mtime
        except FileNotFoundError:
            continue  # its process just stopped
    if not ages:
        return False, f"no running worker process has a heartbeat in {directory}"
    name, age_s = max(ages.items(), key=lambda item: item[1])
    if age_s > max_age_s:
        return False, f"worker {name} last came round {age_s:.1f} s ago (limit {max_age_s} s)"
    return True, f"{len(ages)} worker process(es), the slowest came round {age_s:.1f} s ago"


def main() -> int:
    healthy, reason = check(
        heartbeat_dir(), hostname=socket.gethostname(), max_age_s=max_age_s(get_settings())
    )
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
