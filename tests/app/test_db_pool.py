"""The pool's liveness check (app/db.py): a connection that died while idle in the pool (a
Postgres restart) is replaced, not handed out; a connection used a moment ago is handed out
without the three round trips of a ping. Real Postgres; backends killed with
pg_terminate_backend."""

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import db
from app.db import create_engine
from app.errors import is_outage
from app.settings import DatabaseSettings


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
