"""CompreFace's REST API under /api/v1 (exadel-inc/CompreFace's RecognizeController,
DetectionController, VerifyController, SubjectController, EmbeddingController). Parse,
authorize, call the services; nothing else.

Every response of these routes is JSON with a Content-Length; every error is CompreFace's
`{"message", "code"}` (CompreFaceRoute renders Lookout's errors in that shape). Images come as
multipart `file` (`source_image` / `target_image` for verification) or as JSON base64 under
the same names.
"""

import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app import openapi_examples as examples
from app.apikeys.service import ANONYMOUS_ADMIN, Principal
from app.commits import commit
from app.compat.compreface import service
from app.compat.compreface.schemas import (
    CompreFaceErrorOut,
    Deleted,
    DetectOut,
    EmbeddingRecognizeOut,
    EmbeddingsIn,
    EmbeddingsVerifyIn,
    EmbeddingVerifyOut,
    Example,
    ExamplePage,
    FaceVerifyOut,
    RecognizeOut,
    SubjectIn,
    SubjectList,
    SubjectOut,
    Updated,
    VerificationOut,
)
from app.compat.compreface.service import Code, CompreFaceError
from app.deps import (
    RedisDep,
    SessionDep,
    StateDep,
    StorageDep,
    authenticate_client,
    client_address,
)
from app.errors import (
    UNAVAILABLE_RETRY_AFTER_S,
    AppError,
    PayloadTooLarge,
    Unauthorized,
    is_outage,
    outage_detail,
)
from app.gallery import service as gallery
from app.limits import enforce_rate_limit
from app.models import Job, JobPurpose
from app.security import Scope
from app.settings import Settings

log = structlog.get_logger()


