"""DeepStack's vision API over Lookout's services. No FastAPI here; callers own the commit.

Every image runs as an ordinary job through the worker pool (app/gallery/service.py's
create_jobs/run_jobs: the same stream, workers and result rows as POST /v1/images, so each call
is listed in /v1/jobs and published on the firehose). Faces are the people gallery's: a DeepStack
`userid` is the name of a person owned by the calling API key, the same person GET /v1/people
shows, and recognition is app/gallery/matching.py's nearest-person search.

What DeepStack did, and where Lookout differs (johnolafenwa/DeepStack intelligencelayer/shared/
face.py and detection.py, server/server.go):
- defaults: detection min_confidence 0.40, face detection 0.55, recognition 0.67; register and
  recognize keep faces the detector scores at least 0.55.
- register: DeepStack averaged the photos of one call into one embedding and REPLACED what the
  userid had; Lookout ADDS each photo's face to the person (Double Take registers one photo per
  call: replacing would keep only the last). A photo with no face is skipped, as DeepStack did;
  none at all is 400 "no face detected". The largest face of a photo is the one enrolled (as
  DeepStack took one face per photo), on the gallery's quality terms (size, blur, pose).
- recognize and match report the gallery's similarity, calibrated per embedding model
  (app/calibration.py: same person ≥ ~0.6, strangers < ~0.4, whatever the model), where
  DeepStack reported (cosine + 1) / 2 of its own embedder. A face whose similarity is below
  min_confidence is `unknown` with confidence 0.
- userids are names, so they match as the gallery's names do, whatever their case ("Alice"
  registered from the dashboard is `alice`'s); DeepStack compared them exactly.
- delete: the person goes as every delete of a person does (app/gallery/people.py
  delete_people: their sightings and the faces identified as them are forgotten too). An
  unknown userid deletes nothing and succeeds, as in DeepStack (server.go deleteface) and
  CodeProject.AI: Double Take's retrain and untrain delete names that never trained.
"""

from collections.abc import Sequence

from redis.asyncio import Redis
from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.service import Principal
from app.compat.deepstack.errors import DeepStackError
from app.compat.deepstack.schemas import (
    UNKNOWN_USERID,
    CodeProjectPlatePrediction,
    DeepStackFacePrediction,
    DeepStackObjectPrediction,
    DeepStackRecognizedFace,
)
from app.gallery import matching
from app.gallery import service as gallery
from app.models import Detection, Job, JobPurpose, Person, PersonFace
from app.settings import Settings
from app.storage import Storage

# DeepStack's defaults (server/server.go: detection, facedetection, facerecognition).
OBJECT_MIN_CONFIDENCE = 0.40
FACE_MIN_CONFIDENCE = 0.55
RECOGNIZE_MIN_CONFIDENCE = 0.67
# face.py runs its detector at 0.55 for register and recognize, whatever the caller asks.
FACE_DETECTOR_CONFIDENCE = 0.55

FACE_TASKS = ("faces",)
RECOGNIZE_TASKS = ("faces", "identify")  # the job's own record names the faces too
OBJECT_TASKS = ("objects",)


# --- jobs --------------------------------------------------------------------------------------


async def start_jobs(
    session: AsyncSession,
    redis: Redis,
    storage: Storage,
    settings: Settings,
    uploads: Sequence[gallery.Upload],
    *,
    tasks: tuple[str, ...],
    owner: Principal,
    purpose: JobPurpose,
) -> list[Job]:
    """One job per image (flushed, queued for the next commit): every image is checked first,
    and a bad one (not an image, corrupt, too many pixels) names itself with nothing created.
    `purpose` as the native routes: detect for the detection routes, identify for recognize,
    compare for match, enroll for register (app.gallery.service's module docstring)."""
    return await gallery.create_jobs(
        session,
        redis,
        storage,
        settings,
        list(uploads),
        tasks=tasks,
        owner_id=owner.owner_id,
        purpose=purpose,
    )


async def run_jobs(
    session: AsyncSession,
    redis: Redis,
    settings: Settings,
    uploads: Sequence[gallery.Upload],
    created: list[Job],
) -> list[gallery.JobFaces]:
    """Hand committed jobs to the workers and wait for them (gallery.wait_s at most: then 504);
    a job the worker could not process (an image that does not decode) is a 400."""
    try:
        return await gallery.run_jobs(
            session,
            redis,
            settings,
            list(uploads),
            created,
        )
    except gallery.UnusableFace as exc:
        raise DeepStackError(f"invalid image: {exc.detail}") from exc


# --- boxes and predictions ---------------------------------------------------------------------


def _box(box: Sequence[float], job: Job) -> dict[str, int]:
    """Integer pixels inside the image, as DeepStack's int() of each corner, clamped at 0."""
    x1, y1, x2, y2 = box

    def clamp(value: float, upper: int) -> int:
        return min(max(int(value), 0), upper)

    return {
        "y_min": clamp(y1, job.height),
        "x_min": clamp(x1, job.width),
        "y_max": clamp(y2, job.height),
        "x_max": clamp(x2, job.width),
    }


async def object_predictions(
    session: AsyncSession, job: Job, *, min_confidence: float
) -> list[DeepStackObjectPrediction]:
    """COCO objects of a finished job at or above min_confidence, highest first."""
    rows = await session.scalars(
        select(Detection)
        .where(Detection.job_id == job.id, Detection.kind == "object")
        .order_by(Detection.score.desc(), Detection.id)
    )
    return [
        DeepStackObjectPrediction(
            confidence=round(d.score, 4), label=d.label or "object", **_box(d.box, job)
        )
        for d in rows
        if d.score >= min_confidence
    ]


