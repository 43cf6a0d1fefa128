"""The pool's liveness check (app/db.py): a connection that died while idle in the pool (a
Postgres restart) is replaced, not handed out; a connection used a moment ago is handed out
without the three round trips of a ping. Real Postgres; backends killed with
pg_terminate_backend."""

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app import db
from app.db import create_engine
from app.errors import is_outage
from app.settings import DatabaseSettings, Settings


async def _backend_pid(connection: AsyncConnection) -> int:
    pid = await connection.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


async def _kill(engine: AsyncEngine, pid: int) -> None:
    async with engine.connect() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.1)  # the backend is gone before the pool hands its connection out


@pytest.fixture
async def one_connection(settings):  # type: ignore[no-untyped-def]
    """An engine whose pool holds a single connection: every checkout gets the same one."""
    own = create_engine(DatabaseSettings(url=settings.database.url, pool_size=1))
    yield own
    await own.dispose()


async def test_a_connection_that_died_idle_in_the_pool_is_replaced(
    one_connection: AsyncEngine, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "IDLE_PING_AFTER_S", 0.2)
    async with one_connection.connect() as connection:
        dead_pid = await _backend_pid(connection)
    await _kill(engine, dead_pid)
    await asyncio.sleep(0.2)  # idle past the ping threshold
    async with one_connection.connect() as connection:
        # The dead connection was caught at checkout, not by this query failing.
        assert await _backend_pid(connection) != dead_pid


