"""HTTP and WebSocket routes for edge nodes. Parse, authorize, call the service; nothing else.

Two routers: `admin_router` (register, list, change, revoke nodes) and `node_router` (what a
node calls with its own token). Admin routes take the same credentials as the rest of the
admin API.
"""

import asyncio
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from app import openapi_examples as examples
from app.cancellation import cancel_and_wait
from app.commits import after_commit, commit
from app.deps import (
    AppState,
    FramesRedisDep,
    RedisDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    app_state,
    require_scope,
)
from app.errors import AppError, InvalidInput, PayloadTooLarge, error_body, error_doc
from app.jobs import service as jobs
from app.jobs.schemas import JobDetail, JobSummary
from app.nodes import service
from app.nodes.deps import CurrentNode, HeartbeatingNode, authenticate_request
from app.nodes.relay import FrameRelay
from app.nodes.schemas import (
    Heartbeat,
    HeartbeatAck,
    NodeCreate,
    NodeCreated,
    NodeList,
    NodeOut,
    NodePolicyUpdate,
    TokenOut,
    TokenRefresh,
    TokenRequest,
)
from app.nodes.service import AuthenticatedNode
from app.security import Scope
from app.socket_auth import guard_credentials

log = structlog.get_logger()
# Registering, listing, changing and revoking nodes is for admin API keys only.
admin_router = APIRouter(tags=["nodes"], dependencies=[Depends(require_scope(Scope.admin))])
node_router = APIRouter(tags=["edge node API"])

# A node sends its heartbeat this many times per offline_after_s.
HEARTBEATS_PER_TIMEOUT = 3
# WebSocket close reasons are at most 123 bytes.
WS_REASON_MAX_CHARS = 120

NODE_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc(
        "No token, or an invalid, expired or revoked one",
        "invalid_token",
        "the token has expired; get a new one at POST /v1/nodes/token",
    ),
}


# --- admin --------------------------------------------------------------------------------


@admin_router.post(
    "/v1/nodes",
    status_code=status.HTTP_201_CREATED,
    response_model=NodeCreated,
    summary="Register a node; its secret is in this response and nowhere else",
    responses={
        409: error_doc(
            "A node in service has this name",
            "conflict",
            "a node named 'gate-cam' is already registered",
        )
    },
)
async def register_node(
    body: NodeCreate, session: SessionDep, settings: SettingsDep
) -> NodeCreated:
    node, secret = await service.register_node(
        session,
        name=body.name,
        tasks=body.tasks,
        store_frames=body.store_frames,
        store_face_crops=body.store_face_crops,
    )
    out = service.node_out(node, offline_after_s=settings.nodes.offline_after_s, frames_per_min=0)
    log.info("node_registered", node_id=str(node.id), name=node.name)
    return NodeCreated(**out.model_dump(), secret=secret)


@admin_router.get("/v1/nodes", response_model=NodeList, summary="The fleet")
async def list_nodes(
    session: SessionDep,
    settings: SettingsDep,
    include_revoked: Annotated[bool, Query()] = False,
) -> NodeList:
    items = await service.list_nodes(
        session,
        offline_after_s=settings.nodes.offline_after_s,
        include_revoked=include_revoked,
    )
    return NodeList(items=items, offline_after_s=settings.nodes.offline_after_s)


@admin_router.get("/v1/nodes/{node_id}", response_model=NodeOut, summary="One node's status")
async def get_node(node_id: uuid.UUID, session: SessionDep, settings: SettingsDep) -> NodeOut:
    return await service.get_node_out(
        session, node_id, offline_after_s=settings.nodes.offline_after_s
    )


@admin_router.patch("/v1/nodes/{node_id}", response_model=NodeOut, summary="Change a node's policy")
async def update_node(
    node_id: uuid.UUID, body: NodePolicyUpdate, session: SessionDep, settings: SettingsDep
) -> NodeOut:
    await service.update_policy(
        session,
        node_id,
        tasks=body.tasks,
        store_frames=body.store_frames,
        store_face_crops=body.store_face_crops,
    )
    return await service.get_node_out(
        session, node_id, offline_after_s=settings.nodes.offline_after_s
    )


