"""Recording what happened to jobs, in Postgres: started, finished with results, failed.

The one home of the SQL that writes a job's outcome, shared by the workers (every job) and the
reconciler (a node frame lost before any worker ran it). Each function works in the caller's
session and transaction and returns the events to publish once it has committed (their shape is
app/jobs/events.py); publishing and acking are the caller's.

Writes are idempotent, keyed by job id: only a job that is not finished yet changes (its row is
locked by the write that finishes it; a concurrent write of the same job waits, then finds it
finished), and its detections are written in that same transaction, so a redelivered result
never adds a second set.
"""

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    Text,
    bindparam,
    case,
    cast,
    column,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.gallery.crops import crop_keepers
from app.gallery.people import existing_people, merged_into
from app.jobs import events as job_events
from app.jobs.service import JOB_NODE_NAME, JOBS_TABLE, job_detail, node_name
from app.models import UNFINISHED_STATUSES, Detection, Job, JobStatus


class FoundEmbedding(Protocol):
    """A face embedding as the detectors produce it (workers/detectors/base.py Embedding)."""

    @property
    def model(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def vector(self) -> npt.NDArray[np.float32]: ...


class FoundDetection(Protocol):
    """One detection of a job (workers/detectors/base.py Detection)."""

    @property
    def kind(self) -> str: ...
    @property
    def label(self) -> str | None: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> Sequence[float]: ...
    @property
    def landmarks(self) -> Sequence[Sequence[float]] | None: ...
    @property
    def attributes(self) -> dict[str, Any]: ...
    @property
    def embedding(self) -> FoundEmbedding | None: ...
    @property
    def crop_jpeg(self) -> bytes | None: ...


class Outcome(Protocol):
    """What a job's run found (workers/pipeline.py PipelineResult)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def detections(self) -> Sequence[FoundDetection]: ...
    @property
    def counts(self) -> dict[str, int]: ...
    @property
    def decode_ms(self) -> float: ...
    @property
    def inference_ms(self) -> float: ...


@dataclass
class Recorded:
    """What `record_results` wrote: the events to publish after the commit, in order."""

    events: list[job_events.Event] = field(default_factory=list)
    # The jobs finished by this write, with their number of detections.
    finished: dict[uuid.UUID, int] = field(default_factory=dict)
    # The jobs that were already finished (or are gone): nothing of theirs was written.
    settled_before: list[uuid.UUID] = field(default_factory=list)


def one_statement(outcomes: Mapping[uuid.UUID, Outcome]) -> bool:
    """Whether `record_results` writes these outcomes in one statement (nothing was found, so no
    detections follow the jobs' UPDATE): then it needs no transaction around it."""
    return not any(outcome.detections for outcome in outcomes.values())


async def mark_running(session: AsyncSession, job_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Mark the jobs running; the ids of those that exist and are not yet finished."""
    rows = await session.scalars(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(UNFINISHED_STATUSES))
        .values(status=JobStatus.running, attempts=Job.attempts + 1, started_at=datetime.now(UTC))
        .returning(Job.id)
    )
    return set(rows)


async def record_results(
    session: AsyncSession,
    outcomes: Mapping[uuid.UUID, Outcome],
    *,
    started_at: datetime | None = None,
    deliveries: Mapping[uuid.UUID, int] | None = None,
) -> Recorded:
    """Write the results of several jobs (one outcome per job id) in the caller's transaction.

    A job that is already finished (an earlier delivery, or an earlier try of this one that
    committed before an outage) is left as it is and listed in `settled_before`. A job that
    was never marked running (its batch ended before the worker's running_after_ms) is
    recorded as started at `started_at` (default: now), as `mark_running` would have.
    `deliveries`: each job's delivery count on the work stream; its attempts are at least that.

    One UPDATE marks every unfinished job done (locking it) and returns it; the detections of
    those jobs follow. An unfinished job has no detections to replace: they are written only
    here, in the transaction that finishes their job.
    """
    now = datetime.now(UTC)
    jobs, node_names = await _finish_unfinished(
        session, outcomes, now=now, started_at=started_at or now, deliveries=deliveries or {}
    )
    rows = await _write_detections(session, jobs, outcomes)
    recorded = Recorded(settled_before=[job_id for job_id in outcomes if job_id not in jobs])
    for job_id, job in jobs.items():
        detail = job_detail(job, rows[job_id], node_name=node_names[job_id])
        recorded.events.extend(job_events.done(detail, job.owner_id))
        recorded.finished[job_id] = len(rows[job_id])
    return recorded


async def record_failure(
    session: AsyncSession, job_id: uuid.UUID, reason: str
) -> list[job_events.Event] | None:
    """Fail the job with `reason`; its events, or None when it was already finished (or gone)."""
    failed = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(UNFINISHED_STATUSES))
        .values(status=JobStatus.failed, error=reason, finished_at=datetime.now(UTC))
        .returning(Job.owner_id, Job.node_id, JOB_NODE_NAME, Job.image_key.is_not(None))
    )
    row = failed.first()
    if row is None:
        return None
    owner_id, node_id, name, stored = row
    return job_events.failed(
        job_id, owner_id, reason, node_id=node_id, node_name=name, stored_image=bool(stored)
    )


async def final_events(session: AsyncSession, job: Job) -> list[job_events.Event]:
    """The events that describe a finished job as it is now (to publish them again)."""
    rows = await session.scalars(
        select(Detection).where(Detection.job_id == job.id).order_by(Detection.id)
    )
    detail = job_detail(job, list(rows), node_name=await node_name(session, job))
    return job_events.snapshot(detail, job.owner_id)


# A batch's outcomes as rows: arrays, unnested in Postgres, so that one statement of one shape
# serves every batch size (compiled once by SQLAlchemy and prepared once by asyncpg).
_BATCH = (
    func.unnest(
        bindparam("ids", type_=ARRAY(UUID(as_uuid=True))),
        bindparam("widths", type_=ARRAY(Integer)),
        bindparam("heights", type_=ARRAY(Integer)),
        bindparam("counts", type_=ARRAY(Text)),
        bindparam("decode_ms", type_=ARRAY(Float)),
        bindparam("inference_ms", type_=ARRAY(Float)),
        bindparam("deliveries", type_=ARRAY(Integer)),
    )
    .table_valued(
        column("id", UUID(as_uuid=True)),
        column("width", Integer),
        column("height", Integer),
        column("counts", Text),
        column("decode_ms", Float),
        column("inference_ms", Float),
        column("deliveries", Integer),
    )
    .render_derived(name="batch")
)
# SET sees the row as it was: a job never marked running (its mark deferred by
# worker.running_after_ms) gets what mark_running would have written. Every delivery is an
# attempt, also one that died before its running mark: a batch killed in inference leaves no
# mark. Built once, a Core statement: SQLAlchemy keeps its cache key, and no ORM bookkeeping
# runs per batch (the two showed in about a fifth of a no-op worker's py-spy samples).
_FINISH = (
    update(JOBS_TABLE)
    .where(JOBS_TABLE.c.id == _BATCH.c.id, JOBS_TABLE.c.status.in_(UNFINISHED_STATUSES))
    .values(
        status=JobStatus.done,
        width=_BATCH.c.width,
        height=_BATCH.c.height,
        counts=cast(_BATCH.c.counts, JSONB),
        decode_ms=_BATCH.c.decode_ms,
        inference_ms=_BATCH.c.inference_ms,
        started_at=func.coalesce(
            JOBS_TABLE.c.started_at, bindparam("batch_started_at", type_=DateTime(timezone=True))
        ),
        attempts=func.greatest(
            case(
                (JOBS_TABLE.c.started_at.is_(None), JOBS_TABLE.c.attempts + 1),
                else_=JOBS_TABLE.c.attempts,
            ),
            _BATCH.c.deliveries,
        ),
        finished_at=bindparam("finished_now", type_=DateTime(timezone=True)),
    )
    .returning(*JOBS_TABLE.c, JOB_NODE_NAME.label("node_name"))
)


async def _finish_unfinished(
    session: AsyncSession,
    outcomes: Mapping[uuid.UUID, Outcome],
    *,
    now: datetime,
    started_at: datetime,
    deliveries: Mapping[uuid.UUID, int],
) -> tuple[dict[uuid.UUID, Job], dict[uuid.UUID, str | None]]:
    """Mark the unfinished ones of these jobs done, in one UPDATE: (those jobs by id, as
    updated, and their node names). The jobs are not tracked by the session: they are read.

    The jobs come in the order of `outcomes` (the batch's, the stream's), not the order Postgres
    returns rows in: their events are published in this order, and a node's results must
    reach it in the order it sent its frames.
    """
    jobs_in_order = list(outcomes)
    updated = await session.execute(
        _FINISH,
        {
            "ids": jobs_in_order,
            "widths": [outcomes[j].width for j in jobs_in_order],  # upright, from the pixels
            "heights": [outcomes[j].height for j in jobs_in_order],
            "counts": [json.dumps(outcomes[j].counts) for j in jobs_in_order],
            "decode_ms": [outcomes[j].decode_ms for j in jobs_in_order],
            "inference_ms": [outcomes[j].inference_ms for j in jobs_in_order],
            "deliveries": [deliveries.get(j, 0) for j in jobs_in_order],
            "batch_started_at": started_at,
            "finished_now": now,
        },
    )
    found: dict[uuid.UUID, tuple[Job, str | None]] = {}
    for row in updated.mappings():
        fields = dict(row)
        name = fields.pop("node_name")
        found[fields["id"]] = (Job(**fields), name)
    jobs = {job_id: found[job_id][0] for job_id in outcomes if job_id in found}
    return jobs, {job_id: found[job_id][1] for job_id in jobs}


# A batch's detections, their faces' embeddings and the crops kept, in one statement: one round
# trip and no ORM unit of work (its three flushes cost a worker ~2 ms of CPU more per job of 6
# faces, bench/RESULTS.md). Ids are drawn from the detections' sequence first, so the embeddings
# and crops insert beside their detections, and come back in the batch's order.
# Every row is a position in parallel arrays; boxes (4 numbers each) and embeddings (dim each)
# are flat arrays sliced per row: unnest would flatten a 2-D array into single numbers.
_WRITE_DETECTIONS = text(
    """
WITH batch AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('detections', 'id')) AS id, b.*
    FROM unnest(
        CAST(:job_ids AS uuid[]), CAST(:kinds AS text[]), CAST(:labels AS text[]),
        CAST(:scores AS float8[]), CAST(:landmarks AS jsonb[]), CAST(:attributes AS jsonb[]),
        CAST(:models AS text[]), CAST(:dims AS integer[]), CAST(:starts AS integer[]),
        CAST(:ends AS integer[]), CAST(:crops AS bytea[])
    ) WITH ORDINALITY
        AS b(job_id, kind, label, score, landmarks, attributes, model, dim, start, stop, crop, n)
), detection_rows AS (
    INSERT INTO detections (id, job_id, kind, label, score, box, landmarks, attributes)
    SELECT id, job_id, kind, label, score, (CAST(:boxes AS float8[]))[4 * n - 3 : 4 * n],
           landmarks, attributes
    FROM batch
), embedding_rows AS (
    INSERT INTO face_embeddings (detection_id, job_id, model, dim, embedding)
    SELECT id, job_id, model, dim, CAST((CAST(:vectors AS real[]))[start : stop] AS vector)
    FROM batch WHERE model IS NOT NULL
), crop_rows AS (
    INSERT INTO face_crops (detection_id, job_id, jpeg)
    SELECT id, job_id, crop FROM batch WHERE crop IS NOT NULL
)
SELECT id FROM batch ORDER BY n
"""
)


async def _write_detections(
    session: AsyncSession, jobs: Mapping[uuid.UUID, Job], outcomes: Mapping[uuid.UUID, Outcome]
) -> dict[uuid.UUID, list[Detection]]:
    """Insert the detections of these just-finished jobs, with their embeddings and the crops
    their privacy keeps (app/gallery/crops.py); each job's detections as written (ids set)."""
    found = [(job_id, d) for job_id in jobs for d in outcomes[job_id].detections]
    rows: dict[uuid.UUID, list[Detection]] = {job_id: [] for job_id in jobs}
    if not found:
        return rows
    keep_crops = await crop_keepers(
        session, [job for job_id, job in jobs.items() if _has_crops(outcomes[job_id])]
    )
    vanished = await _vanished_people(session, [d for _, d in found])
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "job_ids", "kinds", "labels", "scores", "landmarks", "attributes",
            "models", "dims", "starts", "ends", "crops", "boxes", "vectors",
        )
    }  # fmt: skip
    written: list[Detection] = []  # the rows as written, their ids set from the INSERT
    for job_id, d in found:
        attributes, forgotten = _without_people(d.attributes, vanished)
        landmarks = [list(p) for p in d.landmarks] if d.landmarks else None
        written.append(
            Detection(
                job_id=job_id,
                kind=d.kind,
                label=d.label,
                score=d.score,
                box=list(d.box),
                landmarks=landmarks,
                attributes=attributes,
            )
        )
        columns["job_ids"].append(job_id)
        columns["kinds"].append(d.kind)
        columns["labels"].append(d.label)
        columns["scores"].append(float(d.score))
        columns["landmarks"].append(None if landmarks is None else json.dumps(landmarks))
        columns["attributes"].append(json.dumps(attributes))
        x1, y1, x2, y2 = d.box  # four numbers a row, or the slices would shift
        columns["boxes"].extend((float(x1), float(y1), float(x2), float(y2)))
        embedding = None if forgotten else d.embedding
        columns["models"].append(embedding.model if embedding else None)
        columns["dims"].append(embedding.dim if embedding else None)
        # Its own length, not `dim`, bounds the slice: the table's CHECK (dimensions = dim)
        # still sees a vector that is not as long as its model says.
        columns["starts"].append(len(columns["vectors"]) + 1 if embedding else None)
        if embedding:
            columns["vectors"].extend(embedding.vector.tolist())
        columns["ends"].append(len(columns["vectors"]) if embedding else None)
        columns["crops"].append(d.crop_jpeg if job_id in keep_crops and not forgotten else None)
    ids = (await session.execute(_WRITE_DETECTIONS, columns)).scalars()
    for detection_id, row in zip(ids, written, strict=True):
        row.id = detection_id
        rows[row.job_id].append(row)
    return rows


