"""CompreFace's REST API as a thin adapter over Lookout's own services. No FastAPI here;
callers own the commit.

- A subject IS a Lookout person of the caller's API key (the same row /v1/people lists); a
  face example IS a face enrolled in the gallery (its `image_id` is the enrolled face's id).
- Images go through the worker pool as ordinary jobs (app/gallery/service.create_jobs /
  run_jobs): visible in /v1/jobs and on the firehose. Example uploads, like native enrollment,
  are deleted once their face is copied into the gallery (or refused).
- Matching is the gallery's (app/gallery/matching.py, pgvector) and every similarity is the
  calibrated one (app/calibration.py).
- Errors are CompreFaceError: CompreFace's `{message, code}` with its code numbers and HTTP
  statuses (java/common/.../handler/CommonExceptionCode.java).

Subject names match case-insensitively, as in CompreFace; when several Lookout people of one key
share a name (possible through /v1/people), the oldest is the subject.
"""

import base64
import binascii
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.service import Principal
from app.compat.compreface.schemas import (
    Age,
    Box,
    Deleted,
    DetectOut,
    EmbeddingRecognition,
    EmbeddingRecognizeOut,
    EmbeddingSimilarity,
    EmbeddingVerifyOut,
    Example,
    ExamplePage,
    ExampleVerifiedFace,
    FaceOut,
    FaceVerifyOut,
    Gender,
    RecognizedFace,
    RecognizeOut,
    SubjectList,
    SubjectOut,
    SubjectSimilarity,
    Updated,
    VerificationOut,
    VerificationResult,
    VerifiedFace,
)
from app.errors import AppError, Forbidden, PayloadTooLarge, RateLimited
from app.gallery import matching
from app.gallery import service as gallery
from app.models import Job, Person, PersonFace
from app.schema_types import storable_text
from app.settings import CompreFaceSettings, Settings
from app.storage import Storage
from app.vectors import calibrated_similarity, models_of_dim

# face_plugins Lookout can answer; others (mask, pose) are ignored, as an absent plugin would be.
PLUGINS = frozenset({"age", "gender", "landmarks", "calculator"})
MAX_PREDICTIONS = 1000
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 2000  # Spring Data's default max page size, which CompreFace's Pageable keeps
MAX_PAGE = 1_000_000  # so that page × size stays a Postgres bigint OFFSET (a larger one was a 500)


class Code(IntEnum):
    """CompreFace's error codes (CommonExceptionCode / CrudExceptionCode)."""

    UNDEFINED = 0
    APP_ACCESS_DENIED = 1
    EMPTY_REQUIRED_FIELD = 5
    MODEL_NOT_FOUND = 10
    MISSING_REQUEST_HEADER = 20
    UNAVAILABLE_FILE_EXTENSION = 21
    VALIDATION_CONSTRAINT_VIOLATION = 26
    NO_FACES_FOUND = 28
    TOO_MANY_FACES = 31
    MISSING_REQUEST_PARAMETER = 33
    MISSING_REQUEST_PART = 34
    INCORRECT_ARGUMENT = 36
    WRONG_EMBEDDING_COUNT = 37
    FACES_SERVICE_EXCEPTION = 41
    SUBJECT_NOT_FOUND = 42
    SUBJECT_ALREADY_EXISTS = 43
    EMBEDDING_NOT_FOUND = 44


# CompreFace's HTTP status for each code; 400 for any code not listed.
STATUS = {
    Code.APP_ACCESS_DENIED: 403,
    Code.MODEL_NOT_FOUND: 404,
    Code.FACES_SERVICE_EXCEPTION: 500,
    Code.SUBJECT_NOT_FOUND: 404,
    Code.EMBEDDING_NOT_FOUND: 404,
}


class CompreFaceError(AppError):
    """An error in CompreFace's shape: rendered as {"message": detail, "code": number}."""

    code = "compreface"

    def __init__(
        self,
        number: Code,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status or STATUS.get(number, 400), headers=headers)
        self.number = number

    def body(self) -> dict[str, Any]:
        return {"message": self.detail, "code": int(self.number)}


def no_face_found() -> CompreFaceError:
    return CompreFaceError(Code.NO_FACES_FOUND, "No face is found in the given image")


