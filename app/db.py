"""SQLAlchemy 2 async engine and sessions (made by the API lifespan or worker start); migrations."""

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import DatabaseSettings

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# alembic.ini and migrations/ sit beside the packages (in the repo and in the images).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def create_engine(database: DatabaseSettings) -> AsyncEngine:
    if database.url is None:
        raise RuntimeError("no database URL: set LOOKOUT_DATABASE__URL or run `lookout up`")
    return create_async_engine(database.url, pool_size=database.pool_size, pool_pre_ping=True)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str) -> "AlembicConfig":
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    # configparser interpolates '%': escape it, or percent-encoded passwords/paths break.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Upgrade the schema to head. Synchronous: call it outside a running event loop."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")
