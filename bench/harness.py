"""Benchmark harness: real embedded servers, the API and workers as processes, on loopback.

Benchmarks measure ratios side by side in one run on one machine; absolute numbers on a shared
2-core machine are noisy and only describe this run.
"""

import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from app.db import migrate
from app.embedded import start_embedded

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile_ms(samples_s: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples_s) * 1000, q))


def machine_description() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"
    )


@dataclass
class Stack:
    base_url: str
    ws_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]


def _wait_ready(base_url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/openapi.json", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("API did not start")


@contextlib.contextmanager
def stack(
    *, worker_command: list[str], workers: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Embedded Postgres + Redis in a temp dir, one API process, `workers` worker processes."""
    with tempfile.TemporaryDirectory(prefix="lookout-bench-") as tmp:
        services = start_embedded(Path(tmp) / "data")
        processes: list[subprocess.Popen[bytes]] = []
        try:
            migrate(services.database_url)
            port = free_port()
            env = {
                **os.environ,
                "LOOKOUT_DATA_DIR": str(Path(tmp) / "data"),
                "LOOKOUT_DATABASE__URL": services.database_url,
                "LOOKOUT_REDIS__URL": services.redis_url,
                "LOOKOUT_API__PORT": str(port),
                "LOOKOUT_LOG_LEVEL": "WARNING",
                "LOOKOUT_ENV": "dev",
                **(extra_env or {}),
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "api"], env=env, stdout=subprocess.DEVNULL
                )
            )
            for _ in range(workers):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, *worker_command], env=env, stdout=subprocess.DEVNULL
                    )
                )
            base_url = f"http://127.0.0.1:{port}"
            _wait_ready(base_url)
            yield Stack(base_url, f"ws://127.0.0.1:{port}", env, processes)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            services.stop()