def subject_not_found(name: str) -> CompreFaceError:
    return CompreFaceError(Code.SUBJECT_NOT_FOUND, f"Subject {name} not found")


def example_not_found(image_id: object) -> CompreFaceError:
    return CompreFaceError(Code.EMBEDDING_NOT_FOUND, f"Image {image_id} not found")


def translate(exc: AppError) -> CompreFaceError:
    """A Lookout error in CompreFace's terms. Server-side conditions keep their 5xx status (a
    timeout is 504, an outage 503), everything caused by the request stays a 4xx."""
    if isinstance(exc, CompreFaceError):
        return exc
    if isinstance(exc, RateLimited):
        return CompreFaceError(Code.UNDEFINED, exc.detail, status=429, headers=exc.headers)
    if isinstance(exc, Forbidden):
        return CompreFaceError(Code.APP_ACCESS_DENIED, exc.detail)
    if isinstance(exc, gallery.WorkerTimeout):
        return CompreFaceError(
            Code.FACES_SERVICE_EXCEPTION, exc.detail, status=exc.status, headers=exc.headers
        )
    if exc.status == PayloadTooLarge.status:  # the body, or the image's pixels (image_too_large)
        return CompreFaceError(Code.UNAVAILABLE_FILE_EXTENSION, exc.detail, status=413)
    if exc.code in ("invalid_image", "unsupported_image_type", "unusable_face"):
        # The image cannot be read (format, corrupt, refused by the worker's decoder).
        return CompreFaceError(Code.UNAVAILABLE_FILE_EXTENSION, exc.detail)
    if exc.status == 404:
        return CompreFaceError(Code.UNDEFINED, exc.detail, status=404)
    if exc.status >= 500:
        return CompreFaceError(Code.FACES_SERVICE_EXCEPTION, exc.detail, status=exc.status)
    return CompreFaceError(Code.VALIDATION_CONSTRAINT_VIOLATION, exc.detail)


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> CompreFaceError:
    """FastAPI's validation errors (query parameters, JSON bodies) as one CompreFace error."""
    first = errors[0] if errors else {}
    location = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path")]
    where = ".".join(location) or "request"
    if first.get("type") == "missing":
        if first.get("loc", ("",))[0] == "query":
            return CompreFaceError(
                Code.MISSING_REQUEST_PARAMETER, f"Required parameter {where} is missing"
            )
        return CompreFaceError(Code.EMPTY_REQUIRED_FIELD, f"Field {where} cannot be empty")
    return CompreFaceError(
        Code.VALIDATION_CONSTRAINT_VIOLATION,
        f"Validation for field {where} failed: {first.get('msg', 'invalid value')}",
    )


# --- request options and bodies ----------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """CompreFace's query parameters for the image endpoints."""

    limit: int = 0  # biggest faces first; 0: every face
    det_prob_threshold: float | None = None  # faces the detector scored lower are left out
    plugins: frozenset[str] = frozenset()
    status: bool = False  # execution_time and plugins_versions
    prediction_count: int = 1  # subjects per face (recognize)


def parse_plugins(raw: str | None) -> frozenset[str]:
    """`face_plugins` ("age,gender,landmarks,calculator"): the ones Lookout answers, others
    ignored (Double Take sends `face_plugins=undefined` when none is configured)."""
    names = {part.strip().lower() for part in (raw or "").split(",")}
    return frozenset(names & PLUGINS)


def detector_threshold(requested: float | None, settings: CompreFaceSettings) -> float | None:
    """det_prob_threshold on Lookout's detector scale: CompreFace's detector scores a clear face
    ~0.99, SCRFD 0.76-0.89, so a threshold above max_det_prob_threshold is lowered to it."""
    if requested is None:
        return None
    return min(requested, settings.max_det_prob_threshold)


def decode_base64(value: object, field: str) -> bytes:
    """CompreFace's JSON image: base64, optionally as a data URL (`data:image/jpeg;base64,…`)."""
    if value is None or value == "":
        raise CompreFaceError(Code.EMPTY_REQUIRED_FIELD, f"Field {field} cannot be empty")
    if not isinstance(value, str):
        raise CompreFaceError(Code.UNAVAILABLE_FILE_EXTENSION, "Provided value is not Base64")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CompreFaceError(
            Code.UNAVAILABLE_FILE_EXTENSION, "Provided value is not Base64"
        ) from exc


