"""HTTP routes for the gallery. Parse, authorize, call the service; nothing else.

Synchronous calls (enroll, identify, verify, face search) send their images to the workers as
ordinary jobs and wait for them (at most gallery.wait_s; then 504 worker_timeout).
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, Response, UploadFile, status

from app import openapi_examples as examples
from app.apikeys.service import Principal
from app.commits import after_commit, commit
from app.deps import (
    ImportsDep,
    ReadKey,
    RedisDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    WriteKey,
)
from app.errors import COMMON_ERRORS, InvalidInput, PayloadTooLarge, error_doc
from app.gallery import imports, people, service
from app.gallery.schemas import (
    EnrollOut,
    FaceSearchOut,
    IdentifyOut,
    ImportOut,
    MergeIn,
    MovedOut,
    MoveIn,
    PersonDetail,
    PersonIn,
    PersonPage,
    PersonPatch,
    PromoteIn,
    VerifyOut,
)
from app.models import Job, JobPurpose
from app.schema_types import StorableText
from app.settings import Settings

router = APIRouter(tags=["gallery"])

# Routes with a body (JSON or multipart) answer 400 when it cannot be parsed at all.
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    400: error_doc(
        "The request body cannot be parsed", "http_error", "There was an error parsing the body"
    ),
}
PERSON_ERRORS: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    404: error_doc(
        "No such person (or not one of this key's people)",
        "not_found",
        "no person with id e43d5498-158a-4681-9a3c-1fcc533e9bfd",
    ),
}
IMAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    413: error_doc(
        "An image over the size limit",
        "payload_too_large",
        "obama2.jpg is larger than the limit of 20971520 bytes",
    ),
    415: error_doc(
        "Not a JPEG, PNG, WebP, BMP, GIF or TIFF image",
        "unsupported_image_type",
        "not a JPEG, PNG, WebP, BMP, GIF or TIFF image (unrecognised file signature)",
    ),
    422: error_doc(
        "An image is unusable; the detail names it and says why",
        "unusable_face",
        "dog.jpg: no face found in the image",
    ),
    504: error_doc(
        "No worker finished the image(s) in time",
        "worker_timeout",
        "no worker finished job(s) fa899ff3-e7e0-4a03-9499-31739fef5853 within 30 s; check that "
        "workers are running (GET /health/ready) and retry",
    ),
}
CONFLICT_ERRORS: dict[int | str, dict[str, Any]] = {
    **PERSON_ERRORS,
    409: error_doc(
        "Another of this key's people has that name",
        "conflict",
        "a person named 'obama' already exists; pick another name or merge",
    ),
}
FACE_ERRORS: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    404: error_doc("No such face or person (or not this key's)", "not_found", "no face with id 57"),
}
THUMBNAIL: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "the aligned face crop"}
}
FaceId = Annotated[
    int, Path(ge=1, le=2**31 - 1, description="face_id from identify/search/a person's sightings")
]
Images = Annotated[list[UploadFile], File(description="JPEG, PNG or WebP; one face each")]
Image = Annotated[UploadFile, File(description="JPEG, PNG or WebP")]


async def _read(settings: Settings, uploads: list[UploadFile]) -> list[service.Upload]:
    out = []
    for index, upload in enumerate(uploads):
        name = upload.filename or f"image {index + 1}"
        data = await upload.read(settings.api.max_upload_bytes + 1)
        if len(data) > settings.api.max_upload_bytes:
            raise PayloadTooLarge(
                f"{name} is larger than the limit of {settings.api.max_upload_bytes} bytes"
            )
        out.append(service.Upload(name=name, data=data))
    return out


async def _create_jobs(
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: Settings,
    principal: Principal,
    uploads: list[UploadFile],
    tasks: tuple[str, ...],
    purpose: JobPurpose,
) -> tuple[list[service.Upload], list[Job]]:
    """The images' jobs, queued for the workers at the next commit."""
    images = await _read(settings, uploads)
    created = await service.create_jobs(
        session,
        redis,
        storage,
        settings,
        images,
        tasks=tasks,
        owner_id=principal.owner_id,
        purpose=purpose,
    )
    return images, created


