"""HTTP and WebSocket routes for jobs. Parse, authorize, call the service; nothing else."""

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request, Response, WebSocket, status
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app import openapi_examples as examples
from app import streams
from app.apikeys.service import Principal
from app.cancellation import cancel_and_wait
from app.deps import (
    AppState,
    ReadKey,
    SessionDep,
    SettingsDep,
    StateDep,
    StorageDep,
    WriteKey,
    app_state,
    guard_websocket_key,
    websocket_principal,
)
from app.errors import (
    COMMON_ERRORS,
    AppError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    error_doc,
    is_outage,
    outage_detail,
)
from app.images import CONVERTED_CONTENT_TYPES, accept_image
from app.jobs import events as event_shapes
from app.jobs import service
from app.jobs.schemas import JobDetail, JobPage, JobSource
from app.jobs.tasks import TASKS, tasks_pattern
from app.limits import WS_CLOSE_TRY_AGAIN_LATER
from app.models import JobStatus
from app.schema_types import StorableText
from app.security import Scope

log = structlog.get_logger()
router = APIRouter(tags=["jobs"])

# WebSocket close codes: 4000 + the HTTP status they stand for.
WS_CLOSE_NOT_FOUND = 4404
WS_CLOSE_INVALID = 4422  # a malformed path parameter, as REST's 422
WS_CLOSE_UNAVAILABLE = 4503
# How long one blocking stream read lasts before the handler checks on the client again.
WS_READ_BLOCK_MS = 5000


ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    404: error_doc(
        "No such job (or not one of this key's jobs)",
        "not_found",
        "no job with id 092107a2-2956-457e-958f-19da952495df",
    ),
}


# A raw image body (`curl --data-binary @t1.jpg -H 'Content-Type: image/jpeg'`) is the image;
# a form carries it in its `image` field. The format is read from the bytes either way.
RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", *CONVERTED_CONTENT_TYPES)
TASKS_DESCRIPTION = (
    f"comma-separated, from {', '.join(TASKS)} (identify: faces matched against this "
    "key's people; implies faces); default faces"
)
# The task names, in the schema, from the one list the service checks against (which answers a
# wrong name with the list to choose from).
TASKS_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": TASKS_DESCRIPTION,
    "examples": ["faces,objects,qr"],
    "pattern": tasks_pattern(),
}
# Documented by hand: FastAPI describes one body type per route, and this one takes two.
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "multipart/form-data with the image in `image` (and `tasks`), or the "
        "image itself as the body with its Content-Type (tasks in the query)",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "JPEG, PNG or WebP",
                        },
                        "tasks": TASKS_SCHEMA,
                    },
                }
            },
            **{
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in RAW_IMAGE_TYPES
            },
        },
    }
}


