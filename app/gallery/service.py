"""Gallery logic: people, enrollment, identify, verify, unknown-face search. No FastAPI here;
callers own the commit (but for discarded_when_done, below).

Pixels are never decoded in the API: every image goes to the workers as an ordinary job (the
same stream, the same consumer); the API waits for its result event and then does the SQL.

What becomes of those jobs depends on the call (the job's `purpose`, app.models.JobPurpose):
- enrollment (native, DeepStack register, CompreFace add example): deleted once the call is
  over, accepted or refused (discarded_when_done): a person's embeddings live only in
  person_faces, and enrollment photos are not kept.
- identify / recognize, and comparisons (verify, face search, match): kept, as every job the
  caller made is kept (its history in /v1/jobs, the firehose, retention), but marked, so that
  face search and stats counts leave them out: asking about one photo twice no longer finds
  the first question at similarity 1.0, nor counts its faces as camera frames. Deleting them
  instead would also lose what users of the unknown-faces clustering want from identify:
  Double Take and Frigate integrations send every camera snapshot to DeepStack recognize, and
  the unknown faces of those snapshots are real sightings (clusters.py takes them).
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.service import Principal
from app.commits import commit, discard_pending
from app.errors import AppError, Conflict, InvalidInput, NotFound
from app.gallery import matching, people
from app.gallery.quality import FaceQuality, assess_face
from app.gallery.schemas import (
    DuplicateOut,
    EnrollOut,
    FaceSearchOut,
    IdentifiedFace,
    IdentifyOut,
    IdentityOut,
    PastFaceOut,
    PersonDetail,
    RunnerUpOut,
    VerifyOut,
)
from app.images import accept_image
from app.jobs import service as jobs
from app.models import (
    Detection,
    FaceCrop,
    FaceEmbedding,
    Job,
    JobPurpose,
    JobStatus,
    Person,
    PersonFace,
    UnknownFace,
)
from app.settings import Settings
from app.storage import Storage
from app.vectors import calibrated_similarity


class WorkerTimeout(AppError):
    status = 504
    code = "worker_timeout"


class UnusableFace(InvalidInput):
    code = "unusable_face"


@dataclass(frozen=True)
class Upload:
    name: str  # the client's file name, to name the image in errors
    data: bytes


@dataclass(frozen=True)
class Face:
    detection: Detection
    embedding: FaceEmbedding

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.detection.box
        return (x2 - x1) * (y2 - y1)


@dataclass(frozen=True)
class JobFaces:
    upload: Upload
    job: Job
    faces: list[Face]

    def largest_face(self) -> Face:
        if not self.faces:
            raise UnusableFace(f"{self.upload.name}: no face found in the image")
        return max(self.faces, key=lambda f: f.area)


# --- people ------------------------------------------------------------------------------------

get_person = people.get_person
delete_person = people.delete_person
delete_people = people.delete_people
delete_face = people.delete_enrolled_face
delete_enrolled_faces = people.delete_enrolled_faces
merge_people = people.merge_people
person_named = people.person_named
enrolled_face = people.enrolled_face
thresholds = people.thresholds


async def create_person(session: AsyncSession, name: str, owner_id: uuid.UUID | None) -> Person:
    """A named person; 409 when the owner already has one of that name (case-insensitive)."""
    person = Person(id=uuid.uuid4(), name=name, owner_id=owner_id)
    session.add(person)
    await people.flush_name(session, name)
    return person


async def person_detail(session: AsyncSession, person: Person) -> PersonDetail:
    return await people.person_out(session, person)


# --- images through the workers ----------------------------------------------------------------


async def create_jobs(
    session: AsyncSession,
    redis: Redis,
    storage: Storage,
    settings: Settings,
    uploads: list[Upload],
    *,
    tasks: tuple[str, ...],
    owner_id: uuid.UUID | None,
    purpose: JobPurpose,
) -> list[Job]:
    """One job per upload (flushed), each queued for the workers at the next commit. Every
    upload is checked first: a bad one names itself and nothing is created. The caller commits
    (app.commits.commit), then calls run_jobs. `purpose` (module docstring) decides where
    their results count; enrollment jobs go inside discarded_when_done."""
    accepted = []
    for upload in uploads:
        try:
            accepted.append(
                await accept_image(upload.data, max_pixels=settings.api.max_image_pixels)
            )
        except AppError as exc:
            # The same status and code as /v1/images for the same file (415 for a file that is
            # not an image, 422 for a corrupt one, 413 for too many pixels), naming the upload.
            raise AppError(
                f"{upload.name}: {exc.detail}", code=exc.code, status=exc.status
            ) from exc
    created = [
        await jobs.create_job(
            session,
            storage,
            image=data,
            info=info,
            tasks=tasks,
            owner_id=owner_id,
            purpose=purpose,
        )
        for data, info in accepted
    ]
    for job in created:
        jobs.enqueue_after_commit(session, redis, job, settings)
    return created


async def run_jobs(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    uploads: list[Upload],
    created: list[Job],
) -> list[JobFaces]:
    """Wait (bounded) for committed, enqueued jobs; return each one's faces.

    Raises WorkerTimeout when no worker finished them within gallery.wait_s, UnusableFace
    (naming the image) when a job failed.
    """
    deadline = time.monotonic() + settings.gallery.wait_s
    finished = await asyncio.gather(
        *(
            jobs.wait_for_job(redis, job.id, timeout_s=max(deadline - time.monotonic(), 0.001))
            for job in created
        )
    )
    if not all(finished):
        late = [str(job.id) for job, done in zip(created, finished, strict=True) if not done]
        raise WorkerTimeout(
            f"no worker finished job(s) {', '.join(late)} within {settings.gallery.wait_s:g} s; "
            "check that workers are running (GET /health/ready) and retry"
        )
    results = []
    for upload, job in zip(uploads, created, strict=True):
        found = await job_faces(session, upload, job.id)
        if isinstance(found, JobGone):
            raise NotFound(f"{upload.name}: job {job.id} was deleted while it ran")
        if isinstance(found, str):
            raise UnusableFace(f"{upload.name}: {found}")
        results.append(found)
    return results


@asynccontextmanager
async def discarded_when_done(
    session: AsyncSession, storage: Storage, created: Sequence[Job]
) -> AsyncIterator[None]:
    """Delete `created` (enrollment jobs) when the block ends, however it ends.

    The block commits the jobs (for the workers), waits for them and copies their faces. On
    success the deletion is flushed into the block's transaction: the faces copied from the
    jobs and the jobs' deletion commit together, at the request's commit. On any error (a
    refusal, a worker timeout, a cancelled request) the block's uncommitted changes are rolled
    back (a person or subject it created too, so nothing empty is left), the work queued for
    the commit is dropped, the deletion is committed here, and the error goes on. This is the
    one commit of this module: the request's own commit will not happen after an error."""
    job_ids = [job.id for job in created]  # read now: a rollback expires the rows
    try:
        yield
    except BaseException:
        await session.rollback()
        discard_pending(session)
        await discard_jobs(session, storage, job_ids)
        await commit(session)
        raise
    await discard_jobs(session, storage, job_ids)