# --- faces of a processed image ----------------------------------------------------------------


def selected_faces(result: gallery.JobFaces, options: Options) -> list[gallery.Face]:
    """The faces CompreFace would report: at least det_prob_threshold, biggest first, at most
    `limit` (0: all). None left: CompreFace's "no face" error (28)."""
    faces = [
        face
        for face in result.faces
        if options.det_prob_threshold is None or face.detection.score >= options.det_prob_threshold
    ]
    faces.sort(key=lambda face: face.area, reverse=True)
    if options.limit > 0:
        faces = faces[: options.limit]
    if not faces:
        raise no_face_found()
    return faces


def face_fields(job: Job, face: gallery.Face, options: Options) -> dict[str, Any]:
    """The fields every face result shares: box (integer pixels inside the image) and the
    plugins asked for that Lookout has (age and gender only with a genderage model)."""
    x1, y1, x2, y2 = face.detection.box
    fields: dict[str, Any] = {
        "box": Box(
            probability=round(float(face.detection.score), 5),
            x_min=max(0, math.floor(x1)),
            y_min=max(0, math.floor(y1)),
            x_max=min(job.width, math.ceil(x2)),
            y_max=min(job.height, math.ceil(y2)),
        )
    }
    attributes = face.detection.attributes
    if "age" in options.plugins and isinstance(attributes.get("age"), int | float):
        age = int(attributes["age"])
        fields["age"] = Age(low=age, high=age)
    if "gender" in options.plugins and isinstance(attributes.get("gender"), str):
        fields["gender"] = Gender(value=attributes["gender"])
    if "landmarks" in options.plugins and face.detection.landmarks:
        fields["landmarks"] = [[round(x), round(y)] for x, y in face.detection.landmarks]
    if "calculator" in options.plugins:
        fields["embedding"] = [round(float(v), 8) for v in face.embedding.embedding]
    if options.status:
        fields["execution_time"] = {
            "detector": round(job.inference_ms or 0.0, 1),
            "decode": round(job.decode_ms or 0.0, 1),
        }
    return fields


def plugins_versions(faces: Sequence[gallery.Face], options: Options) -> dict[str, str] | None:
    if not options.status:
        return None
    versions = {"detector": "lookout.faces"}
    if faces:
        versions["calculator"] = faces[0].embedding.model
    for name in ("age", "gender"):
        if name in options.plugins and any(name in f.detection.attributes for f in faces):
            versions[name] = "genderage"
    return versions


def detect(result: gallery.JobFaces, options: Options) -> DetectOut:
    faces = selected_faces(result, options)
    return DetectOut(
        result=[FaceOut(**face_fields(result.job, face, options)) for face in faces],
        plugins_versions=plugins_versions(faces, options),
    )


def _owned(owner_id: uuid.UUID | None) -> Any:
    """The key's subjects: its named people (an unnamed person, a cluster of unknown faces,
    is no subject)."""
    return and_(Person.owner_id.is_not_distinct_from(owner_id), Person.name.is_not(None))


async def nearest_subjects(
    session: AsyncSession, vector: Any, *, model: str, owner_id: uuid.UUID | None, count: int
) -> list[SubjectSimilarity]:
    """The `count` nearest subjects, each once (CompreFace would repeat a subject once per
    stored example), best first, with the calibrated similarity of its best example."""
    found = await matching.nearest_people(
        session, vector, model=model, owner_id=owner_id, limit=count * 2
    )
    subjects: dict[str, SubjectSimilarity] = {}
    for match in found:  # best first: the first of a name is its best
        subjects.setdefault(
            match.name.casefold(),
            SubjectSimilarity(subject=match.name, similarity=match.similarity),
        )
    return list(subjects.values())[:count]