def error_response(exc: CompreFaceError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class CompreFaceRoute(APIRoute):
    """Renders every error of a route in CompreFace's shape: its own errors, Lookout's
    AppErrors (auth, rate limit, image checks, worker timeouts), request validation errors,
    dependency outages (503) and, for a bug, CompreFace's "Something went wrong" (500)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def compreface_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return error_response(service.translate(exc))
            except RequestValidationError as exc:
                return error_response(service.invalid_request(exc.errors()))
            except StarletteHTTPException as exc:  # e.g. a multipart body that cannot be parsed
                return error_response(
                    CompreFaceError(Code.UNDEFINED, str(exc.detail), status=exc.status_code)
                )
            except ClientDisconnect:
                raise  # the client left mid-body: nobody to answer (app/errors.py logs it)
            except Exception as exc:
                if is_outage(exc):
                    log.warning("dependency_unavailable", error=repr(exc))
                    return error_response(
                        CompreFaceError(
                            Code.FACES_SERVICE_EXCEPTION,
                            outage_detail(exc),
                            status=503,
                            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
                        )
                    )
                log.exception("compreface_error", path=request.url.path)
                return error_response(
                    CompreFaceError(
                        Code.UNDEFINED, "Something went wrong, please try again", status=500
                    )
                )

        return compreface_handler


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": CompreFaceErrorOut, "description": description}
    for code, description in {
        400: "CompreFace error: 20 missing x-api-key, 21 unreadable image, 26 invalid value, "
        "28 no face found, 31 more than one face, 33 missing parameter, 34 missing file, "
        "36 bad embedding, 43 subject exists",
        403: "1: the API key lacks the scope",
        413: "21: an image (or the body) over the size limit",
        404: "10 unknown API key, 42 subject not found, 44 image (face example) not found",
        429: "0: rate limit exceeded; see Retry-After",
        503: "41: Postgres or Redis unreachable; see Retry-After",
        504: "41: no worker finished the image in time",
    }.items()
}

router = APIRouter(
    prefix="/api/v1",
    tags=["compreface"],
    route_class=CompreFaceRoute,
    responses=ERRORS,
)

API_KEY = Annotated[
    str | None,
    Header(alias="x-api-key", description="a Lookout API key (`lk_…`), as CompreFace's key"),
]


def _principal(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    async def principal(request: Request, state: StateDep, x_api_key: API_KEY = None) -> Principal:
        settings = state.settings
        if not settings.auth.enabled:
            return ANONYMOUS_ADMIN
        if not x_api_key:
            raise CompreFaceError(Code.MISSING_REQUEST_HEADER, "Missing header: x-api-key")
        try:
            # As every /v1 call: an address past its failed-authentication limit gets 429.
            caller = await authenticate_client(state, x_api_key, client_address(request))
        except Unauthorized as exc:
            raise CompreFaceError(
                Code.MODEL_NOT_FOUND,
                f"Recognition service with this API Key not found: {exc.detail}",
            ) from exc
        await enforce_rate_limit(state.redis, caller, settings.auth)
        if not scope.granted_by(caller.scopes):
            raise CompreFaceError(
                Code.APP_ACCESS_DENIED, f"this API key lacks the {scope.value!r} scope"
            )
        return caller

    return principal


ReadKey = Annotated[Principal, Depends(_principal(Scope.read))]
WriteKey = Annotated[Principal, Depends(_principal(Scope.write))]


# --- query parameters (CompreFace's names and defaults) ---------------------------------------

Limit = Annotated[int, Query(ge=0, description="biggest faces first; 0 = every face", examples=[0])]
DetProb = Annotated[
    float | None,
    Query(ge=0, le=1, description="leave out faces the detector scored lower", examples=[0.8]),
]
Plugins = Annotated[
    str | None,
    Query(description="comma-separated: age, gender, landmarks, calculator (embedding)"),
]
# At most MAX_PREDICTIONS: a search wider than that is no use to anyone, and an unbounded count
# reached Postgres as a LIMIT past int64 (a 500).
PredictionCount = Annotated[
    int, Query(ge=1, le=service.MAX_PREDICTIONS, description="subjects per face, best first")
]
StatusFlag = Annotated[
    bool, Query(alias="status", description="add execution_time and plugins_versions")
]


def _options(
    settings: Settings,
    limit: int,
    det_prob_threshold: float | None,
    face_plugins: str | None,
    status_: bool,
    count: int = 1,
) -> service.Options:
    return service.Options(
        limit=limit,
        det_prob_threshold=service.detector_threshold(det_prob_threshold, settings.compreface),
        plugins=service.parse_plugins(face_plugins),
        status=status_,
        prediction_count=count,
    )


def _image_body(*fields: str) -> dict[str, Any]:
    """The OpenAPI request body of an image endpoint: multipart files or JSON base64."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": list(fields),
                        "properties": {f: {"type": "string", "format": "binary"} for f in fields},
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": list(fields),
                        "properties": {f: {"type": "string", "format": "byte"} for f in fields},
                    },
                    "example": {f: "<base64 of a JPEG>" for f in fields},
                },
            },
        }
    }


