"""HTTP and WebSocket routes for jobs. Parse, authorize, call the service; nothing else."""

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, File, Form, Query, Response, UploadFile, WebSocket, status
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from app import streams
from app.deps import AppState, RedisDep, SessionDep, SettingsDep, StorageDep, get_state
from app.errors import Conflict, NotFound, PayloadTooLarge
from app.images import inspect_image
from app.jobs import service
from app.jobs.schemas import JobDetail, JobPage
from app.models import JobStatus

log = structlog.get_logger()
router = APIRouter(tags=["jobs"])

# WebSocket close codes: 4000 + the HTTP status they stand for.
WS_CLOSE_NOT_FOUND = 4404
# How long one blocking stream read lasts before the handler checks on the client again.
WS_READ_BLOCK_MS = 5000

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No such job",
        "content": {
            "application/json": {"example": {"error": "not_found", "detail": "no job with id …"}}
        },
    },
}


@router.post(
    "/v1/images",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobDetail,
    summary="Upload an image; returns a job",
    responses={
        200: {"description": "With ?wait=, the job finished in time: full result inline"},
        202: {"description": "Accepted; follow links.events or poll links.self"},
        413: {"description": "Body or image dimensions over the limit"},
        415: {"description": "Not a JPEG, PNG or WebP image"},
        422: {"description": "Corrupt or truncated image, or unknown task"},
    },
)
async def upload_image(
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP")],
    tasks: Annotated[
        str | None, Form(description="comma-separated; default faces", examples=["faces"])
    ] = None,
    wait: Annotated[
        float | None, Query(ge=0, description="seconds to wait for the result (capped)")
    ] = None,
) -> Any:
    data = await image.read(settings.api.max_upload_bytes + 1)
    if len(data) > settings.api.max_upload_bytes:
        raise PayloadTooLarge(
            f"image is larger than the limit of {settings.api.max_upload_bytes} bytes"
        )
    info = inspect_image(data, max_pixels=settings.api.max_image_pixels)
    job = await service.create_job(
        session, storage, image=data, info=info, tasks=service.parse_tasks(tasks)
    )
    await session.commit()  # before XADD: the worker that gets the message must find the row
    await service.enqueue_job(
        redis,
        job,
        jobs_maxlen=settings.streams.jobs_maxlen,
        events_ttl_s=settings.streams.job_events_ttl_s,
    )
    log.info("job_queued", job_id=str(job.id), bytes=len(data), tasks=job.tasks)
    if wait and await service.wait_for_job(
        redis, job.id, timeout_s=min(wait, settings.api.max_wait_s)
    ):
        detail = await service.get_job_detail(session, job.id)
        return JSONResponse(detail.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    return service.job_detail(job, [])


@router.get("/v1/jobs", response_model=JobPage, summary="List jobs, newest first")
async def list_jobs(
    session: SessionDep,
    settings: SettingsDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JobPage:
    return await service.list_jobs(session, status=status_filter, limit=limit, cursor=cursor)


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobDetail,
    responses=ERRORS,
    summary="A job with its detections",
)
async def get_job(job_id: uuid.UUID, session: SessionDep) -> JobDetail:
    return await service.get_job_detail(session, job_id)


@router.get(
    "/v1/jobs/{job_id}/image",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
    summary="The uploaded image",
)
async def get_image(
    job_id: uuid.UUID, session: SessionDep, storage: StorageDep, settings: SettingsDep
) -> Response:
    """The route decides who may see the image; with accel_redirect_prefix set, nginx sends it."""
    job = await service.get_job(session, job_id)
    if job.image_key is None or not storage.exists(job.image_key):
        raise NotFound(f"job {job_id} has no stored image")
    prefix = settings.api.accel_redirect_prefix
    if prefix is not None:
        return Response(
            media_type=job.content_type, headers={"X-Accel-Redirect": prefix + job.image_key}
        )
    return Response(storage.get(job.image_key), media_type=job.content_type)


@router.get(
    "/v1/jobs/{job_id}/processed-image",
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"image/jpeg": {}}},
        409: {"description": "Job not finished"},
    },
    summary="JPEG with boxes, landmarks and labels drawn",
)
async def get_processed_image(
    job_id: uuid.UUID, session: SessionDep, storage: StorageDep
) -> Response:
    job = await service.get_job(session, job_id)
    if not job.status.finished:
        raise Conflict(f"job {job_id} is {job.status}; the processed image exists once it is done")
    if job.processed_image_key is None or not storage.exists(job.processed_image_key):
        raise NotFound(f"job {job_id} has no processed image")
    return Response(storage.get(job.processed_image_key), media_type="image/jpeg")


@router.delete(
    "/v1/jobs/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
    summary="Delete a job, its image and its detections",
)
async def delete_job(job_id: uuid.UUID, session: SessionDep, storage: StorageDep) -> Response:
    await service.delete_job(session, storage, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.websocket("/v1/jobs/{job_id}/events")
async def job_events(websocket: WebSocket, job_id: uuid.UUID) -> None:
    """Replay the job's events so far, stream new ones, close (1000) after the final status.

    An unknown job closes with code 4404.
    """
    state = get_state(websocket)
    await websocket.accept()
    async with state.sessionmaker() as session:
        try:
            job = await service.get_job_detail(session, job_id)
        except NotFound as exc:
            await websocket.close(code=WS_CLOSE_NOT_FOUND, reason=exc.detail)
            return

    async def send_events() -> None:
        events = await streams.read_job_events(state.redis, job_id)
        if not events and job.status.finished:  # the event stream expired: answer from Postgres
            for event in service.event_snapshot(job):
                await websocket.send_json(event)
            return
        after = b"0"
        while True:
            for entry_id, event in events:
                after = entry_id
                await websocket.send_json(event)
                if streams.is_terminal(event):
                    return
            events = await streams.read_job_events(
                state.redis, job_id, after=after, block_ms=WS_READ_BLOCK_MS
            )

    await _serve_until_disconnect(websocket, send_events)


@router.websocket("/v1/ws")
async def firehose(websocket: WebSocket) -> None:
    """Every finished job as it finishes: `result` events (with links) and `error` events."""
    state: AppState = get_state(websocket)
    await websocket.accept()

    async def send_events() -> None:
        after = b"$"
        while True:
            for entry_id, event in await streams.read_firehose(
                state.redis, after=after, block_ms=WS_READ_BLOCK_MS
            ):
                after = entry_id
                await websocket.send_json(event)

    await _serve_until_disconnect(websocket, send_events)


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
    done, pending = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if sender in done:
        try:
            sender.result()
            await websocket.close(code=1000)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left mid-send