async def recognize(
    session: AsyncSession,
    result: gallery.JobFaces,
    options: Options,
    owner_id: uuid.UUID | None,
) -> RecognizeOut:
    faces = selected_faces(result, options)
    await matching.use_exact_hnsw_filtering(session)
    recognized = []
    for face in faces:
        subjects = await nearest_subjects(
            session,
            face.embedding.embedding,
            model=face.embedding.model,
            owner_id=owner_id,
            count=options.prediction_count,
        )
        recognized.append(
            RecognizedFace(**face_fields(result.job, face, options), subjects=subjects)
        )
    return RecognizeOut(result=recognized, plugins_versions=plugins_versions(faces, options))


def _unit(vector: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    array = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(array))
    if not math.isfinite(norm) or norm == 0:
        raise CompreFaceError(Code.INCORRECT_ARGUMENT, "an embedding must be a non-zero vector")
    return array / norm


def _similarity(a: Any, b: Any, model: str) -> float:
    return calibrated_similarity(float(_unit(a) @ _unit(b)), model)


async def get_example(
    session: AsyncSession, image_id: uuid.UUID, owner_id: uuid.UUID | None
) -> tuple[PersonFace, Person]:
    row = (
        await session.execute(
            select(PersonFace, Person)
            .join(Person, Person.id == PersonFace.person_id)
            .where(PersonFace.id == image_id, _owned(owner_id))
        )
    ).first()
    if row is None:
        raise example_not_found(image_id)
    return row[0], row[1]


async def verify_with_example(
    session: AsyncSession,
    result: gallery.JobFaces,
    image_id: uuid.UUID,
    options: Options,
    owner_id: uuid.UUID | None,
) -> FaceVerifyOut:
    """Each face of the image against one stored example (recognition/faces/{id}/verify)."""
    example, person = await get_example(session, image_id, owner_id)
    faces = selected_faces(result, options)
    verified = []
    for face in faces:
        if face.embedding.model != example.model:
            raise CompreFaceError(
                Code.INCORRECT_ARGUMENT,
                f"example {image_id} was embedded by {example.model}, this image by "
                f"{face.embedding.model}: add the example again",
            )
        verified.append(
            ExampleVerifiedFace(
                **face_fields(result.job, face, options),
                subject=person.name or "",
                similarity=_similarity(face.embedding.embedding, example.embedding, example.model),
            )
        )
    return FaceVerifyOut(result=verified, plugins_versions=plugins_versions(faces, options))


def verification(
    source: gallery.JobFaces, target: gallery.JobFaces, options: Options
) -> VerificationOut:
    """verification/verify: the one face of the source image against every target face. As in
    CompreFace, `limit` applies to the source too, before its one-face check: `limit=1` takes
    a group photo's biggest face (FaceVerificationProcessServiceImpl.SourceTarget.findFaces)."""
    source_faces = selected_faces(
        source, Options(det_prob_threshold=options.det_prob_threshold, limit=options.limit)
    )
    if len(source_faces) > 1:
        raise CompreFaceError(Code.TOO_MANY_FACES, "More than one face in the source image")
    [source_face] = source_faces
    target_faces = selected_faces(target, options)
    matches = []
    for face in target_faces:
        if face.embedding.model != source_face.embedding.model:
            raise CompreFaceError(
                Code.INCORRECT_ARGUMENT, "the two images were embedded by different models; retry"
            )
        matches.append(
            VerifiedFace(
                **face_fields(target.job, face, options),
                similarity=_similarity(
                    source_face.embedding.embedding,
                    face.embedding.embedding,
                    face.embedding.model,
                ),
            )
        )
    return VerificationOut(
        result=[
            VerificationResult(
                source_image_face=FaceOut(**face_fields(source.job, source_face, options)),
                face_matches=matches,
                plugins_versions=plugins_versions([source_face], options),
            )
        ]
    )


# --- subjects ----------------------------------------------------------------------------------


async def find_subject(
    session: AsyncSession, owner_id: uuid.UUID | None, name: str
) -> Person | None:
    """The person named `name` (case-insensitively) of this key. A name Postgres cannot store
    (NUL, a lone surrogate) is nobody's: not asked of it (it would refuse the query)."""
    try:
        storable_text(name)
    except ValueError:
        return None
    return await gallery.person_named(session, owner_id, name.strip())