async def _read_images(
    request: Request, settings: Settings, fields: tuple[str, ...]
) -> list[gallery.Upload]:
    limit = settings.api.max_upload_bytes
    uploads = []
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        async with request.form(max_files=8, max_fields=32) as form:
            for field in fields:
                part = form.get(field)
                if not isinstance(part, UploadFile):
                    raise CompreFaceError(
                        Code.MISSING_REQUEST_PART, f"Required part {field} is missing"
                    )
                data = await part.read(limit + 1)
                if len(data) > limit:
                    raise PayloadTooLarge(f"{field} is larger than the limit of {limit} bytes")
                uploads.append(gallery.Upload(name=part.filename or field, data=data))
        return uploads
    try:
        body = await request.json()
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[…" nested too deep
        raise CompreFaceError(
            Code.MISSING_REQUEST_PART,
            f"send the image as multipart/form-data (part {fields[0]}) or as JSON "
            f'{{"{fields[0]}": "<base64>"}}',
        ) from exc
    if not isinstance(body, dict):
        raise CompreFaceError(Code.EMPTY_REQUIRED_FIELD, f"Field {fields[0]} cannot be empty")
    for field in fields:
        data = service.decode_base64(body.get(field), field)
        if len(data) > limit:
            raise PayloadTooLarge(f"{field} is larger than the limit of {limit} bytes")
        uploads.append(gallery.Upload(name=field, data=data))
    return uploads


async def _create_jobs(
    request: Request,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: Settings,
    principal: Principal,
    fields: tuple[str, ...],
    tasks: tuple[str, ...],
    purpose: JobPurpose,
) -> tuple[list[gallery.Upload], list[Job]]:
    """The images' jobs, queued for the workers at the next commit."""
    uploads = await _read_images(request, settings, fields)
    created = await gallery.create_jobs(
        session,
        redis,
        storage,
        settings,
        uploads,
        tasks=tasks,
        owner_id=principal.owner_id,
        purpose=purpose,
    )
    return uploads, created


async def _through_workers(
    request: Request,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: Settings,
    principal: Principal,
    fields: tuple[str, ...],
    tasks: tuple[str, ...],
    purpose: JobPurpose,
) -> list[gallery.JobFaces]:
    """Recognize, detect, verify: their jobs are kept, marked with `purpose` (as the native
    routes: app.gallery.service's module docstring)."""
    uploads, created = await _create_jobs(
        request, session, redis, storage, settings, principal, fields, tasks, purpose
    )
    # The commit point, reached now: the workers must find the rows, and the route waits.
    await commit(session)
    return await gallery.run_jobs(session, redis, settings, uploads, created)


# --- recognition, detection, verification ------------------------------------------------------


@router.post(
    "/recognition/recognize",
    response_model=RecognizeOut,
    response_model_exclude_none=True,
    summary="Recognize faces: each face with its nearest distinct subjects",
    openapi_extra=_image_body("file"),
)
async def recognize(
    request: Request,
    principal: WriteKey,
    state: StateDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    limit: Limit = 0,
    prediction_count: PredictionCount = 1,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = None,
    status_: StatusFlag = False,
    detect_faces: Annotated[
        bool,
        Query(
            description="false: no face detector runs; the image is taken as one face, already "
            "cropped (its box the whole image, probability 1.0)"
        ),
    ] = True,
) -> RecognizeOut:
    options = _options(
        state.settings, limit, det_prob_threshold, face_plugins, status_, prediction_count
    )
    [result] = await _through_workers(
        request,
        session,
        redis,
        storage,
        state.settings,
        principal,
        ("file",),
        ("faces" if detect_faces else "face_crop", "identify"),
        JobPurpose.identify,
    )
    return await service.recognize(session, result, options, principal.owner_id)


@router.post(
    "/detection/detect",
    response_model=DetectOut,
    response_model_exclude_none=True,
    summary="Detect faces (box, and landmarks / embedding / age / gender on request)",
    openapi_extra=_image_body("file"),
)
async def detect(
    request: Request,
    principal: WriteKey,
    state: StateDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    limit: Limit = 0,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = None,
    status_: StatusFlag = False,
) -> DetectOut:
    options = _options(state.settings, limit, det_prob_threshold, face_plugins, status_)
    [result] = await _through_workers(
        request,
        session,
        redis,
        storage,
        state.settings,
        principal,
        ("file",),
        ("faces",),
        JobPurpose.detect,
    )
    return service.detect(result, options)


@router.post(
    "/verification/verify",
    response_model=VerificationOut,
    response_model_exclude_none=True,
    summary="Compare the one face of source_image with every face of target_image",
    openapi_extra=_image_body("source_image", "target_image"),
)
async def verify(
    request: Request,
    principal: WriteKey,
    state: StateDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    limit: Limit = 0,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = None,
    status_: StatusFlag = False,
) -> VerificationOut:
    options = _options(state.settings, limit, det_prob_threshold, face_plugins, status_)
    source, target = await _through_workers(
        request,
        session,
        redis,
        storage,
        state.settings,
        principal,
        ("source_image", "target_image"),
        ("faces",),
        JobPurpose.compare,
    )
    return service.verification(source, target, options)


# --- subjects ----------------------------------------------------------------------------------


@router.post(
    "/recognition/subjects",
    status_code=status.HTTP_201_CREATED,
    response_model=SubjectOut,
    summary="Create a subject (a Lookout person of this key)",
)
async def create_subject(body: SubjectIn, principal: WriteKey, session: SessionDep) -> SubjectOut:
    return await service.create_subject(session, principal.owner_id, body.subject)


@router.get("/recognition/subjects", response_model=SubjectList, summary="List subject names")
async def list_subjects(principal: ReadKey, session: SessionDep) -> SubjectList:
    return await service.list_subjects(session, principal.owner_id)


@router.put(
    "/recognition/subjects/{subject}",
    response_model=Updated,
    summary="Rename a subject; to an existing name, the two subjects are merged",
)
async def rename_subject(
    subject: str,
    principal: WriteKey,
    session: SessionDep,
    state: StateDep,
    body: Annotated[dict[str, Any], Body(examples=[{"subject": "new name"}])],
) -> Updated:
    new = body.get("subject")
    return await service.rename_subject(
        session, state.settings, principal, subject, new if isinstance(new, str) else None
    )


@router.delete(
    "/recognition/subjects/{subject}",
    response_model=SubjectOut,
    summary="Delete a subject and all of its face examples",
)
async def delete_subject(
    subject: str, principal: WriteKey, session: SessionDep, storage: StorageDep
) -> SubjectOut:
    return await service.delete_subject(session, storage, principal.owner_id, subject)


@router.delete(
    "/recognition/subjects",
    response_model=Deleted,
    summary="Delete every subject of this key (and their face examples)",
)
async def delete_all_subjects(
    principal: WriteKey, session: SessionDep, storage: StorageDep
) -> Deleted:
    return await service.delete_all_subjects(session, storage, principal.owner_id)


# --- face examples -----------------------------------------------------------------------------


@router.post(
    "/recognition/faces",
    status_code=status.HTTP_201_CREATED,
    response_model=Example,
    summary="Add a face example to a subject (created if new); the image must show one face",
    openapi_extra=_image_body("file"),
)
async def add_example(
    request: Request,
    principal: WriteKey,
    state: StateDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    subject: Annotated[str | None, Query(description="the subject's name (required)")] = None,
    det_prob_threshold: DetProb = None,
) -> Example:
    name = service.subject_param(subject)
    settings = state.settings
    uploads, created = await _create_jobs(
        request,
        session,
        redis,
        storage,
        settings,
        principal,
        ("file",),
        ("faces",),
        JobPurpose.enroll,
    )
    # As native enrollment: a refused example keeps nothing (no job, image, embedding or new
    # subject), an accepted one only its gallery face.
    async with gallery.discarded_when_done(session, storage, created):
        # The commit point, reached now: the workers must find the rows, and the route waits.
        await commit(session)
        [result] = await gallery.run_jobs(session, redis, settings, uploads, created)
        return await service.add_example(
            session,
            settings,
            principal.owner_id,
            name,
            result,
            service.detector_threshold(det_prob_threshold, settings.compreface),
        )


@router.get(
    "/recognition/faces",
    response_model=ExamplePage,
    summary="List face examples (of one subject, or all), in pages",
)
async def list_examples(
    principal: ReadKey,
    session: SessionDep,
    subject: str | None = None,
    # Text, not int: CompreFace corrects a bad page or size rather than refusing it
    # (service.page_request), and so must its clients' calls here.
    page: Annotated[
        str | None, Query(description="from 0; not a number or negative: 0", examples=["0"])
    ] = None,
    size: Annotated[
        str | None,
        Query(
            description=f"default {service.DEFAULT_PAGE_SIZE}, at most {service.MAX_PAGE_SIZE}; "
            f"under 1 or not a number: {service.DEFAULT_PAGE_SIZE}",
            examples=["20"],
        ),
    ] = None,
) -> ExamplePage:
    number, per_page = service.page_request(page, size)
    return await service.list_examples(
        session, principal.owner_id, subject=subject, page=number, size=per_page
    )


@router.delete(
    "/recognition/faces",
    response_model=Deleted,
    summary="Delete a subject's examples (and the subject); without subject, every one",
)
async def delete_examples_of(
    principal: WriteKey, session: SessionDep, storage: StorageDep, subject: str | None = None
) -> Deleted:
    return await service.delete_examples_of(session, storage, principal.owner_id, subject)


@router.post(
    "/recognition/faces/delete",
    response_model=list[Example],
    responses={200: {"content": {"application/json": {"example": [examples.COMPREFACE_EXAMPLE]}}}},
    summary="Delete several face examples by id (unknown ids are ignored)",
)
async def delete_examples(
    image_ids: Annotated[
        list[uuid.UUID], Body(examples=[["6b135f5b-a365-4522-b1f1-4c9ac2dd0728"]])
    ],
    principal: WriteKey,
    session: SessionDep,
) -> list[Example]:
    return await service.delete_examples(session, principal.owner_id, image_ids)


@router.delete(
    "/recognition/faces/{image_id}",
    response_model=Example,
    summary="Delete one face example",
)
async def delete_example(image_id: uuid.UUID, principal: WriteKey, session: SessionDep) -> Example:
    return await service.delete_example(session, principal.owner_id, image_id)


@router.post(
    "/recognition/faces/{image_id}/verify",
    response_model=FaceVerifyOut,
    response_model_exclude_none=True,
    summary="Compare every face of the image with one face example",
    openapi_extra=_image_body("file"),
)
async def verify_with_example(
    image_id: Annotated[uuid.UUID, Path()],
    request: Request,
    principal: WriteKey,
    state: StateDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    limit: Limit = 0,
    det_prob_threshold: DetProb = None,
    face_plugins: Plugins = None,
    status_: StatusFlag = False,
) -> FaceVerifyOut:
    options = _options(state.settings, limit, det_prob_threshold, face_plugins, status_)
    await service.get_example(session, image_id, principal.owner_id)  # 404 before any job
    [result] = await _through_workers(
        request,
        session,
        redis,
        storage,
        state.settings,
        principal,
        ("file",),
        ("faces",),
        JobPurpose.compare,
    )
    return await service.verify_with_example(session, result, image_id, options, principal.owner_id)


# --- embeddings --------------------------------------------------------------------------------


@router.post(
    "/recognition/embeddings/recognize",
    response_model=EmbeddingRecognizeOut,
    summary="Recognize embeddings (e.g. from face_plugins=calculator) against the subjects",
)
async def recognize_embeddings(
    body: EmbeddingsIn,
    principal: ReadKey,
    session: SessionDep,
    prediction_count: PredictionCount = 1,
) -> EmbeddingRecognizeOut:
    return await service.recognize_embeddings(
        session, principal.owner_id, body.embeddings, prediction_count
    )


@router.post(
    "/recognition/embeddings/faces/{image_id}/verify",
    response_model=EmbeddingVerifyOut,
    summary="Compare embeddings with one face example",
)
async def verify_embeddings_with_example(
    image_id: uuid.UUID, body: EmbeddingsIn, principal: ReadKey, session: SessionDep
) -> EmbeddingVerifyOut:
    return await service.verify_embeddings_with_example(
        session, principal.owner_id, image_id, body.embeddings
    )


@router.post(
    "/verification/embeddings/verify",
    response_model=EmbeddingVerifyOut,
    summary="Compare a source embedding with target embeddings",
)
async def verify_embeddings(body: EmbeddingsVerifyIn, principal: ReadKey) -> EmbeddingVerifyOut:
    return service.verify_embeddings(body.source, body.targets)