async def _through_workers(
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: Settings,
    principal: Principal,
    uploads: list[UploadFile],
    tasks: tuple[str, ...],
    purpose: JobPurpose,
) -> list[service.JobFaces]:
    """Identify, verify, search: their jobs are kept, marked with `purpose` (service module
    docstring: left out of face search and stats)."""
    images, created = await _create_jobs(
        session, redis, storage, settings, principal, uploads, tasks, purpose
    )
    # The commit point, reached now: the workers must find the rows, and the route waits.
    await commit(session)
    return await service.run_jobs(session, redis, settings, images, created)


@router.post(
    "/v1/people",
    status_code=status.HTTP_201_CREATED,
    response_model=PersonDetail,
    responses={
        **BODY_ERRORS,
        201: {"content": {"application/json": {"example": examples.PERSON_NEW}}},
        409: CONFLICT_ERRORS[409],
    },
    summary="Create a person (enroll faces with POST /v1/people/{id}/faces)",
)
async def create_person(body: PersonIn, principal: WriteKey, session: SessionDep) -> PersonDetail:
    person = await service.create_person(session, body.name, principal.owner_id)
    return await service.person_detail(session, person)


@router.post(
    "/v1/people/import",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ImportOut,
    responses={
        **BODY_ERRORS,
        413: error_doc(
            "The request is over the body size limit",
            "payload_too_large",
            "request body is larger than the limit of 104857600 bytes",
        ),
        422: error_doc(
            "Not a zip, no photos, a photo outside a person's folder, too many photos",
            "invalid_archive",
            "'obama.jpg' is not in a person's folder: lay photos out as 'person name/photo.jpg'",
        ),
    },
    summary="Enroll many people at once: photos laid out as `person name/photo.jpg`, in a zip "
    "or as files; runs in the background (poll the returned status_url)",
)
async def import_people(
    principal: WriteKey,
    session: SessionDep,
    settings: SettingsDep,
    runner: ImportsDep,
    archive: Annotated[
        UploadFile | None, File(description="a zip of folders named after people")
    ] = None,
    images: Annotated[
        list[UploadFile] | None,
        File(description="photos, each file named `person name/photo.jpg`"),
    ] = None,
) -> ImportOut:
    if (archive is None) == (images is None):
        raise InvalidInput("send either `archive` (a zip) or `images` (files), not both")
    if archive is not None:
        data = await archive.read()
    else:
        assert images is not None
        files = [(f.filename or f"image {i + 1}", await f.read()) for i, f in enumerate(images)]
        data = imports.archive_from_files(files)
    row = await imports.create_import(session, settings, data, principal.owner_id)
    import_id = row.id

    async def start() -> None:
        runner.submit(import_id)

    after_commit(session, start)
    return imports.import_out(row)


@router.get(
    "/v1/people/imports/{import_id}",
    response_model=ImportOut,
    responses={
        **COMMON_ERRORS,
        404: error_doc(
            "No such import (or not this key's)",
            "not_found",
            "no import with id 6f1c2a9e-3b7d-4e8a-9c1f-2d5b8e7a4c30",
        ),
    },
    summary="A bulk enrollment's progress: counters per batch, refused photos with reasons",
)
async def get_import(import_id: uuid.UUID, principal: ReadKey, session: SessionDep) -> ImportOut:
    return imports.import_out(await imports.get_import(session, import_id, principal))


@router.get(
    "/v1/people",
    response_model=PersonPage,
    responses=COMMON_ERRORS,
    summary="List this key's people with their faces: named newest first, or unnamed "
    "(clusters of unknown faces) biggest first",
)
async def list_people(
    principal: ReadKey,
    session: SessionDep,
    settings: SettingsDep,
    named: Annotated[
        bool, Query(description="false: unnamed people (clusters of unknown faces)")
    ] = True,
    ignored: Annotated[bool, Query(description="with named=false: the ignored clusters")] = False,
    name: Annotated[
        StorableText | None, Query(description="case-insensitive part of the name")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        StorableText | None, Query(description="next_cursor of the previous page")
    ] = None,
) -> PersonPage:
    return await people.list_people(
        session,
        principal,
        named=named,
        ignored=ignored,
        name=name,
        limit=limit,
        cursor=cursor,
        min_unnamed_faces=settings.clusters.min_person_faces,
    )