@router.post(
    "/v1/images",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobDetail,
    summary="Upload an image (multipart, or the raw bytes as the body); returns a job",
    responses={
        **COMMON_ERRORS,
        200: {
            "model": JobDetail,
            "description": "With ?wait=, the job finished in time: full result inline",
            "content": {"application/json": {"example": examples.JOB_DONE}},
        },
        202: {
            "description": "Accepted; follow links.events or poll links.self",
            "content": {"application/json": {"example": examples.JOB_QUEUED}},
        },
        413: error_doc(
            "Body or image dimensions over the limit",
            "payload_too_large",
            "image is larger than the limit of 20971520 bytes",
        ),
        415: error_doc(
            "Not a JPEG, PNG, WebP, BMP, GIF or TIFF image (unsupported_image_type), or a body "
            "that is neither a form nor an image (unsupported_media_type)",
            "unsupported_image_type",
            "not a JPEG, PNG, WebP, BMP, GIF or TIFF image (unrecognised file signature)",
        ),
        422: error_doc(
            "Corrupt or truncated image, no `image` field, or unknown task",
            "invalid_image",
            "the JPEG data is truncated (the file ends early)",
        ),
    },
    openapi_extra=UPLOAD_BODY,
)
async def upload_image(
    request: Request,
    principal: WriteKey,
    state: StateDep,
    tasks: Annotated[
        str | None,
        Query(
            description=f"{TASKS_DESCRIPTION}. With a form, its `tasks` field wins",
            examples=["faces,objects,qr"],
            json_schema_extra={"pattern": tasks_pattern()},
        ),
    ] = None,
    wait: Annotated[
        float | None,
        Query(ge=0, allow_inf_nan=False, description="seconds to wait for the result (capped)"),
    ] = None,
) -> Any:
    settings, redis = state.settings, state.redis
    data, form_tasks = await _read_upload(request, limit_bytes=settings.api.max_upload_bytes)
    data, info = await accept_image(data, max_pixels=settings.api.max_image_pixels)
    job = await service.submit_upload(
        state.engine,
        redis,
        state.storage,
        settings,
        image=data,
        info=info,
        tasks=service.parse_tasks(form_tasks if form_tasks is not None else tasks),
        owner_id=principal.owner_id,
    )
    structlog.contextvars.bind_contextvars(job_id=str(job.id))
    # Debug: the request's own log line (app/ops/middleware.py) carries the job id already.
    log.debug("job_queued", bytes=len(data), tasks=job.tasks)
    if wait and await service.wait_for_job(
        redis, job.id, timeout_s=min(wait, settings.api.max_wait_s)
    ):
        async with state.sessionmaker() as session:
            detail = await service.get_job_detail(session, job.id, principal)
        return JSONResponse(detail.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    return service.job_detail(job, [])


async def _read_upload(request: Request, *, limit_bytes: int) -> tuple[bytes, str | None]:
    """The uploaded image's bytes (at most limit_bytes) and the form's `tasks` field (None for a
    raw body, or a form without it)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type in RAW_IMAGE_TYPES:
        return await _read_raw_body(request, limit_bytes=limit_bytes), None
    if media_type == "application/x-www-form-urlencoded":
        # What `curl --data-binary @photo.jpg` sends unless told otherwise; such a form cannot
        # hold a file, and "the form has no 'image' field" sent people looking for one.
        raise UnsupportedMediaType(
            "the body was sent as application/x-www-form-urlencoded, which cannot carry a file "
            "(curl --data-binary does that by default): add -H 'Content-Type: image/jpeg' (or "
            "image/png, image/webp, …) to send the image as the body, or send it as "
            "multipart/form-data (curl -F image=@photo.jpg)"
        )
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"send the image as multipart/form-data (field 'image') or as the raw body with "
            f"Content-Type {', '.join(RAW_IMAGE_TYPES)}; got "
            f"{media_type[:60] or 'no Content-Type'}"
        )
    form = await request.form()
    try:
        image = form.get("image")
        tasks = form.get("tasks")
        if image is None:
            raise InvalidInput("image: the form has no 'image' field (the image file)")
        if not isinstance(image, StarletteUploadFile):
            raise InvalidInput("image: the form's 'image' field must be a file, not text")
        if tasks is not None and not isinstance(tasks, str):
            raise InvalidInput("tasks: the form's 'tasks' field must be text, not a file")
        data = await image.read(limit_bytes + 1)
    finally:
        await form.close()
    if len(data) > limit_bytes:
        raise PayloadTooLarge(f"image is larger than the limit of {limit_bytes} bytes")
    return data, tasks


async def _read_raw_body(request: Request, *, limit_bytes: int) -> bytes:
    """The body, refused (413) as soon as it passes limit_bytes: never held whole beyond it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"image is larger than the limit of {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.get(
    "/v1/jobs",
    response_model=JobPage,
    responses={
        **COMMON_ERRORS,
        422: error_doc(
            "Invalid cursor, status, task, source or node_id",
            "invalid_request",
            "invalid cursor: pass back next_cursor from the previous page",
        ),
    },
    summary="List this key's jobs (every job for admin keys), newest first",
)
async def list_jobs(
    principal: ReadKey,
    session: SessionDep,
    settings: SettingsDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    task: Annotated[
        str | None,
        Query(
            description="only jobs that asked for this task",
            json_schema_extra={"enum": list(TASKS)},
        ),
    ] = None,
    source: Annotated[
        JobSource | None, Query(description="upload: uploaded images; node: node frames")
    ] = None,
    node_id: Annotated[uuid.UUID | None, Query(description="only this node's frames")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        StorableText | None,
        Query(description="next_cursor of the previous page (with the same filters)"),
    ] = None,
) -> JobPage:
    return await service.list_jobs(
        session,
        principal,
        status=status_filter,
        task=task,
        source=source,
        node_id=node_id,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobDetail,
    responses=ERRORS,
    summary="A job with its detections",
)
async def get_job(job_id: uuid.UUID, principal: ReadKey, session: SessionDep) -> JobDetail:
    return await service.get_job_detail(session, job_id, principal)