async def require_subject(session: AsyncSession, owner_id: uuid.UUID | None, name: str) -> Person:
    person = await find_subject(session, owner_id, name)
    if person is None:
        raise subject_not_found(name)
    return person


def _subject_name(name: str | None) -> str:
    if name is None or not name.strip():
        raise CompreFaceError(Code.VALIDATION_CONSTRAINT_VIOLATION, "Subject name is empty")
    if len(name.strip()) > 200:
        raise CompreFaceError(
            Code.VALIDATION_CONSTRAINT_VIOLATION, "Subject name is longer than 200 characters"
        )
    try:
        return storable_text(name.strip())
    except ValueError as exc:
        raise CompreFaceError(Code.VALIDATION_CONSTRAINT_VIOLATION, f"Subject name {exc}") from exc


# CompreFace's SubjectDto (the body of create and rename): @Size(max = 50) is code 26 and
# @Pattern("[^;/\\\\]+") code 36, with its messages. A name with a slash could not be
# addressed in DELETE /recognition/subjects/{subject} after.
_SUBJECT_MAX = 50
_SUBJECT_FORBIDDEN = frozenset(";/\\")


def _subject_body_name(name: str | None) -> str:
    name = _subject_name(name)
    if len(name) > _SUBJECT_MAX:
        raise CompreFaceError(
            Code.VALIDATION_CONSTRAINT_VIOLATION,
            f"Subject name size must be between 1 and {_SUBJECT_MAX}",
        )
    if _SUBJECT_FORBIDDEN & set(name):
        raise CompreFaceError(
            Code.INCORRECT_ARGUMENT,
            "The name cannot contain the following special characters: ';', '/', '\\'",
        )
    return name


async def create_subject(
    session: AsyncSession, owner_id: uuid.UUID | None, name: str
) -> SubjectOut:
    name = _subject_body_name(name)
    if await find_subject(session, owner_id, name) is not None:
        raise CompreFaceError(Code.SUBJECT_ALREADY_EXISTS, "Subject already exists")
    person = await gallery.create_person(session, name, owner_id)
    return SubjectOut(subject=person.name)


async def list_subjects(session: AsyncSession, owner_id: uuid.UUID | None) -> SubjectList:
    names = await session.scalars(
        select(Person.name).where(_owned(owner_id)).order_by(Person.created_at, Person.id)
    )
    return SubjectList(subjects=list(dict.fromkeys(names)))


async def rename_subject(
    session: AsyncSession, settings: Settings, principal: Principal, old: str, new: str | None
) -> Updated:
    """CompreFace's rename: to a name another subject has, the two are merged (the gallery's
    merge: the faces, enrolled and seen, move to that subject; this one is deleted). An empty or
    unchanged name updates nothing."""
    source = await require_subject(session, principal.owner_id, old)
    if new is None or not new.strip() or new.strip() == source.name:
        return Updated(updated=False)
    new = _subject_body_name(new)
    target = await find_subject(session, principal.owner_id, new)
    if target is None or target.id == source.id:
        source.name = new
        await session.flush()
    else:
        await gallery.merge_people(session, settings, target.id, [source.id], principal)
    return Updated(updated=True)


async def delete_subject(
    session: AsyncSession, storage: Storage, owner_id: uuid.UUID | None, name: str
) -> SubjectOut:
    person = await require_subject(session, owner_id, name)
    await gallery.delete_people(session, storage, [person.id])
    return SubjectOut(subject=person.name)


async def delete_all_subjects(
    session: AsyncSession, storage: Storage, owner_id: uuid.UUID | None
) -> Deleted:
    people = list(await session.scalars(select(Person.id).where(_owned(owner_id))))
    await gallery.delete_people(session, storage, people)
    return Deleted(deleted=len(people))


# --- face examples -----------------------------------------------------------------------------


def subject_param(name: str | None) -> str:
    """The `subject` query parameter of an upload: required and not blank."""
    if name is None:
        raise CompreFaceError(
            Code.MISSING_REQUEST_PARAMETER, "Required parameter subject is missing"
        )
    return _subject_name(name)