async def _vanished_people(
    session: AsyncSession, found: Sequence[FoundDetection]
) -> dict[str, str | None]:
    """The people these detections name (identity, runner-up) who were deleted or merged away
    while their job ran (the gallery step read them before, the write comes after): the one each
    was merged into, None for one deleted."""
    named = {
        person["person_id"]
        for d in found
        for person in (d.attributes.get("identity"), d.attributes.get("runner_up"))
        if isinstance(person, dict) and person.get("person_id")
    }
    gone = named - await existing_people(session, named)
    merged = await merged_into(session, gone)
    return {person: merged.get(person) for person in gone}


def _without_people(
    attributes: dict[str, Any], vanished: Mapping[str, str | None]
) -> tuple[dict[str, Any], bool]:
    """A face's attributes naming, for a person merged away, the one they were merged into (the
    name as the job recorded it, as merge_people leaves the faces written before), and without
    a deleted person; and whether the face was a deleted person's: then it is forgotten as
    delete_people forgets their faces (its box stays, an unknown face without embedding or crop,
    so that it never clusters again as a new person)."""
    if not vanished:
        return attributes, False
    out, forgotten = attributes, False
    for key in ("identity", "runner_up"):
        person = attributes.get(key)
        if not isinstance(person, dict) or person.get("person_id") not in vanished:
            continue
        into = vanished[person["person_id"]]
        if into is not None:
            out = {**out, key: {**person, "person_id": into}}
        elif key == "identity":
            out, forgotten = {**out, "identity": None, "unknown": True}, True
        else:
            out = {**out, "runner_up": None}
    return out, forgotten


def _has_crops(outcome: Outcome) -> bool:
    return any(d.crop_jpeg is not None for d in outcome.detections)