@router.get(
    "/v1/people/{person_id}",
    response_model=PersonDetail,
    responses=PERSON_ERRORS,
    summary="A person with their enrolled faces and sightings (thumbnails, sources, last seen)",
)
async def get_person(person_id: uuid.UUID, principal: ReadKey, session: SessionDep) -> PersonDetail:
    return await service.person_detail(
        session, await service.get_person(session, person_id, principal)
    )


@router.patch(
    "/v1/people/{person_id}",
    response_model=PersonDetail,
    responses=CONFLICT_ERRORS,
    summary="Rename a person; name an unnamed one (its faces join the gallery); ignore one",
)
async def update_person(
    person_id: uuid.UUID,
    body: PersonPatch,
    principal: WriteKey,
    session: SessionDep,
    settings: SettingsDep,
) -> PersonDetail:
    return await people.update_person(
        session, settings, person_id, principal, name=body.name, ignored=body.ignored
    )


@router.post(
    "/v1/people/{person_id}/merge",
    response_model=PersonDetail,
    responses=PERSON_ERRORS,
    summary="Merge people into this one (their faces move here; they are deleted)",
)
async def merge_people(
    person_id: uuid.UUID,
    body: MergeIn,
    principal: WriteKey,
    session: SessionDep,
    settings: SettingsDep,
) -> PersonDetail:
    return await people.merge_people(session, settings, person_id, body.person_ids, principal)


@router.delete(
    "/v1/people/{person_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=PERSON_ERRORS,
    summary="Delete a person and every enrolled embedding of theirs",
)
async def delete_person(
    person_id: uuid.UUID, principal: WriteKey, session: SessionDep, storage: StorageDep
) -> Response:
    await service.delete_person(session, storage, person_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/people/{person_id}/faces",
    response_model=EnrollOut,
    responses={**IMAGE_ERRORS, 404: PERSON_ERRORS[404]},
    summary="Enroll photos of a person: exactly one usable face per photo, all or nothing",
)
async def enroll_faces(
    person_id: uuid.UUID,
    principal: WriteKey,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
    images: Images,
) -> EnrollOut:
    person = await service.get_person(session, person_id, principal)
    uploads, created = await _create_jobs(
        session, redis, storage, settings, principal, images, ("faces",), JobPurpose.enroll
    )
    # Accepted or refused, nothing of the photos stays: no job, image or job embedding; the
    # person's embeddings exist only in person_faces, and go with the person.
    async with service.discarded_when_done(session, storage, created):
        # The commit point, reached now: the workers must find the rows, and the route waits.
        await commit(session)
        results = await service.run_jobs(session, redis, settings, uploads, created)
        return await service.enroll(session, settings, person, results, link_source=False)


@router.delete(
    "/v1/people/{person_id}/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=PERSON_ERRORS,
    summary="Delete one enrolled face",
)
async def delete_face(
    person_id: uuid.UUID, face_id: uuid.UUID, principal: WriteKey, session: SessionDep
) -> Response:
    await service.delete_face(session, person_id, face_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/people/{person_id}/faces/{face_id}/move",
    response_model=PersonDetail,
    responses=PERSON_ERRORS,
    summary="Move an enrolled face to another person, or (person_id null) out of this one",
)
async def move_enrolled_face(
    person_id: uuid.UUID,
    face_id: uuid.UUID,
    body: MoveIn,
    principal: WriteKey,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> PersonDetail:
    return await people.move_enrolled_face(
        session, settings, storage, person_id, face_id, body.person_id, principal
    )


@router.get(
    "/v1/people/{person_id}/faces/{face_id}/thumbnail",
    response_class=Response,
    responses={**THUMBNAIL, **PERSON_ERRORS},
    summary="An enrolled face's aligned crop (JPEG)",
)
async def enrolled_thumbnail(
    person_id: uuid.UUID, face_id: uuid.UUID, principal: ReadKey, session: SessionDep
) -> Response:
    jpeg = await people.enrolled_thumbnail(session, person_id, face_id, principal)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})


