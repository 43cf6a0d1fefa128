"""HTTP routes of the DeepStack / CodeProject.AI vision API. Parse, authorize, call the service.

Multipart (or url-encoded) form posts, as DeepStack's server took them; the key comes in the
`api_key` field or Lookout's X-API-Key header. Every answer is JSON with a Content-Length, and
every error is DeepStack's `{success: false, error, duration}` (envelope.DeepStackRoute).
"""

from typing import Any

from fastapi import APIRouter, Request

from app.apikeys.service import Principal
from app.commits import commit
from app.compat.deepstack import service
from app.compat.deepstack.envelope import (
    API_KEY_FIELD,
    MAX_PREDICTIONS,
    DeepStackRoute,
    FormDep,
    ReadCaller,
    WriteCaller,
    duration_s,
    error_responses,
    max_predictions,
    read_image,
    read_upload,
)
from app.compat.deepstack.errors import DeepStackError
from app.compat.deepstack.schemas import (
    CodeProjectAlprOut,
    DeepStackCustomModelsOut,
    DeepStackDeleteOut,
    DeepStackDetectionOut,
    DeepStackFaceDetectionOut,
    DeepStackFaceListOut,
    DeepStackMatchOut,
    DeepStackRecognitionOut,
    DeepStackRegisterOut,
)
from app.deps import RedisDep, SessionDep, SettingsDep, StorageDep
from app.gallery import service as gallery
from app.gallery.service import JobFaces, Upload
from app.models import JobPurpose
from app.settings import Settings

router = APIRouter(tags=["DeepStack / CodeProject.AI"], route_class=DeepStackRoute)

IMAGE_ERRORS = error_responses(400, 401, 403, 413, 429, 503, 504)
GALLERY_ERRORS = error_responses(400, 401, 403, 429, 503)

_KEY = {
    "type": "string",
    "description": "a Lookout API key (or send it in X-API-Key)",
    "example": "lk_7a0e0dd72f49_N6w_3qr7ubqt12qsF6kblhI5VxScqkYPyx5vboB6IHg",
}
_IMAGE = {"type": "string", "format": "binary", "description": "JPEG, PNG, WebP, BMP, GIF or TIFF"}


def _min_confidence(default: float, what: str) -> dict[str, Any]:
    return {
        "type": "number",
        "maximum": 1,
        "default": default,
        "description": f"keep {what} at or above this (default {default}, as DeepStack)",
    }


