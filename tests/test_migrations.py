"""The Alembic history matches the ORM models and runs both ways."""

import asyncio

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import SCHEMA_HEAD, alembic_config

SCRATCH_DATABASE = "lookout_migration_test"


async def recreate_database(server_url: str, name: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()


def test_models_and_migrations_agree(servers):
    """`alembic check`: autogenerate finds nothing to add against the migrated test database."""
    command.check(alembic_config(servers.database_url))


def test_migrations_downgrade_to_base_and_upgrade_again(servers):
    scratch_url = make_url(servers.database_url).set(database=SCRATCH_DATABASE)
    asyncio.run(recreate_database(servers.database_url, SCRATCH_DATABASE))
    config = alembic_config(scratch_url.render_as_string(hide_password=False))
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    command.check(config)


def test_the_schema_the_code_waits_for_is_the_last_migration():
    """Readiness and the workers wait for SCHEMA_HEAD (a constant: the worker image has no
    migrations to read); a new migration must move it, or nothing would ever be ready."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    assert SCHEMA_HEAD == head