class JobGone(str):
    """job_faces' answer for a job deleted while it ran."""


async def job_faces(session: AsyncSession, upload: Upload, job_id: uuid.UUID) -> JobFaces | str:
    """A finished job's faces; or why there are none to use (a failed job's error)."""
    fresh = await session.get(Job, job_id, populate_existing=True)
    if fresh is None:
        return JobGone(f"job {job_id} was deleted while it ran")
    if fresh.status != JobStatus.done:
        return fresh.error or "the image could not be processed"
    rows = await session.execute(
        select(Detection, FaceEmbedding)
        .join(FaceEmbedding, FaceEmbedding.detection_id == Detection.id)
        .where(Detection.job_id == job_id)
        .order_by(Detection.id)
    )
    return JobFaces(upload, fresh, [Face(d, e) for d, e in rows])


async def discard_jobs(session: AsyncSession, storage: Storage, job_ids: list[uuid.UUID]) -> None:
    """Delete jobs that existed only to run a gallery call (enrollment): their rows, and with
    them their detections and face embeddings (ON DELETE CASCADE), and their stored images.

    Safe while a worker still has one: it skips a job whose row is gone, and removes the
    processed image it may have written for it."""
    deleted = await session.execute(
        delete(Job).where(Job.id.in_(job_ids)).returning(Job.image_key, Job.processed_image_key)
    )
    keys = [key for row in deleted.all() for key in row if key is not None]
    await session.flush()
    for key in keys:
        storage.delete(key)


# --- enrollment --------------------------------------------------------------------------------


