"""What counts as an outage (app/errors.py is_outage): a real Postgres connection killed in the
middle of a query, as a stopped or restarting Postgres does to a worker's open session."""

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.errors import is_outage
from app.settings import DatabaseSettings


async def test_a_connection_killed_mid_query_is_an_outage(engine: AsyncEngine, settings):  # type: ignore[no-untyped-def]
    own = create_engine(DatabaseSettings(url=settings.database.url, pool_size=1))
    try:
        async with own.connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            query = asyncio.create_task(connection.execute(text("SELECT pg_sleep(30)")))
            await asyncio.sleep(0.3)  # the query is running
            async with engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as raised:
                await query
        assert is_outage(raised.value), repr(raised.value)
    finally:
        await own.dispose()


async def test_an_error_in_the_query_is_not_an_outage(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError) as raised:
            await connection.execute(text("SELECT 1 / 0"))
    assert not is_outage(raised.value)
    assert not is_outage(ValueError("bad image"))