def _form(
    properties: dict[str, Any],
    required: list[str],
    *,
    any_files: bool = False,
    body_required: bool = True,
) -> dict[str, Any]:
    """openapi_extra for a form body (the route reads the form itself, DeepStack-style)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if any_files:
        schema["additionalProperties"] = _IMAGE
    media = {"schema": schema}
    content = {"multipart/form-data": media}
    if not any(p.get("format") == "binary" for p in properties.values()) and not any_files:
        content["application/x-www-form-urlencoded"] = media
    return {"requestBody": {"required": body_required, "content": content}}


# A route whose only field is the key (a list): its body may be empty.
_KEY_ONLY_FORM = _form({API_KEY_FIELD: _KEY}, [], body_required=False)


async def _run(
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: Settings,
    caller: Principal,
    images: list[Upload],
    tasks: tuple[str, ...],
    purpose: JobPurpose,
) -> list[JobFaces]:
    created = await service.start_jobs(
        session, redis, storage, settings, images, tasks=tasks, owner=caller, purpose=purpose
    )
    # The commit point, reached now: the workers must find the rows, and the route waits.
    await commit(session)
    return await service.run_jobs(session, redis, settings, images, created)


# Custom models, as CodeProject.AI's object detectors serve them (Blue Iris lists them; the
# deepstack-python client and Home Assistant's deepstack_object post to one by name). Lookout
# has one object model, the workers' object pack; `general` is CodeProject.AI's name for its
# general-purpose model, the one /v1/vision/detection runs.
GENERAL_MODEL = "general"


@router.get("/v1/vision/custom/list", include_in_schema=False)
@router.post(
    "/v1/vision/custom/list",
    response_model=DeepStackCustomModelsOut,
    responses=GALLERY_ERRORS,
    summary="CodeProject.AI: the custom object models (Blue Iris lists them)",
    openapi_extra=_KEY_ONLY_FORM,
)
async def custom_models(
    request: Request, caller: ReadCaller, settings: SettingsDep
) -> DeepStackCustomModelsOut:
    return DeepStackCustomModelsOut(
        models=[settings.models.object_pack], duration=duration_s(request)
    )


_DETECTION_FORM = _form(
    {"image": _IMAGE, "min_confidence": _min_confidence(0.4, "objects"), API_KEY_FIELD: _KEY},
    ["image"],
)
_MAX_PREDICTIONS_PARAM = {
    "name": MAX_PREDICTIONS,
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "at most this many predictions, the most confident (Lookout's own; for "
    "Frigate's detector, which fails on a 21st: put `?max_predictions=20` in its api_url)",
}


@router.post(
    "/v1/vision/custom/{model}",
    response_model=DeepStackDetectionOut,
    responses=error_responses(400, 401, 403, 404, 413, 429, 503, 504),
    summary="DeepStack / CodeProject.AI custom model detection (deepstack-python's custom_model)",
    description="`model` is the workers' object pack (/v1/vision/custom/list) or `general`: the "
    "same detection as /v1/vision/detection. Another name is a 404.",
    openapi_extra={
        **_DETECTION_FORM,
        "parameters": [
            {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
            _MAX_PREDICTIONS_PARAM,
        ],
    },
)
@router.post(
    "/v1/vision/detection",
    response_model=DeepStackDetectionOut,
    responses=IMAGE_ERRORS,
    summary="DeepStack object detection (Frigate's `deepstack` detector, Blue Iris, HA)",
    description="Runs the image as a job with task `objects` (listed in /v1/jobs, on the "
    "firehose) and answers its COCO objects at or above `min_confidence`, in integer pixels.",
    openapi_extra={**_DETECTION_FORM, "parameters": [_MAX_PREDICTIONS_PARAM]},
)
async def detection(
    request: Request,
    caller: WriteCaller,
    form: FormDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> DeepStackDetectionOut:
    model = request.path_params.get("model")  # /v1/vision/custom/{model}
    if model is not None and model not in (settings.models.object_pack, GENERAL_MODEL):
        raise DeepStackError(
            f"no custom model {model!r}: this server runs {settings.models.object_pack!r}",
            status=404,
        )
    image = await read_image(settings, form)
    min_confidence = form.min_confidence(service.OBJECT_MIN_CONFIDENCE)
    at_most = max_predictions(request)
    [result] = await _run(
        session, redis, storage, settings, caller, [image], service.OBJECT_TASKS, JobPurpose.detect
    )
    predictions = await service.object_predictions(
        session, result.job, min_confidence=min_confidence
    )
    return DeepStackDetectionOut(predictions=predictions[:at_most], duration=duration_s(request))


_FACE_DETECT: dict[str, Any] = {
    "response_model": DeepStackFaceDetectionOut,
    "responses": {
        **IMAGE_ERRORS,
    },
    "summary": "DeepStack face detection",
    "openapi_extra": _form(
        {"image": _IMAGE, "min_confidence": _min_confidence(0.55, "faces"), API_KEY_FIELD: _KEY},
        ["image"],
    ),
}


# DeepStack's route is `/v1/vision/face/` (gin redirects the bare path); clients post to both
# (app/compat/refusals.py CompatiblePaths takes every path without its trailing slash).
@router.post("/v1/vision/face", **_FACE_DETECT)
async def face_detection(
    request: Request,
    caller: WriteCaller,
    form: FormDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> DeepStackFaceDetectionOut:
    image = await read_image(settings, form)
    min_confidence = form.min_confidence(service.FACE_MIN_CONFIDENCE)
    [result] = await _run(
        session, redis, storage, settings, caller, [image], service.FACE_TASKS, JobPurpose.detect
    )
    return DeepStackFaceDetectionOut(
        predictions=service.face_predictions(result, min_confidence=min_confidence),
        duration=duration_s(request),
    )


@router.post(
    "/v1/vision/face/recognize",
    response_model=DeepStackRecognitionOut,
    responses=IMAGE_ERRORS,
    summary="DeepStack face recognition against this key's people",
    description="Runs the image as a job (tasks `faces,identify`); each face is matched "
    "against the people of the calling key (the same people as /v1/people). A face whose "
    "similarity is below `min_confidence` is `unknown` with confidence 0.",
    openapi_extra=_form(
        {
            "image": _IMAGE,
            "min_confidence": _min_confidence(0.67, "matches"),
            API_KEY_FIELD: _KEY,
        },
        ["image"],
    ),
)
async def recognize(
    request: Request,
    caller: WriteCaller,
    form: FormDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> DeepStackRecognitionOut:
    image = await read_image(settings, form)
    min_confidence = form.min_confidence(service.RECOGNIZE_MIN_CONFIDENCE)
    # Kept and clustered (Double Take sends every snapshot here), not counted in stats nor
    # found by face search (app.gallery.service's module docstring).
    [result] = await _run(
        session,
        redis,
        storage,
        settings,
        caller,
        [image],
        service.RECOGNIZE_TASKS,
        JobPurpose.identify,
    )
    predictions = await service.recognize(session, caller, result, min_confidence=min_confidence)
    return DeepStackRecognitionOut(predictions=predictions, duration=duration_s(request))


@router.post(
    "/v1/vision/face/register",
    response_model=DeepStackRegisterOut,
    responses=IMAGE_ERRORS,
    summary="DeepStack face registration: ADDS the photos' faces to the person `userid`",
    description="`userid` plus any number of image files under any field names. Each photo's "
    "largest face is enrolled to the calling key's person named `userid` (created when "
    "missing: `face added`; else `face updated`), on the gallery's quality terms. Unlike "
    "DeepStack, which replaced a userid's faces, faces are added. Photos without a face are "
    "skipped; none at all is 400 `no face detected`. The photos are not kept.",
    openapi_extra=_form(
        {"userid": {"type": "string", "example": "obama"}, "image": _IMAGE, API_KEY_FIELD: _KEY},
        ["userid"],
        any_files=True,
    ),
)
async def register(
    request: Request,
    caller: WriteCaller,
    form: FormDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> DeepStackRegisterOut:
    if not form.files:
        raise DeepStackError("No valid image file found")
    userid = form.userid()
    images = [await read_upload(settings, field, upload) for field, upload in form.files]
    created = await service.start_jobs(
        session,
        redis,
        storage,
        settings,
        images,
        tasks=service.FACE_TASKS,
        owner=caller,
        purpose=JobPurpose.enroll,
    )
    # Refused (or unfinished): nothing of the photos stays, and no new person either.
    async with gallery.discarded_when_done(session, storage, created):
        await commit(session)
        results = await service.run_jobs(session, redis, settings, images, created)
        message = await service.register(session, settings, caller, userid, results)
    return DeepStackRegisterOut(message=message, duration=duration_s(request))


@router.post(
    "/v1/vision/face/list",
    response_model=DeepStackFaceListOut,
    responses=GALLERY_ERRORS,
    summary="DeepStack: the userids (people with faces) of this key",
    openapi_extra=_KEY_ONLY_FORM,
)
async def list_faces(
    request: Request, caller: ReadCaller, session: SessionDep
) -> DeepStackFaceListOut:
    faces = await service.list_userids(session, caller)
    return DeepStackFaceListOut(faces=faces, duration=duration_s(request))


@router.post(
    "/v1/vision/face/delete",
    response_model=DeepStackDeleteOut,
    responses=GALLERY_ERRORS,
    summary="DeepStack: delete the person `userid` of this key and all their faces",
    description="An unknown userid deletes nothing and succeeds, as in DeepStack.",
    openapi_extra=_form(
        {"userid": {"type": "string", "example": "obama"}, API_KEY_FIELD: _KEY}, ["userid"]
    ),
)
async def delete_face(
    request: Request, caller: WriteCaller, form: FormDep, session: SessionDep, storage: StorageDep
) -> DeepStackDeleteOut:
    await service.delete_userid(session, storage, caller, form.userid())
    return DeepStackDeleteOut(duration=duration_s(request))


@router.post(
    "/v1/vision/face/match",
    response_model=DeepStackMatchOut,
    responses=IMAGE_ERRORS,
    summary="DeepStack: similarity of the largest faces of two images",
    openapi_extra=_form({API_KEY_FIELD: _KEY}, [], any_files=True),
)
async def match(
    request: Request,
    caller: WriteCaller,
    form: FormDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> DeepStackMatchOut:
    # middlewares.CheckFaceMatch's three refusals, in its words.
    if not form.files:
        raise DeepStackError("No valid image file found")
    if len(form.files) == 1:
        raise DeepStackError("expected two image files, only one found")
    if len(form.files) > 2:
        raise DeepStackError("only two images allowed")
    images = [await read_upload(settings, field, upload) for field, upload in form.files]
    results = await _run(
        session, redis, storage, settings, caller, images, service.FACE_TASKS, JobPurpose.compare
    )
    similarity = await service.match(session, settings, results)
    return DeepStackMatchOut(similarity=similarity, duration=duration_s(request))


@router.post(
    "/v1/vision/alpr",
    response_model=CodeProjectAlprOut,
    responses=IMAGE_ERRORS,
    summary="CodeProject.AI licence plate reader (Blue Iris's ALPR)",
    description="Runs the image as a job with task `plates` (vehicles from the object "
    "detector, text read inside each, or in the whole image when no vehicle is found: a plate "
    "camera's close-up; listed in /v1/jobs, counted per plate in /v1/stats) and "
    "answers CodeProject.AI's ALPR module's body. The image is the file field `upload` "
    "(`image`, or the first file, also taken).",
    openapi_extra=_form(
        {
            "upload": _IMAGE,
            "min_confidence": _min_confidence(service.PLATE_MIN_CONFIDENCE, "plates"),
            API_KEY_FIELD: _KEY,
        },
        ["upload"],
    ),
)
async def alpr(
    request: Request,
    caller: WriteCaller,
    form: FormDep,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> CodeProjectAlprOut:
    # CodeProject.AI's modules take the request's first image, whatever its field: `upload`
    # (Blue Iris), `image` (DeepStack's name), else the first file part.
    named = [(f, u) for f, u in form.files if f in ("upload", "image")]
    if not (chosen := next(iter(named or form.files), None)):
        raise DeepStackError("No valid image file found")
    image = await read_upload(settings, *chosen)
    min_confidence = form.min_confidence(service.PLATE_MIN_CONFIDENCE)
    [result] = await _run(
        session, redis, storage, settings, caller, [image], service.PLATE_TASKS, JobPurpose.detect
    )
    predictions = await service.plate_predictions(
        session, result.job, min_confidence=min_confidence
    )
    took_s = duration_s(request)
    return CodeProjectAlprOut(
        predictions=predictions,
        message=service.plates_message(predictions),
        processMs=round(took_s * 1000),
        inferenceMs=round(result.job.inference_ms or 0),
        duration=took_s,
    )