async def enroll(
    session: AsyncSession,
    settings: Settings,
    person: Person,
    results: list[JobFaces],
    *,
    link_source: bool,
) -> EnrollOut:
    """All or nothing: every image must hold exactly one usable face, else UnusableFace (422)
    names each bad image and why, and no face is stored. A face the person already has
    (raw cosine ≥ gallery.duplicate_threshold) is reported in `duplicates`, not stored again.

    link_source: record the job and detection each face came from. False for uploaded photos,
    whose jobs the caller discards (discard_jobs) once their embeddings are copied here."""
    # The person may have been deleted while the workers ran: say so (the faces' insert failed
    # on its foreign key, a 500), and hold them until this commits (a deletion waits).
    still_there = await session.scalar(
        select(Person.id).where(Person.id == person.id).with_for_update(read=True, key_share=True)
    )
    if still_there is None:
        raise NotFound(f"person {person.id} was deleted while its photos were processed")
    enrolled: list[PersonFace] = []
    duplicates: list[DuplicateOut] = []
    for result, face, quality in _usable_faces(settings, results):
        added = await enroll_face(
            session, settings, person, result, face, quality, link_source=link_source
        )
        if isinstance(added, DuplicateOut):
            duplicates.append(added)
        else:
            enrolled.append(added)
    return EnrollOut(
        person=await person_detail(session, person),
        enrolled=[enrolled_face(f) for f in enrolled],
        duplicates=duplicates,
    )


async def enroll_face(
    session: AsyncSession,
    settings: Settings,
    person: Person,
    result: JobFaces,
    face: Face,
    quality: FaceQuality,
    *,
    link_source: bool,
) -> PersonFace | DuplicateOut:
    """Add one usable face (see usable_face) to the person, with its crop; or, when the person
    already has it (raw cosine ≥ gallery.duplicate_threshold), report the duplicate instead."""
    nearest = await matching.nearest_face_of_person(
        session, face.embedding.embedding, model=face.embedding.model, person_id=person.id
    )
    if nearest is not None and nearest[1] >= settings.gallery.duplicate_threshold:
        return DuplicateOut(
            image=result.upload.name, existing_face_id=nearest[0], similarity=nearest[1]
        )
    crop = await session.scalar(
        select(FaceCrop.jpeg).where(FaceCrop.detection_id == face.detection.id)
    )
    row = _person_face(person, result, face, quality, crop, link_source=link_source)
    session.add(row)
    await session.flush()  # the next image's duplicate check sees this face
    return row


def usable_face(settings: Settings, result: JobFaces) -> tuple[Face, FaceQuality] | str:
    """The image's one face and its quality, or why it cannot be enrolled."""
    if not result.faces:
        return "no face found"
    if len(result.faces) > 1:
        return f"{len(result.faces)} faces found; enroll photos showing exactly one face"
    face = result.faces[0]
    quality = assess_face(
        face.detection.box,
        face.detection.landmarks or [],
        float(face.detection.attributes.get("sharpness", 0.0)),
        thresholds(settings),
    )
    if not quality.usable:
        return "; ".join(quality.problems)
    return face, quality


def _usable_faces(
    settings: Settings, results: list[JobFaces]
) -> list[tuple[JobFaces, Face, FaceQuality]]:
    """The one face of each image with its quality; UnusableFace naming every bad image."""
    problems: list[str] = []
    accepted = []
    for result in results:
        usable = usable_face(settings, result)
        if isinstance(usable, str):
            problems.append(f"{result.upload.name}: {usable}")
        else:
            accepted.append((result, *usable))
    if problems:
        raise UnusableFace("cannot enroll: " + " | ".join(problems))
    return accepted


def _person_face(
    person: Person,
    result: JobFaces,
    face: Face,
    quality: FaceQuality,
    crop: bytes | None,
    *,
    link_source: bool,
) -> PersonFace:
    return PersonFace(
        id=uuid.uuid4(),
        crop_jpeg=crop,
        person_id=person.id,
        model=face.embedding.model,
        dim=face.embedding.dim,
        embedding=face.embedding.embedding,
        source_job_id=result.job.id if link_source else None,
        source_detection_id=face.detection.id if link_source else None,
        face_px=quality.face_px,
        sharpness=quality.sharpness,
        yaw_ratio=quality.yaw_ratio,
    )


