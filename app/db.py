"""Connections (made by the API lifespan or worker start): SQLAlchemy 2 async engine and
sessions, the Redis client; migrations."""

import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import asyncpg
from redis.asyncio import Redis
from sqlalchemy import ClauseElement, event, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DisconnectionError, ProgrammingError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from app.settings import DatabaseSettings, RedisSettings

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# alembic.ini and migrations/ sit beside the packages (in the repo and in the images).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def create_engine(database: DatabaseSettings, role: str = "cli") -> AsyncEngine:
    """`role` names the process in Postgres (application_name `lookout-ROLE`: api, worker,
    events, cli), so pg_stat_activity and the server's logs tell whose statements they are."""
    if database.url is None:
        raise RuntimeError("no database URL: set LOOKOUT_DATABASE__URL or run `lookout up`")
    # timeout (asyncpg connect) and pool_timeout: an outage answers 503 fast instead of hanging.
    # No overflow: SQLAlchemy closes a connection made beyond pool_size as soon as it comes back,
    # and a burst of small uploads (more in flight than pool_size, each holding a connection for
    # its INSERT) made and closed ~190 connections in 2,000 uploads, each a Postgres backend
    # started and its catalog caches filled: a third of the machine's CPU, in processes that
    # exit before anything counts them (bench/plumbing's load: 340 jobs/s, against 455 with a
    # pool large enough to keep every connection it made; bench/RESULTS.md, the hot path).
    # A request beyond pool_size waits for a connection instead (at most pool_timeout). Last in,
    # first out: at a low rate the connection used a moment ago is used again, not the one that
    # sat longest (which would need its idle ping, three round trips, every time).
    engine = create_async_engine(
        database.url,
        pool_size=database.pool_size,
        max_overflow=0,
        pool_use_lifo=True,
        pool_timeout=database.connect_timeout_s,
        connect_args={
            "timeout": database.connect_timeout_s,
            "server_settings": {"application_name": f"lookout-{role}"},
        },
    )
    _ping_idle_connections(engine)
    return engine