def face_predictions(
    result: gallery.JobFaces, *, min_confidence: float
) -> list[DeepStackFacePrediction]:
    faces = sorted(result.faces, key=lambda f: -f.detection.score)
    return [
        DeepStackFacePrediction(
            confidence=round(f.detection.score, 4), **_box(f.detection.box, result.job)
        )
        for f in faces
        if f.detection.score >= min_confidence
    ]


def _detected(result: gallery.JobFaces) -> list[gallery.Face]:
    return [f for f in result.faces if f.detection.score >= FACE_DETECTOR_CONFIDENCE]


# --- recognition -------------------------------------------------------------------------------


async def recognize(
    session: AsyncSession, owner: Principal, result: gallery.JobFaces, *, min_confidence: float
) -> list[DeepStackRecognizedFace]:
    """Each face with the caller's nearest enrolled person, or `unknown` (confidence 0) when
    the similarity is below min_confidence; highest confidence first."""
    await matching.use_exact_hnsw_filtering(session)
    predictions = []
    for face in _detected(result):
        embedding = face.embedding
        nearest = await matching.nearest_people(
            session, embedding.embedding, model=embedding.model, owner_id=owner.owner_id, limit=1
        )
        userid, confidence = UNKNOWN_USERID, 0.0
        if nearest and nearest[0].similarity >= min_confidence:
            userid, confidence = nearest[0].name, nearest[0].similarity
        predictions.append(
            DeepStackRecognizedFace(
                confidence=confidence, userid=userid, **_box(face.detection.box, result.job)
            )
        )
    predictions.sort(key=lambda p: -p.confidence)
    return predictions


async def match(
    session: AsyncSession, settings: Settings, results: list[gallery.JobFaces]
) -> float:
    """Calibrated similarity of the largest face of each of two images (the gallery's verify)."""
    if any(not _detected(r) for r in results):
        raise DeepStackError("no face found")
    kept = [gallery.JobFaces(r.upload, r.job, _detected(r)) for r in results]
    return (await gallery.verify(session, settings, kept)).similarity


# --- the gallery as DeepStack's userids ----------------------------------------------------------


def _owned_by(owner: Principal) -> ColumnElement[bool]:
    """People of the calling key: the gallery its recognize calls match against (as a job's
    identify step does), whoever the key is; admin keys too."""
    return Person.owner_id.is_not_distinct_from(owner.owner_id)


async def register(
    session: AsyncSession,
    settings: Settings,
    owner: Principal,
    userid: str,
    results: list[gallery.JobFaces],
) -> str:
    """Add the largest face of each photo to the person named `userid` (created if the key has
    none): "face added" for a new userid, "face updated" for one that existed. Photos without
    a face are skipped; a face refused by the gallery's quality checks refuses the whole call
    (422 from the gallery, 400 here), and nothing is stored."""
    usable = [
        gallery.JobFaces(r.upload, r.job, [max(_detected(r), key=lambda f: f.area)])
        for r in results
        if _detected(r)
    ]
    if not usable:
        raise DeepStackError("no face detected")
    person = await gallery.person_named(session, owner.owner_id, userid)
    existed = person is not None
    if person is None:
        person = await gallery.create_person(session, userid, owner.owner_id)
    await gallery.enroll(session, settings, person, usable, link_source=False)
    return "face updated" if existed else "face added"


async def list_userids(session: AsyncSession, owner: Principal) -> list[str]:
    """The names of the caller's people that have at least one enrolled face, each once."""
    has_face = exists().where(PersonFace.person_id == Person.id)
    named = Person.name.is_not(None)  # unnamed people are clusters of unknown faces
    rows = await session.scalars(
        select(Person.name)
        .where(_owned_by(owner), named, has_face)
        .distinct()
        .order_by(Person.name)
    )
    return [name for name in rows if name is not None]


async def delete_userid(
    session: AsyncSession, storage: Storage, owner: Principal, userid: str
) -> None:
    """Delete the caller's person named `userid` with all their faces; none is no error."""
    person = await gallery.person_named(session, owner.owner_id, userid)
    await gallery.delete_people(session, storage, [] if person is None else [person.id])


# --- CodeProject.AI's licence plate reader ------------------------------------------------------

PLATE_TASKS = ("plates",)
# CodeProject.AI's ALPR answers every plate it reads; Lookout's text engine already drops strings
# read with less than text.score_threshold.
PLATE_MIN_CONFIDENCE = 0.0


async def plate_predictions(
    session: AsyncSession, job: Job, *, min_confidence: float
) -> list[CodeProjectPlatePrediction]:
    """The plates of a finished `plates` job, highest confidence first: each plate's own box
    (not its vehicle's), as CodeProject.AI's module reports it."""
    rows = await session.scalars(
        select(Detection)
        .where(Detection.job_id == job.id, Detection.kind == "plate")
        .order_by(Detection.score.desc(), Detection.id)
    )
    predictions = []
    for d in rows:
        if d.score < min_confidence:
            continue
        plate = str(d.attributes.get("plate", ""))
        predictions.append(
            CodeProjectPlatePrediction(
                confidence=round(d.score, 4),
                label=f"Plate: {plate}",
                plate=plate,
                **_box(d.box, job),
            )
        )
    return predictions


def plates_message(predictions: Sequence[CodeProjectPlatePrediction]) -> str:
    """The module's `message`: the first three plates' labels, "..." after more."""
    if not predictions:
        return "No plates found"
    labels = ", ".join(p.label for p in predictions[:3])
    return f"Found {labels}" + ("..." if len(predictions) > 3 else "")