async def test_a_connection_used_a_moment_ago_is_handed_out_unpinged(
    one_connection: AsyncEngine, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unpinged: the dead connection reaches the caller's query, whose disconnect error
    invalidates the pool (is_outage: a 503 once); the next checkout connects anew."""
    monkeypatch.setattr(db, "IDLE_PING_AFTER_S", 60.0)
    async with one_connection.connect() as connection:
        dead_pid = await _backend_pid(connection)
    await _kill(engine, dead_pid)
    with pytest.raises(DBAPIError) as raised:
        async with one_connection.connect() as connection:
            await connection.execute(text("SELECT 1"))
    assert is_outage(raised.value), repr(raised.value)  # the API answers 503, workers wait
    async with one_connection.connect() as connection:
        assert await _backend_pid(connection) != dead_pid


async def test_an_autocommit_session_commits_each_statement_and_leaves_the_pool_transactional(
    one_connection: AsyncEngine, engine: AsyncEngine
) -> None:
    """Each statement of an autocommit session is visible to others at once (no BEGIN held);
    the pool hands the same connection out afterwards in ordinary transactions again."""
    sessionmaker = db.create_sessionmaker(one_connection)
    async with engine.begin() as setup:
        await setup.execute(text("CREATE TABLE IF NOT EXISTS autocommit_probe (x int)"))
        await setup.execute(text("TRUNCATE autocommit_probe"))
    async with db.autocommit_session(sessionmaker) as session:
        await session.execute(text("INSERT INTO autocommit_probe VALUES (1)"))
        async with engine.connect() as other:  # before the session ends: committed already
            assert await other.scalar(text("SELECT count(*) FROM autocommit_probe")) == 1
        first = await session.scalar(text("SELECT statement_timestamp()"))
        await asyncio.sleep(0.01)
        assert await session.scalar(text("SELECT transaction_timestamp()")) != first
    async with sessionmaker() as session:  # the same (only) connection, back in transactions
        await session.execute(text("INSERT INTO autocommit_probe VALUES (2)"))
        async with engine.connect() as other:
            assert await other.scalar(text("SELECT count(*) FROM autocommit_probe")) == 1
        await session.rollback()
    async with engine.begin() as cleanup:
        await cleanup.execute(text("DROP TABLE autocommit_probe"))


async def test_a_driver_connection_commits_each_statement_and_keeps_the_pool_sound(
    one_connection: AsyncEngine, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """app/db.py driver_connection, the upload's INSERT path: a statement commits as it runs; a
    statement Postgres refused leaves the connection in the pool; one cut short (cancelled, or
    its backend killed: an outage, 503) is discarded, and the next checkout works."""
    # Unpinged however slow the machine: the killed connection must reach the statement.
    monkeypatch.setattr(db, "IDLE_PING_AFTER_S", 60.0)
    async with engine.begin() as setup:
        await setup.execute(text("CREATE TABLE IF NOT EXISTS driver_probe (x int)"))
        await setup.execute(text("TRUNCATE driver_probe"))
    try:
        async with db.driver_connection(one_connection) as connection:
            await connection.execute("INSERT INTO driver_probe VALUES (1)")
            async with engine.connect() as other:  # committed already
                assert await other.scalar(text("SELECT count(*) FROM driver_probe")) == 1
            pid = await connection.fetchval("SELECT pg_backend_pid()")

        with pytest.raises(asyncpg.DivisionByZeroError):
            async with db.driver_connection(one_connection) as connection:
                await connection.fetchval("SELECT 1 / 0")
        async with db.driver_connection(one_connection) as connection:
            assert await connection.fetchval("SELECT pg_backend_pid()") == pid  # kept

        with pytest.raises(TimeoutError):
            async with db.driver_connection(one_connection) as connection:
                await asyncio.wait_for(connection.execute("SELECT pg_sleep(5)"), 0.2)
        async with db.driver_connection(one_connection) as connection:
            fresh = await connection.fetchval("SELECT pg_backend_pid()")
            assert fresh != pid  # the interrupted one was discarded

        await _kill(engine, fresh)
        with pytest.raises(Exception) as raised:
            async with db.driver_connection(one_connection) as connection:
                await connection.fetchval("SELECT 1")
        assert is_outage(raised.value), repr(raised.value)
        async with db.driver_connection(one_connection) as connection:
            assert await connection.fetchval("SELECT pg_backend_pid()") not in (pid, fresh)
        # The session path shares the pool and finds it sound.
        async with one_connection.connect() as connection:
            assert await connection.scalar(text("SELECT count(*) FROM driver_probe")) == 1
    finally:
        async with engine.begin() as cleanup:
            await cleanup.execute(text("DROP TABLE driver_probe"))


async def test_a_driver_connection_the_pool_closes_on_return_is_closed(settings: Settings) -> None:
    """The pool closes a connection at its return when it has no place for it (one over
    pool_size, or of a pool replaced after an outage); that close awaits, in a greenlet."""
    own = create_async_engine(settings.database.url, pool_size=1, max_overflow=1)
    try:
        async with (
            db.driver_connection(own) as first,
            db.driver_connection(own) as second,
        ):
            assert await first.fetchval("SELECT 1") == await second.fetchval("SELECT 1") == 1
        # The second came back first and took the pool's one place; the first was closed (a
        # close outside a greenlet fails, is only logged, and leaves the connection open).
        assert first.is_closed() and not second.is_closed()
    finally:
        await own.dispose()


async def test_a_process_holds_at_most_pool_size_connections_and_keeps_them(
    settings: Settings,
) -> None:
    """No overflow (app/db.py create_engine): more callers than pool_size wait for a connection
    rather than each making one that is closed again at its return; the last one returned is
    handed out first."""
    own = create_engine(DatabaseSettings(url=settings.database.url, pool_size=2))
    try:

        async def backend_pid() -> int:
            async with db.driver_connection(own) as connection:
                pid = await connection.fetchval("SELECT pg_backend_pid()")
                await asyncio.sleep(0.05)  # held, so that the callers overlap
                return int(pid)

        first = await asyncio.gather(*(backend_pid() for _ in range(6)))
        second = await asyncio.gather(*(backend_pid() for _ in range(6)))
        assert len(set(first)) == 2  # six callers, two connections
        assert set(second) == set(first)  # the same two, kept open
        # One caller at a time gets the connection used last (LIFO), not each in turn (which
        # at a low rate would have sat idle long enough to be pinged each time).
        one_at_a_time = [await backend_pid() for _ in range(4)]
        assert len(set(one_at_a_time)) == 1
    finally:
        await own.dispose()