# A pooled connection unused this long is pinged before it is handed out again.
IDLE_PING_AFTER_S = 1.0
_LAST_USED = "lookout_last_used"


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Hand out no connection that died while it sat in the pool (a Postgres restart): one
    unused for IDLE_PING_AFTER_S is pinged first and, if dead, replaced.

    SQLAlchemy's pool_pre_ping pings at every checkout, and asyncpg's ping is three round
    trips (BEGIN, a query, ROLLBACK): more than the one INSERT of an upload (bench/plumbing.py).
    A connection used a moment ago is alive or dies with the statement being sent, which
    invalidates the pool as a failed ping would (is_outage: 503, or the worker waits).
    """

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last_used = record.info.get(_LAST_USED)
        if last_used is None or time.monotonic() - last_used < IDLE_PING_AFTER_S:
            return  # just connected, or used a moment ago
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool discards the connection and hands out another (a new one).
            raise DisconnectionError(f"pooled connection is dead: {exc!r}") from exc


def create_redis(redis: RedisSettings) -> Redis:
    if redis.url is None:
        raise RuntimeError("no Redis URL: set LOOKOUT_REDIS__URL or run `lookout up`")
    return _redis_client(redis.url, redis)


def create_frames_redis(redis: RedisSettings, main: Redis) -> Redis:
    """The client of the frames Redis (node frames); `main` itself when no frames URL is set.

    Close the two with close_redis.
    """
    return main if redis.frames_url is None else _redis_client(redis.frames_url, redis)


async def close_redis(redis: Redis, frames_redis: Redis) -> None:
    """Close the main client and the frames client, which may be the same one."""
    if frames_redis is not redis:
        await frames_redis.aclose()
    await redis.aclose()


def _redis_client(url: str, redis: RedisSettings) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=redis.socket_timeout_s,
        socket_connect_timeout=redis.connect_timeout_s,
        health_check_interval=30,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def autocommit_session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session whose statements each commit on their own: for work that is one write (or
    writes that need no common fate). A transaction would cost BEGIN and COMMIT, two round trips
    around the statement, on paths run for every job (bench/RESULTS.md, the hot path).
    `app.commits.commit` still runs the work queued for after the commit."""
    async with sessionmaker() as session:
        # Set when the connection is checked out; the pool resets it when it is returned.
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg connection itself, for a statement on the hottest path.

    No transaction: each statement commits as it runs. Values go in as asyncpg takes them (an
    enum's value, JSON as text) and rows come back as asyncpg records. SQLAlchemy's execution
    (session, Core statement, result processing) cost an upload's INSERT 0.42 ms of the API's
    CPU against 0.16 ms this way, from the same pool, idle-ping included (300 inserts, 6
    interleaved rounds, 2026-12-05); an asyncpg pool of its own cost 0.19 (its release resets
    the connection, a round trip). A connection whose statement did not end in an answer from
    Postgres (cancelled, the connection lost) is discarded, not handed out again.
    """
    proxied = await engine.raw_connection()
    # Returned (or discarded) in a greenlet, as SQLAlchemy's own connections are: the pool may
    # close the connection there (one of a pool replaced after an outage, or over its size where
    # overflow is allowed), which awaits.
    try:
        yield proxied.driver_connection
    except asyncpg.PostgresError:
        # Postgres refused the statement: the connection is as good as before.
        await greenlet_spawn(proxied.close)
        raise
    except BaseException:
        await greenlet_spawn(proxied.invalidate)
        raise
    await greenlet_spawn(proxied.close)


@dataclass(frozen=True)
class DriverStatement:
    """A SQLAlchemy statement compiled once for driver_connection: its SQL with positional
    parameters ($1 …) and the names of those parameters, in order."""

    sql: str
    parameters: tuple[str, ...]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] for name in self.parameters]


def driver_statement(
    statement: ClauseElement, *, column_keys: Sequence[str] | None = None
) -> DriverStatement:
    """`statement` (an insert: with `column_keys`, the columns it sets) for driver_connection.
    Its SQL is SQLAlchemy's own for asyncpg, so tables and columns follow the models; values go
    in as asyncpg takes them (an enum's value, JSON as text)."""
    compiled = cast(
        SQLCompiler,
        statement.compile(
            dialect=asyncpg_dialect(),  # type: ignore[no-untyped-call]
            column_keys=list(column_keys) if column_keys is not None else None,
        ),
    )
    return DriverStatement(compiled.string, tuple(compiled.positiontup or ()))


# FOR KEY SHARE: compatible with other readers and with UPDATEs that keep the key (a worker
# finishing a job, a clustering batch's FOR NO KEY UPDATE of a person), not with a DELETE or a
# FOR UPDATE. Ids as text, cast by Postgres: a malformed one is its data error.
_HELD_ROWS = {
    table: text(
        f"SELECT CAST(id AS text) FROM {table} "  # noqa: S608 (table: one of the two literals)
        "WHERE id = ANY(CAST(:ids AS uuid[])) FOR KEY SHARE"
    )
    for table in ("jobs", "people")
}


async def held_rows(
    session: AsyncSession, table: Literal["jobs", "people"], ids: Collection[str]
) -> set[str]:
    """Which of these rows (ids as text) still exist, held against their deletion until the
    caller commits: a deletion either committed before (they are not in the answer) or waits
    for the caller, then sees what the caller wrote about them."""
    if not ids:
        return set()
    return set(await session.scalars(_HELD_ROWS[table], {"ids": sorted(ids)}))


def alembic_config(database_url: str) -> "AlembicConfig":
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    # configparser interpolates '%': escape it, or percent-encoded passwords/paths break.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


# The migration this code needs the schema at: the head of migrations/ (a new migration moves
# it; tests/test_migrations.py checks they agree). A constant, not read from migrations/: the
# worker image has no migrations to read.
SCHEMA_HEAD = "0021"


async def schema_version(connection: AsyncConnection) -> str | None:
    """The migration the schema is at (None: never migrated). Alone on its connection: a
    missing table aborts the transaction."""
    try:
        version = await connection.scalar(text("SELECT max(version_num) FROM alembic_version"))
    except ProgrammingError:  # no alembic_version table
        return None
    return None if version is None else str(version)


def migrate(database_url: str) -> None:
    """Upgrade the schema to head. Synchronous: call it outside a running event loop."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")