async def promote(
    session: AsyncSession,
    settings: Settings,
    storage: Storage,
    face_id: int,
    viewer: Principal,
    *,
    person_id: uuid.UUID | None,
    name: str | None,
) -> EnrollOut:
    """Enroll a face seen in a past job (e.g. an unknown one) to an existing or a new person."""
    row = (
        await session.execute(
            select(Detection, FaceEmbedding, Job)
            .join(FaceEmbedding, FaceEmbedding.detection_id == Detection.id)
            .join(Job, Job.id == Detection.job_id)
            .where(Detection.id == face_id)
        )
    ).first()
    if row is None or not (viewer.sees_every_job or row[2].owner_id == viewer.owner_id):
        raise NotFound(f"no face with id {face_id}")
    detection, embedding, job = row
    promoted_to = await session.scalar(
        select(PersonFace.person_id).where(PersonFace.source_detection_id == face_id)
    )
    if promoted_to is not None:
        raise Conflict(
            f"face {face_id} is already enrolled (person {promoted_to}); move it instead "
            f"(POST /v1/faces/{face_id}/move)"
        )
    # The face's owner is the person's: a person of another key (or a node frame's face, which
    # has none, given to an admin key's person) would be identified against the wrong gallery.
    if person_id is not None:
        person = await get_person(session, person_id, viewer)
        if person.owner_id != job.owner_id:
            raise InvalidInput("the face and the person belong to different API keys")
    else:
        assert name is not None
        person = await create_person(session, name, job.owner_id)
    # A promoted face is enrolled on the same terms as an uploaded one (quality, duplicates).
    upload = Upload(name=f"face {face_id}", data=b"")
    enrolled = await enroll(
        session,
        settings,
        person,
        [JobFaces(upload, job, [Face(detection, embedding)])],
        link_source=True,  # the past job stays: it is its owner's result
    )
    # Placed by hand: the clustering leaves it with this person from now on.
    await session.execute(
        update(UnknownFace)
        .where(UnknownFace.detection_id == face_id)
        .values(person_id=person.id, manual=True)
    )
    await people.record_placement(session, storage, face_id, person)
    return enrolled


# --- identify, verify, search ------------------------------------------------------------------


def identify_result(settings: Settings, result: JobFaces) -> IdentifyOut:
    faces = []
    for face in result.faces:
        attributes = face.detection.attributes
        identity = attributes.get("identity")
        runner_up = attributes.get("runner_up")
        faces.append(
            IdentifiedFace(
                face_id=face.detection.id,
                box=list(face.detection.box),
                score=face.detection.score,
                identity=IdentityOut(**identity) if identity else None,
                unknown=not identity,
                similarity=identity["similarity"] if identity else attributes.get("similarity"),
                threshold=attributes.get("threshold", settings.gallery.match_threshold),
                runner_up=RunnerUpOut(**runner_up) if runner_up else None,
            )
        )
    return IdentifyOut(
        job_id=result.job.id, threshold=settings.gallery.match_threshold, faces=faces
    )


async def verify(session: AsyncSession, settings: Settings, results: list[JobFaces]) -> VerifyOut:
    """Largest face of each image; cosine computed by pgvector on the stored rows, reported
    calibrated for the model (app/calibration.py) and compared with match_threshold."""
    first, second = (r.largest_face() for r in results)
    if first.embedding.model != second.embedding.model:
        raise InvalidInput("the two faces were embedded by different models; retry")
    similarity = await session.scalar(
        text(
            "SELECT 1 - (a.embedding <=> b.embedding) FROM face_embeddings a, face_embeddings b "
            "WHERE a.detection_id = :a AND b.detection_id = :b"
        ),
        {"a": first.detection.id, "b": second.detection.id},
    )
    value = calibrated_similarity(float(similarity or 0.0), first.embedding.model)
    threshold = settings.gallery.match_threshold
    return VerifyOut(
        same_person=value >= threshold,
        similarity=value,
        threshold=threshold,
        job_ids=[r.job.id for r in results],
    )


async def search_faces(
    session: AsyncSession,
    settings: Settings,
    result: JobFaces,
    viewer: Principal,
    *,
    limit: int,
    min_similarity: float | None = None,
) -> FaceSearchOut:
    """Faces of past jobs most similar to the largest face of the query image, within the job
    retention window and at least `min_similarity` similar (default: the match threshold).
    Past jobs are uploads, node frames and detection calls: not gallery calls, this one
    included (matching.nearest_past_faces)."""
    floor = settings.gallery.match_threshold if min_similarity is None else min_similarity
    face = result.largest_face()
    await matching.use_exact_hnsw_filtering(session)
    since = datetime.now(UTC) - timedelta(seconds=settings.retention.job_ttl_s)
    found = await matching.nearest_past_faces(
        session,
        face.embedding.embedding,
        model=face.embedding.model,
        owner_id=viewer.owner_id,
        every_owner=viewer.sees_every_job,
        since=since,
        limit=min(limit, settings.gallery.max_search_results),
    )
    return FaceSearchOut(
        job_id=result.job.id,
        query_box=list(face.detection.box),
        min_similarity=floor,
        threshold=settings.gallery.match_threshold,
        results=[
            PastFaceOut(
                face_id=f.face_id,
                job_id=f.job_id,
                seen_at=f.created_at,
                box=f.box,
                similarity=f.similarity,
            )
            for f in found
            if f.similarity >= floor
        ],
    )