async def add_example(
    session: AsyncSession,
    settings: Settings,
    owner_id: uuid.UUID | None,
    subject: str,
    result: gallery.JobFaces,
    det_prob_threshold: float | None,
) -> Example:
    """Enroll the image's one face to the subject (created if new), on the gallery's terms:
    the same quality checks as POST /v1/people/{id}/faces; the same face twice (a near-duplicate)
    is not stored again and answers the id of the face already stored."""
    faces = selected_faces(result, Options(det_prob_threshold=det_prob_threshold))
    if len(faces) > 1:
        raise CompreFaceError(Code.TOO_MANY_FACES, "More than one face in the source image")
    person = await find_subject(session, owner_id, subject)
    if person is None:
        person = await gallery.create_person(session, subject, owner_id)
    try:
        enrolled = await gallery.enroll(
            session,
            settings,
            person,
            [gallery.JobFaces(result.upload, result.job, faces)],
            link_source=False,
        )
    except gallery.UnusableFace as exc:
        raise CompreFaceError(Code.VALIDATION_CONSTRAINT_VIOLATION, exc.detail) from exc
    if enrolled.enrolled:
        return Example(image_id=enrolled.enrolled[0].id, subject=person.name)
    return Example(image_id=enrolled.duplicates[0].existing_face_id, subject=person.name)


_JAVA_INT = re.compile(r"[+-]?[0-9]+")


def page_request(page: str | None, size: str | None) -> tuple[int, int]:
    """`page` and `size` of the faces list as CompreFace reads them: Spring Data's pageable
    resolver (PageableHandlerMethodArgumentResolverSupport) corrects, never refuses. A page
    that is not a number or is negative is 0 (and at most MAX_PAGE); a size that is not a number
    or is under 1 is 20, one over 2000 is 2000."""

    def parsed(value: str | None, upper: int) -> int | None:
        if value is None or not value.strip():
            return None  # absent: the default
        if not _JAVA_INT.fullmatch(value) or not -(2**31) <= int(value) < 2**31:
            return 0  # Integer.parseInt's NumberFormatException
        return min(max(int(value), 0), upper)

    number = parsed(page, MAX_PAGE) or 0
    wanted = parsed(size, MAX_PAGE_SIZE)
    return number, wanted if wanted else DEFAULT_PAGE_SIZE


async def list_examples(
    session: AsyncSession,
    owner_id: uuid.UUID | None,
    *,
    subject: str | None,
    page: int,
    size: int,
) -> ExamplePage:
    """Spring-style pages (page from 0), oldest first. An unknown subject: an empty page."""
    query = select(PersonFace.id, Person.name).join(Person, Person.id == PersonFace.person_id)
    # A face's twin of a model upgrade in progress (app/gallery/reembed.py) is not an example.
    query = query.where(_owned(owner_id), PersonFace.reembedded_from.is_(None))
    if subject is not None and subject.strip():
        person = await find_subject(session, owner_id, subject)
        query = query.where(PersonFace.person_id == (person.id if person else None))
    total = int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    rows = await session.execute(
        query.order_by(PersonFace.created_at, PersonFace.id).offset(page * size).limit(size)
    )
    return ExamplePage(
        faces=[Example(image_id=face_id, subject=name) for face_id, name in rows],
        page_number=page,
        page_size=size,
        total_pages=math.ceil(total / size),
        total_elements=total,
    )


async def delete_examples_of(
    session: AsyncSession, storage: Storage, owner_id: uuid.UUID | None, subject: str | None
) -> Deleted:
    """DELETE recognition/faces[?subject=]: CompreFace deletes the subject with its examples
    (every subject of the key without `subject`); the count is of examples. An unknown
    subject deletes nothing (0), as in CompreFace."""
    if subject is not None and subject.strip():
        person = await find_subject(session, owner_id, subject)
        people = [person.id] if person is not None else []
    else:
        people = list(await session.scalars(select(Person.id).where(_owned(owner_id))))
    if not people:
        return Deleted(deleted=0)
    count = await session.scalar(
        select(func.count(PersonFace.id)).where(
            PersonFace.person_id.in_(people), PersonFace.reembedded_from.is_(None)
        )
    )
    await gallery.delete_people(session, storage, people)
    return Deleted(deleted=int(count or 0))


