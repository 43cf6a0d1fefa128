"""Connections (made by the API lifespan or worker start): SQLAlchemy 2 async engine and
sessions, the Redis client; migrations."""

from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

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
    # pool_pre_ping: a connection that died with a Postgres restart is replaced, not handed out.
    # timeout (asyncpg connect) and pool_timeout: an outage answers 503 fast instead of hanging.
    return create_async_engine(
        database.url,
        pool_size=database.pool_size,
        pool_pre_ping=True,
        pool_timeout=database.connect_timeout_s,
        connect_args={
            "timeout": database.connect_timeout_s,
            "server_settings": {"application_name": f"lookout-{role}"},
        },
    )


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