@router.get(
    "/v1/jobs/{job_id}/image",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
    summary="The uploaded image",
)
async def get_image(
    job_id: uuid.UUID,
    principal: ReadKey,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Response:
    """The route decides who may see the image; with accel_redirect_prefix set, nginx sends it."""
    job = await service.get_job(session, job_id, principal)
    if job.image_key is None or not storage.exists(job.image_key):
        raise NotFound(f"job {job_id} has no stored image (expired or never stored)")
    prefix = settings.api.accel_redirect_prefix
    if prefix is not None:
        return Response(
            media_type=job.content_type, headers={"X-Accel-Redirect": prefix + job.image_key}
        )
    try:
        return Response(storage.get(job.image_key), media_type=job.content_type)
    except FileNotFoundError:  # swept between the check and the read
        raise NotFound(f"job {job_id} has no stored image (expired or never stored)") from None


@router.get(
    "/v1/jobs/{job_id}/processed-image",
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"image/jpeg": {}}},
        409: error_doc(
            "Job not finished",
            "conflict",
            "job 092107a2-2956-457e-958f-19da952495df is running; the processed image exists "
            "once it is done",
        ),
    },
    summary="JPEG with boxes, landmarks and labels drawn",
)
async def get_processed_image(
    job_id: uuid.UUID,
    principal: ReadKey,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> Response:
    """Drawn from the stored image and the detections on the first request, then cached.
    404 for a node frame that was not stored, an upload past its TTL, or a failed job."""
    jpeg = await service.get_processed_image(
        session,
        storage,
        job_id,
        principal,
        max_pixels=settings.api.max_image_pixels,
        target_side_px=settings.decode.target_side_px,
    )
    return Response(jpeg, media_type="image/jpeg")


@router.delete(
    "/v1/jobs/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
    summary="Delete a job, its image and its detections",
)
async def delete_job(
    job_id: uuid.UUID, principal: WriteKey, session: SessionDep, storage: StorageDep
) -> Response:
    await service.delete_job(session, storage, job_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.websocket("/v1/jobs/{job_id}/events")
async def job_events(websocket: WebSocket, job_id: str) -> None:
    """Replay the job's events so far, stream new ones, close (1000) after the final status.

    Needs a read key (X-API-Key header or ?api_key=). Closes with 4422 for a job id that is not
    a UUID, 4401/4403 for a bad key, 4404 for an unknown job (or another key's), 1013 when the
    server has no WebSocket slot left, 4503 when Postgres or Redis is unreachable.
    """
    state = app_state(websocket)
    try:
        # Parsed here, not by the path converter: a refused handshake (HTTP 403) would read as
        # an authentication failure, and a browser cannot see why.
        parsed_id = uuid.UUID(job_id)
    except ValueError:
        await websocket.accept()
        await websocket.close(
            code=WS_CLOSE_INVALID, reason=f"job_id is not a UUID: {job_id[:60]!r}"[:120]
        )
        return

    async def serve(principal: Principal) -> None:
        async with state.sessionmaker() as session:
            try:
                job = await service.get_job_detail(session, parsed_id, principal)
            except NotFound as exc:
                await websocket.close(code=WS_CLOSE_NOT_FOUND, reason=exc.detail)
                return

        async def send_events() -> None:
            events = await streams.read_job_events(state.redis, parsed_id)
            if not events and job.status.finished:  # the event stream expired: use Postgres
                for event in event_shapes.snapshot(job):
                    await websocket.send_json(event)
                return
            await websocket.send_json(event_shapes.queued(job))  # the stream starts after it
            # A finished job's result is sent as Postgres has it now, not as the stream kept it
            # when the job finished: a person deleted since, or a face placed by hand, changed
            # it (a deleted person's name must not be replayed for the stream's hour).
            current = job.model_dump(mode="json") if job.status.finished else None
            after = b"0"
            while True:
                for entry_id, event in events:
                    after = entry_id
                    if current is not None and event.get("type") == "result":
                        event = {**event, "job": current}
                    await websocket.send_json(event)
                    if streams.is_terminal(event):
                        return
                events = await streams.read_job_events(
                    state.redis, parsed_id, after=after, block_ms=WS_READ_BLOCK_MS
                )
                if not events and not await service.job_exists(state.sessionmaker, parsed_id):
                    # Deleted before it finished: no final event will ever come.
                    await websocket.close(
                        code=WS_CLOSE_NOT_FOUND, reason=f"job {parsed_id} was deleted"
                    )
                    return

        await _serve_until_disconnect(websocket, send_events)

    await _with_websocket(websocket, state, Scope.read, serve)


@router.websocket("/v1/ws")
async def firehose(websocket: WebSocket) -> None:
    """Every finished job as it finishes: `result` events (with links) and `error` events.

    A non-admin key sees only its own jobs' events. A client that falls more than
    `ws_max_queued_events` behind is closed with code 1013 (try again later).
    """
    state: AppState = app_state(websocket)

    async def serve(principal: Principal) -> None:
        owner = None if principal.sees_every_job else str(principal.owner_id)
        subscription = state.firehose.subscribe(owner=owner)

        async def send_events() -> None:
            while (text := await subscription.queue.get()) is not None:
                await websocket.send_text(text)
            await websocket.close(
                code=WS_CLOSE_TRY_AGAIN_LATER, reason="client too slow; reconnect"
            )

        try:
            await _serve_until_disconnect(websocket, send_events)
        finally:
            state.firehose.unsubscribe(subscription)

    await _with_websocket(websocket, state, Scope.read, serve)


async def _with_websocket(
    websocket: WebSocket,
    state: AppState,
    scope: Scope,
    serve: Callable[[Principal], Coroutine[Any, Any, None]],
) -> None:
    """Authenticate, accept, serve (app.limits.WebSocketLimit has already counted the socket).

    The handshake completes only once the connect is counted and the key checked, so a client
    that sees the socket open was let in (and its next connect is judged after this one).
    Errors are reported as close codes (4000 + HTTP status) with the error detail as reason,
    after an accept: a browser cannot read the body of a refused handshake.
    """
    try:
        try:
            principal = await websocket_principal(state, websocket, scope)
        except AppError as exc:
            await websocket.accept()
            await websocket.close(code=4000 + exc.status, reason=exc.detail[:120])
            return
        await websocket.accept()
        # The key is re-checked for as long as the socket is open: revoked or expired → 4401.
        serving = asyncio.create_task(serve(principal))
        guard = asyncio.create_task(guard_websocket_key(state, websocket, principal))
        try:
            await asyncio.wait({serving, guard}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((serving, guard))
        if guard.done() and not guard.cancelled() and guard.exception() is None:
            revoked = guard.result()
            log.info("websocket_credentials_invalid", status=revoked.status, detail=revoked.detail)
            with contextlib.suppress(Exception):  # the client may be gone already
                await websocket.close(code=4000 + revoked.status, reason=revoked.detail[:120])
            return
        if not serving.cancelled() and (error := serving.exception()) is not None:
            raise error
        if guard.done() and not guard.cancelled() and (error := guard.exception()) is not None:
            raise error
    except Exception as exc:
        if not is_outage(exc):
            raise
        log.warning("dependency_unavailable", error=repr(exc))
        with contextlib.suppress(Exception):  # the client may be gone already
            if websocket.application_state == WebSocketState.CONNECTING:
                await websocket.accept()  # the outage struck authentication
            await websocket.close(code=WS_CLOSE_UNAVAILABLE, reason=outage_detail(exc)[:120])


async def _serve_until_disconnect(
    websocket: WebSocket, send_events: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Run the sender until it finishes or the client leaves, whichever comes first.

    A blocked stream read would not notice a client that left; the receiver task does.
    """

    async def until_disconnect() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    sender = asyncio.create_task(send_events())
    watcher = asyncio.create_task(until_disconnect())
    try:
        done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler is cancelled (its key was revoked)
        await cancel_and_wait((sender, watcher))
    if sender in done:
        try:
            sender.result()
            if websocket.application_state == WebSocketState.CONNECTED:
                await websocket.close(code=1000)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left mid-send