async def delete_example(
    session: AsyncSession, owner_id: uuid.UUID | None, image_id: uuid.UUID
) -> Example:
    example, person = await get_example(session, image_id, owner_id)
    await gallery.delete_enrolled_faces(session, [example.id])
    return Example(image_id=example.id, subject=person.name)


async def delete_examples(
    session: AsyncSession, owner_id: uuid.UUID | None, image_ids: Iterable[uuid.UUID]
) -> list[Example]:
    """The bulk delete: ids that do not exist (or are another key's) are ignored."""
    deleted = []
    for image_id in dict.fromkeys(image_ids):
        try:
            deleted.append(await delete_example(session, owner_id, image_id))
        except CompreFaceError:
            continue
    return deleted


# --- embeddings --------------------------------------------------------------------------------


def _check_dims(embeddings: Sequence[Sequence[float]]) -> int:
    dims = {len(vector) for vector in embeddings}
    if len(dims) != 1:
        raise CompreFaceError(Code.INCORRECT_ARGUMENT, "all embeddings must have the same length")
    [dim] = dims
    if not models_of_dim(dim):
        raise CompreFaceError(
            Code.INCORRECT_ARGUMENT, f"no embedding model Lookout knows makes {dim}-d embeddings"
        )
    return dim


async def _gallery_model(session: AsyncSession, owner_id: uuid.UUID | None, dim: int) -> str | None:
    """The model of this key's stored examples of that dimension (the most used one)."""
    return await session.scalar(
        select(PersonFace.model)
        .join(Person, Person.id == PersonFace.person_id)
        .where(_owned(owner_id), PersonFace.dim == dim)
        .group_by(PersonFace.model)
        .order_by(func.count().desc(), PersonFace.model)
        .limit(1)
    )


async def recognize_embeddings(
    session: AsyncSession,
    owner_id: uuid.UUID | None,
    embeddings: Sequence[Sequence[float]],
    prediction_count: int,
) -> EmbeddingRecognizeOut:
    """recognition/embeddings/recognize: embeddings (e.g. from face_plugins=calculator) against
    the subjects' examples of the same model."""
    dim = _check_dims(embeddings)
    model = await _gallery_model(session, owner_id, dim)
    await matching.use_exact_hnsw_filtering(session)
    results = []
    for vector in embeddings:
        unit = _unit(vector)
        similarities = (
            await nearest_subjects(
                session, unit.tolist(), model=model, owner_id=owner_id, count=prediction_count
            )
            if model is not None
            else []
        )
        results.append(EmbeddingRecognition(embedding=list(vector), similarities=similarities))
    return EmbeddingRecognizeOut(result=results)


async def verify_embeddings_with_example(
    session: AsyncSession,
    owner_id: uuid.UUID | None,
    image_id: uuid.UUID,
    embeddings: Sequence[Sequence[float]],
) -> EmbeddingVerifyOut:
    example, _ = await get_example(session, image_id, owner_id)
    if _check_dims(embeddings) != example.dim:
        raise CompreFaceError(
            Code.INCORRECT_ARGUMENT, f"example {image_id} holds a {example.dim}-d embedding"
        )
    return _most_similar_first(
        EmbeddingSimilarity(
            embedding=list(vector), similarity=_similarity(vector, example.embedding, example.model)
        )
        for vector in embeddings
    )


def verify_embeddings(
    source: Sequence[float], targets: Sequence[Sequence[float]]
) -> EmbeddingVerifyOut:
    """verification/embeddings/verify: calibrated with the first known model of that size
    (the ArcFace models of one size share their calibration)."""
    dim = _check_dims([source, *targets])
    model = models_of_dim(dim)[0]
    return _most_similar_first(
        EmbeddingSimilarity(embedding=list(target), similarity=_similarity(source, target, model))
        for target in targets
    )


def _most_similar_first(results: Iterable[EmbeddingSimilarity]) -> EmbeddingVerifyOut:
    """Highest similarity first, as CompreFace sorts both embedding verifications (its
    SubjectService.verifyEmbedding, EmbeddingsVerificationProcessServiceImpl): a client reads
    result[0] as the closest."""
    return EmbeddingVerifyOut(result=sorted(results, key=lambda r: r.similarity, reverse=True))