@admin_router.delete(
    "/v1/nodes/{node_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a node: its tokens stop working on its next request",
)
async def revoke_node(
    node_id: uuid.UUID, session: SessionDep, redis: RedisDep, settings: SettingsDep
) -> Response:
    if await service.revoke_node(session, node_id):
        service.announce_after_commit(session, redis, node_id, ["revoked"], settings)
        log.info("node_revoked", node_id=str(node_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- the node's own API ----------------------------------------------------------------------


@node_router.post(
    "/v1/nodes/token",
    response_model=TokenOut,
    responses=NODE_AUTH_ERRORS,
    summary="Exchange a node's id and secret for a short-lived token",
)
async def issue_token(body: TokenRequest, session: SessionDep, settings: SettingsDep) -> TokenOut:
    token = await service.exchange_secret(session, body.node_id, body.secret, settings)
    return TokenOut(
        access_token=token.token,
        expires_in=settings.nodes.token_ttl_s,
        expires_at=token.expires_at,
    )


@node_router.get(
    "/v1/nodes/me", response_model=NodeOut, responses=NODE_AUTH_ERRORS, summary="This node"
)
async def get_me(node: CurrentNode, session: SessionDep, settings: SettingsDep) -> NodeOut:
    return await service.get_node_out(
        session, node.id, offline_after_s=settings.nodes.offline_after_s
    )


@node_router.post(
    "/v1/nodes/me/heartbeat",
    response_model=HeartbeatAck,
    responses=NODE_AUTH_ERRORS,
    summary="Report fps, latency, state, dark scene, version",
)
async def heartbeat(
    body: Heartbeat,
    node: HeartbeatingNode,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> HeartbeatAck:
    changes = await service.record_heartbeat(session, node, body)
    if node.came_online:
        changes = ["online", *changes]
    service.announce_after_commit(session, redis, node.id, changes, settings)
    offline_after_s = settings.nodes.offline_after_s
    return HeartbeatAck(
        node_id=node.id,
        next_heartbeat_s=offline_after_s / HEARTBEATS_PER_TIMEOUT,
        offline_after_s=offline_after_s,
    )


@node_router.post(
    "/v1/nodes/me/frames",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobSummary,
    summary="Send one frame (the raw image bytes as the body)",
    responses={
        **NODE_AUTH_ERRORS,
        200: {
            "model": JobDetail,
            "description": "With ?wait=, the job finished in time: full result inline",
            "content": {"application/json": {"example": examples.FRAME_JOB_DONE}},
        },
        202: {
            "description": "Accepted: the frame is a job; its result comes on the firehose, or "
            "from GET /v1/nodes/me/jobs/{job_id}",
            "content": {"application/json": {"example": examples.FRAME_JOB_QUEUED}},
        },
        413: error_doc(
            "Frame over nodes.max_frame_bytes or the pixel limit",
            "payload_too_large",
            "the frame is larger than the limit of 8388608 bytes",
        ),
        415: error_doc(
            "Not a JPEG, PNG or WebP image",
            "unsupported_image_type",
            "not a JPEG, PNG, WebP, BMP, GIF or TIFF image (unrecognised file signature)",
        ),
        429: error_doc(
            "Too many of this node's frames are waiting for a worker",
            "frames_backlogged",
            "16 frames of this node are waiting for a worker; send again later",
        ),
        503: error_doc(
            "The work queue is unavailable",
            "unavailable",
            "Redis is unreachable; the request was not completed, retry later",
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("image/jpeg", "image/png", "image/webp")
            },
        }
    },
)
async def send_frame(
    request: Request,
    node: CurrentNode,
    session: SessionDep,
    redis: RedisDep,
    frames_redis: FramesRedisDep,
    storage: StorageDep,
    settings: SettingsDep,
    wait: Annotated[
        float | None,
        Query(ge=0, allow_inf_nan=False, description="seconds to wait for the result (capped)"),
    ] = None,
) -> Any:
    # A raw body, not multipart: multipart spools big parts to temporary files, and a frame
    # of a node that does not store frames must never touch the disk.
    frame = await _read_body(request, limit_bytes=settings.nodes.max_frame_bytes)
    job = await service.accept_frame(session, storage, node, frame, settings)
    sessionmaker = app_state(request).sessionmaker
    after_commit(
        session,
        lambda: service.enqueue_frame(redis, frames_redis, sessionmaker, job, frame, settings),
    )
    # The commit point, reached now: the job is queued before the route waits for it.
    await commit(session)
    if wait and await jobs.wait_for_job(
        redis, job.id, timeout_s=min(wait, settings.api.max_wait_s)
    ):
        detail = await service.get_own_job(session, node, job.id)
        return JSONResponse(detail.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    return jobs.job_summary(job, node_name=node.name)


async def _read_body(request: Request, *, limit_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"the frame is larger than the limit of {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@node_router.get(
    "/v1/nodes/me/jobs/{job_id}",
    response_model=JobDetail,
    responses={
        **NODE_AUTH_ERRORS,
        200: {"content": {"application/json": {"example": examples.FRAME_JOB_DONE}}},
        404: error_doc(
            "No such job, or another node's",
            "not_found",
            "no job with id 4a81290d-4cca-470a-915c-f77b5a55a091",
        ),
    },
    summary="The result of a frame this node sent",
)
async def get_own_job(job_id: uuid.UUID, node: CurrentNode, session: SessionDep) -> JobDetail:
    return await service.get_own_job(session, node, job_id)


@node_router.websocket("/v1/nodes/me/stream")
async def node_stream(websocket: WebSocket) -> None:
    """Frames in (binary messages), results out (JSON), on one socket.

    Auth: `Authorization: Bearer <token>` on the upgrade request; refused with HTTP 401 where
    the server supports denial responses, else closed with code 4401 before accepting. After
    accepting: a revoked node or expired token closes with 4401 within
    auth.websocket_recheck_s (at the token's expiry at the latest); a refreshed
    token (`{"type": "token", "token": …}`) for another node closes with 4403. Messages and
    backpressure: app/nodes/schemas.py and relay.py FrameRelay.
    """
    state = app_state(websocket)
    try:
        async with state.sessionmaker() as session:
            node = await authenticate_request(
                session, state.redis, websocket.headers.get("authorization"), state.settings
            )
    except AppError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()
    relay = FrameRelay(
        node,
        settings=state.settings,
        sessionmaker=state.sessionmaker,
        redis=state.redis,
        frames_redis=state.frames_redis,
        storage=state.storage,
    )
    log.info("node_stream_opened", node_id=str(node.id))
    error = await _relay_until_closed(websocket, relay, state)
    await _close_stream(websocket, node, relay, error)


async def _close_stream(
    websocket: WebSocket, node: AuthenticatedNode, relay: FrameRelay, error: BaseException | None
) -> None:
    """Log the socket's end; close it with the code its error stands for (re-raised if a bug)."""
    log.info(
        "node_stream_closed",
        node_id=str(node.id),
        frames=relay.frames,
        dropped_notices=relay.dropped_notices,
        error=repr(error) if error else None,
    )
    if isinstance(error, AppError):
        await _close_quietly(websocket, 4000 + error.status, error.detail)
    elif error is not None and not isinstance(error, WebSocketDisconnect):
        await _close_quietly(websocket, 1011, "internal error")
        raise error


async def _relay_until_closed(
    websocket: WebSocket, relay: FrameRelay, state: AppState
) -> BaseException | None:
    """Frames in, answers out, until either side stops or the credentials lapse; what stopped
    the frames, if anything (the guard's 401 for a revoked node or an expired token)."""

    async def check_credentials() -> None:
        async with state.sessionmaker() as session:
            await service.check_in_service(session, relay.claims)

    receiver = asyncio.create_task(_receive_frames(websocket, relay))
    sender = asyncio.create_task(_send_answers(websocket, relay))
    # Revoked node or expired token (not refreshed in time) → 4401 without waiting for a frame.
    guard = asyncio.create_task(
        guard_credentials(
            check_credentials,
            interval_s=state.settings.auth.websocket_recheck_s,
            expires_at=lambda: relay.claims.expires_at,
        )
    )
    tasks = (receiver, sender, guard)
    try:
        await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)
        await relay.close()
    error: BaseException | None = None
    if guard.done() and not guard.cancelled():
        error = guard.exception() or guard.result()
    if error is None and not receiver.cancelled():
        error = receiver.exception()
    return error


async def _receive_frames(websocket: WebSocket, relay: FrameRelay) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await relay.submit(message["bytes"])
        elif message.get("text") is not None:
            try:
                refresh = TokenRefresh.model_validate_json(message["text"])
            except ValidationError as exc:
                raise InvalidInput('control messages are {"type": "token", "token": "…"}') from exc
            relay.refresh_token(refresh.token)


async def _send_answers(websocket: WebSocket, relay: FrameRelay) -> None:
    while True:
        answer = await relay.outbox.get()
        await websocket.send_json(answer)
        relay.answered(answer)


async def _deny(websocket: WebSocket, exc: AppError) -> None:
    """Refuse the upgrade: an HTTP error response if the server can send one, else close 4xxx."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse(
                error_body(exc.code, exc.detail), status_code=exc.status, headers=exc.headers
            )
        )
    else:
        await websocket.close(code=4000 + exc.status, reason=exc.detail[:WS_REASON_MAX_CHARS])


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason[:WS_REASON_MAX_CHARS])
    except (RuntimeError, WebSocketDisconnect):
        pass  # already closed by the client
