"""Node authentication for the node's own API: the dependencies its routes declare.

A node request's authentication is a commit point of its own: the node's last_seen_at (and an
offline → online change) is committed even when the request then fails (a refused frame).
"""

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from app.commits import commit
from app.deps import SessionDep, StateDep
from app.nodes.service import AuthenticatedNode, announce_after_commit, authenticate
from app.security import bearer_token
from app.settings import Settings


async def authenticate_request(
    session: AsyncSession,
    redis: Redis,
    authorization: str | None,
    settings: Settings,
    *,
    announce_online: bool = True,
) -> AuthenticatedNode:
    """The node behind an `Authorization: Bearer …` header, for HTTP and socket requests alike.

    Commits its last_seen_at and announces a node that just came online, unless
    `announce_online` is False: then the caller announces it (`came_online`) once it has
    committed what the request brings.
    """
    node = await authenticate(session, bearer_token(authorization), settings)
    if node.came_online and announce_online:
        announce_after_commit(session, redis, node.id, ["online"], settings)
    await commit(session)
    return node


# Documents the node token in OpenAPI (the routes read the header themselves, for one 401 shape).
node_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="NodeToken",
    bearerFormat="JWT",
    description="a node's short-lived JWT from POST /v1/nodes/token",
)
NodeBearerDoc = Annotated[HTTPAuthorizationCredentials | None, Security(node_bearer)]


async def get_current_node(
    connection: HTTPConnection, state: StateDep, session: SessionDep, _doc: NodeBearerDoc
) -> AuthenticatedNode:
    """The node behind `Authorization: Bearer <token>`: token verified, node row not revoked.

    Every request checks the row, so a revoked node's tokens fail on its next request.
    """
    return await authenticate_request(
        session, state.redis, connection.headers.get("authorization"), state.settings
    )


async def get_heartbeating_node(
    connection: HTTPConnection, state: StateDep, session: SessionDep, _doc: NodeBearerDoc
) -> AuthenticatedNode:
    """As get_current_node, but a node that just came online is announced by the heartbeat
    route, after its figures are committed: the event then shows the node as it reported."""
    return await authenticate_request(
        session,
        state.redis,
        connection.headers.get("authorization"),
        state.settings,
        announce_online=False,
    )


CurrentNode = Annotated[AuthenticatedNode, Depends(get_current_node)]
HeartbeatingNode = Annotated[AuthenticatedNode, Depends(get_heartbeating_node)]