@router.get(
    "/v1/faces/{face_id}/thumbnail",
    response_class=Response,
    responses={**THUMBNAIL, **FACE_ERRORS},
    summary="A face's aligned crop (JPEG); 404 where none was kept (node policy)",
)
async def face_thumbnail(face_id: FaceId, principal: ReadKey, session: SessionDep) -> Response:
    jpeg = await people.sighting_thumbnail(session, face_id, principal)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private"})


@router.post(
    "/v1/faces/{face_id}/move",
    response_model=MovedOut,
    responses=FACE_ERRORS,
    summary="Place a face with a person, or (person_id null) back to unknown: not this person",
)
async def move_face(
    face_id: FaceId,
    body: MoveIn,
    principal: WriteKey,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> MovedOut:
    return await people.move_face(session, settings, storage, face_id, body.person_id, principal)


@router.delete(
    "/v1/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=FACE_ERRORS,
    summary="Forget a face: its embeddings, crop and cluster membership (its box stays)",
)
async def delete_face_of_job(face_id: FaceId, principal: WriteKey, session: SessionDep) -> Response:
    await people.delete_sighting(session, face_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/identify",
    response_model=IdentifyOut,
    responses=IMAGE_ERRORS,
    summary="Who is in this image? Each face with its best enrolled person, or unknown",
)
async def identify(
    principal: WriteKey,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
    image: Image,
) -> IdentifyOut:
    [result] = await _through_workers(
        session,
        redis,
        storage,
        settings,
        principal,
        [image],
        ("faces", "identify"),
        JobPurpose.identify,
    )
    return service.identify_result(settings, result)


@router.post(
    "/v1/verify",
    response_model=VerifyOut,
    responses=IMAGE_ERRORS,
    summary="Are the (largest) faces of two images the same person?",
)
async def verify(
    principal: WriteKey,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
    image_a: Image,
    image_b: Image,
) -> VerifyOut:
    results = await _through_workers(
        session,
        redis,
        storage,
        settings,
        principal,
        [image_a, image_b],
        ("faces",),
        JobPurpose.compare,
    )
    return await service.verify(session, settings, results)


@router.post(
    "/v1/faces/search",
    response_model=FaceSearchOut,
    responses=IMAGE_ERRORS,
    summary="Faces seen in past jobs (within retention) most similar to this image's face",
)
async def search_faces(
    principal: WriteKey,
    session: SessionDep,
    redis: RedisDep,
    storage: StorageDep,
    settings: SettingsDep,
    image: Image,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    min_similarity: Annotated[
        float | None,
        Query(ge=-1, le=1, description="only faces at least this similar; default the threshold"),
    ] = None,
) -> FaceSearchOut:
    [result] = await _through_workers(
        session, redis, storage, settings, principal, [image], ("faces",), JobPurpose.compare
    )
    return await service.search_faces(
        session, settings, result, principal, limit=limit, min_similarity=min_similarity
    )


@router.post(
    "/v1/faces/{face_id}/promote",
    response_model=EnrollOut,
    responses={
        **IMAGE_ERRORS,
        200: {"content": {"application/json": {"example": examples.PROMOTED}}},
        404: error_doc("No such face or person", "not_found", "no face with id 57"),
        409: error_doc(
            "The face is already enrolled, or the name is taken",
            "conflict",
            "face 5 is already enrolled (person f6cb12c2-c9ee-4f15-afee-b8dcb0c915b7); move it "
            "instead (POST /v1/faces/5/move)",
        ),
    },
    summary="Enroll a face from a past job to an existing person or a new one",
)
async def promote_face(
    face_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="face_id from identify/search")],
    body: PromoteIn,
    principal: WriteKey,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> EnrollOut:
    return await service.promote(
        session, settings, storage, face_id, principal, person_id=body.person_id, name=body.name
    )
