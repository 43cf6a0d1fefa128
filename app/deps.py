"""Annotated dependency aliases. Resources live on app.state.lookout, built by the lifespan."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.nodes import service as nodes_service
from app.settings import Settings
from app.storage import Storage


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    storage: Storage


def get_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.lookout
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The one commit point of a request: commit when the route returns, roll back on error."""
    async with state.sessionmaker() as session:
        yield session
        await session.commit()


# scope="function": commit before the response is sent, so a failed commit is the client's error
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_redis(state: StateDep) -> Redis:
    return state.redis


def get_storage(state: StateDep) -> Storage:
    return state.storage


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


RedisDep = Annotated[Redis, Depends(get_redis)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_current_node(
    connection: HTTPConnection, state: StateDep, session: SessionDep
) -> nodes_service.AuthenticatedNode:
    """The node behind `Authorization: Bearer <token>`: token verified, node row not revoked.

    Every request checks the row, so a revoked node's tokens fail on its next request.
    """
    return await nodes_service.authenticate_request(
        session, state.redis, connection.headers.get("authorization"), state.settings
    )


CurrentNode = Annotated[nodes_service.AuthenticatedNode, Depends(get_current_node)]
