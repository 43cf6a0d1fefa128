"""Alembic environment (async). The URL comes from the Alembic config or Lookout settings."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.models import Base
from app.settings import get_settings
from app.vectors import hnsw_index_names

target_metadata = Base.metadata


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().database.url
    if not url:
        raise RuntimeError("no database URL: set LOOKOUT_DATABASE__URL")
    return url


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Leave the per-model HNSW indexes to the migrations that create them.

    They are partial expression indexes (`(embedding::vector(N)) vector_cosine_ops WHERE
    model = …`) that the ORM does not declare; without this, `alembic check` would report each
    one as an index to drop.
    """
    return not (type_ == "index" and reflected and name in hnsw_index_names())


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
