"""ORM tables. Times are timestamptz in UTC. API schemas live apart, in */schemas.py."""

import enum
import uuid
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = (JobStatus.done, JobStatus.failed)
UNFINISHED_STATUSES = (JobStatus.queued, JobStatus.running)
# The jobs not finished yet: a few at any time, however many finished ones are kept (30 days by
# default, millions at a camera's frame rate). The partial indexes of Job are on this predicate,
# and the queries that look for such jobs (the reconciler, a node's backlog, /metrics) say it
# the same way, as constants: the planner uses a partial index only where it can prove the
# query's rows lie in it, which a bound parameter (a prepared statement's generic plan) hides.
# (The non-native enum column stores the statuses' names.)
UNFINISHED_JOBS = "status IN ({})".format(", ".join(f"'{s.name}'" for s in UNFINISHED_STATUSES))
# That predicate as a WHERE clause on the jobs table.
JOB_UNFINISHED = text(f"jobs.{UNFINISHED_JOBS}")


class JobPurpose(enum.StrEnum):
    """Why a job was made, which decides where its results count (README, "Gallery calls").

    detect: the caller wants the detections (POST /v1/images, node frames, the DeepStack and
    CompreFace detection routes): counted in /v1/stats, found by face search, clustered.
    identify: "who is this?" (/v1/identify, DeepStack and CompreFace recognize). Integrations
    such as Double Take send every camera snapshot here, so its unknown faces are real
    sightings and are clustered; but they are not counted in stats nor found by face search,
    where asking twice about one photo would find the first question at similarity 1.0.
    compare: verify, face search, DeepStack match, CompreFace verification: a question about
    photos the caller already holds, not a sighting: kept as history (/v1/jobs), nothing more.
    enroll: enrollment photos; the job is deleted when the call ends (gallery.discard_jobs).
    """

    detect = "detect"
    identify = "identify"
    compare = "compare"
    enroll = "enroll"


# The purposes whose faces and objects are sightings: uploads, node frames, detection calls,
# and identify calls (Double Take and Frigate send every camera snapshot to DeepStack
# recognize). Not comparisons (photos the caller already holds) nor enrollments. Only these
# are clustered (app/gallery/clusters.py) and sent out as face/object/text events
# (app/events_out/events.py).
SIGHTING_PURPOSES = (JobPurpose.detect, JobPurpose.identify)


class ApiKey(Base):
    """A client credential `lk_<prefix>_<secret>`: only the SHA-256 of the secret is stored.

    Rows are never deleted (revoked_at is set instead), so the jobs they own keep their owner.
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))  # hex digest
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Requests per auth.rate_limit_window_s for this key; None: auth.rate_limit_requests; 0: none.
    rate_limit: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("rate_limit >= 0", name="ck_api_keys_rate_limit"),)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # The API key that created the job; None when it was created while auth was off (dev).
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16),
        default=JobStatus.queued,
    )
    purpose: Mapped[JobPurpose] = mapped_column(
        Enum(JobPurpose, name="job_purpose", native_enum=False, length=16),
        default=JobPurpose.detect,
        server_default=JobPurpose.detect.value,
    )
    tasks: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    # Storage key of the upload; None for a node frame that was never stored.
    image_key: Mapped[str | None] = mapped_column(String(255))
    # Storage key of the processed image, set when it is first drawn (app/jobs/service.py
    # get_processed_image); None until someone asks for it.
    processed_image_key: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    counts: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    decode_ms: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The edge node that sent the frame; None for uploads (and after a node row is deleted).
    node_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("nodes.id", ondelete="SET NULL")
    )

    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        # A key's jobs newest first (GET /v1/jobs); a generic plan walked all jobs without it.
        Index("ix_jobs_owner_created_at_id", "owner_id", "created_at", "id"),
        Index("ix_jobs_node_id_created_at", "node_id", "created_at"),
        # Without these, the reconciler and a node's backlog (counted for every frame it sends)
        # read every job kept: 60-120 ms of Postgres CPU each at a million (bench/kept_jobs.py).
        Index("ix_jobs_unfinished", "created_at", postgresql_where=text(UNFINISHED_JOBS)),
        Index(
            "ix_jobs_unfinished_node",
            "node_id",
            postgresql_where=text(f"node_id IS NOT NULL AND {UNFINISHED_JOBS}"),
        ),
    )
    # Fetch server defaults (created_at) with INSERT … RETURNING instead of a second query.
    __mapper_args__ = {"eager_defaults": True}


class Detection(Base):
    __tablename__ = "detections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # face | object | qr
    label: Mapped[str | None] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    box: Mapped[list[float]] = mapped_column(ARRAY(Float))  # x1, y1, x2, y2 in image pixels
    landmarks: Mapped[list[list[float]] | None] = mapped_column(JSONB)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)

    __table_args__ = (
        # The faces identified as a person (attributes.identity.person_id), found when the person
        # is deleted (app/gallery/people.py delete_people); partial: unknown faces and other
        # detections are not in it.
        # Written as Postgres prints it back, so that `alembic check` finds them equal.
        Index(
            "ix_detections_identity_person",
            text("((attributes -> 'identity'::text) ->> 'person_id'::text)"),
            postgresql_where=text(
                "(((attributes -> 'identity'::text) ->> 'person_id'::text) IS NOT NULL)"
            ),
        ),
        # The faces whose runner-up (attributes.runner_up.person_id) was a person: their name
        # goes from those faces too when the person is deleted.
        Index(
            "ix_detections_runner_up_person",
            text("((attributes -> 'runner_up'::text) ->> 'person_id'::text)"),
            postgresql_where=text(
                "(((attributes -> 'runner_up'::text) ->> 'person_id'::text) IS NOT NULL)"
            ),
        ),
    )


class FaceEmbedding(Base):
    """One face's embedding, stored with the model that made it.

    The vector column has no fixed dimension: the dimension follows the configured embedder
    (512 for ArcFace, 192 for the MobileFaceNet stand-in), and a deployment may switch packs
    while old rows remain. `model` and `dim` are stored per row and a CHECK keeps `dim` honest.
    Similarity queries must filter on `model` (never compare across models); an HNSW index needs
    a fixed dimension, so the gallery adds per-model partial expression indexes, e.g.
    `USING hnsw ((embedding::vector(512)) vector_cosine_ops) WHERE model = 'w600k_mbf'`.
    """

    __tablename__ = "face_embeddings"

    # One embedding per face detection; deleting the detection (or its job) deletes it.
    detection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("detections.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    model: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[npt.NDArray[np.float32]] = mapped_column(Vector())

    __table_args__ = (
        CheckConstraint("vector_dims(embedding) = dim", name="ck_face_embeddings_dim"),
        Index("ix_face_embeddings_model", "model"),
    )


class NodeStatus(enum.StrEnum):
    """The last transition announced on the firehose.

    GET /v1/nodes derives `online` from last_seen_at instead, so it is right between sweeps.
    """

    online = "online"
    offline = "offline"


class NodeState(enum.StrEnum):
    """What the node says it is doing: sending frames, or watching an unchanging scene."""

    active = "active"
    idle = "idle"


class Node(Base):
    """An edge camera node. Revoking sets revoked_at; the row stays so its jobs keep their node."""

    __tablename__ = "nodes"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(255))  # never the secret itself
    # Policy: the tasks its frames run, and whether its frames may be stored at all.
    tasks: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    store_frames: Mapped[bool] = mapped_column(Boolean, default=False)
    # Whether the aligned face crops (thumbnails) of its frames may be kept (issue 16).
    store_face_crops: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # When store_face_crops last became true (NULL: since the node was made). Its frames from
    # before keep no crops: the policy applies from the node's next frame, not to frames still
    # queued when it changed.
    face_crops_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[NodeStatus] = mapped_column(
        Enum(NodeStatus, name="node_status", native_enum=False, length=16),
        default=NodeStatus.offline,
    )
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # From the latest heartbeat.
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[NodeState | None] = mapped_column(
        Enum(NodeState, name="node_state", native_enum=False, length=16)
    )
    fps: Mapped[float | None] = mapped_column(Float)
    latency_ms_p50: Mapped[float | None] = mapped_column(Float)
    dark_scene: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # A name is unique among the nodes in service; a revoked node's name may be reused.
        Index(
            "ux_nodes_name_active",
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


# The owner of rows created while keys were off (owner_id NULL), in unique indexes: NULLs are
# all distinct in Postgres, so the index compares COALESCE(owner_id, NO_OWNER) instead.
NO_OWNER = "00000000-0000-0000-0000-000000000000"


class Person(Base):
    """An identity in the gallery. Scoped like jobs: only its owner key (and admin keys)
    see it; a job identifies faces against the named people of the job's owner.

    `name` NULL: an unnamed person, a cluster of unknown faces (app/gallery/clusters.py); naming
    it enrolls its faces. Names are unique per owner, case-insensitively.
    """

    __tablename__ = "people"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200))
    # An ignored cluster: hidden from ?named=false; its faces stay (so they do not cluster again).
    ignored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_people_created_at_id", "created_at", "id"),
        Index(
            "ux_people_owner_name",
            text(f"COALESCE(owner_id, '{NO_OWNER}'::uuid)"),
            text("lower(name)"),
            unique=True,
            postgresql_where=text("name IS NOT NULL"),
        ),
    )
    __mapper_args__ = {"eager_defaults": True}


class PersonFace(Base):
    """One enrolled face of a person: its embedding (with model and dim, like FaceEmbedding),
    where it came from, and the quality figures it passed with.

    Deleting the person deletes these rows (ON DELETE CASCADE): no embedding outlives its
    identity. The source job/detection may expire first (retention); the reference is then
    cleared, the embedding stays. Per-model HNSW indexes: see migration 0005.
    """

    __tablename__ = "person_faces"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    model: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[npt.NDArray[np.float32]] = mapped_column(Vector())
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="SET NULL")
    )
    source_detection_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("detections.id", ondelete="SET NULL")
    )
    face_px: Mapped[float] = mapped_column(Float)  # shorter side of the face box, in pixels
    sharpness: Mapped[float] = mapped_column(Float)  # Laplacian variance of the aligned crop
    yaw_ratio: Mapped[float] = mapped_column(Float)  # |nose − eye midpoint| / eye distance
    # The embedder's aligned 112×112 input as JPEG: the face's thumbnail, and what a later
    # re-embedding (another model) starts from. None where the source kept no crop.
    crop_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # A model upgrade (`lookout gallery reembed`): this row is the face `reembedded_from`
    # embedded again, from its crop, by another model. Deleting that face deletes this twin;
    # the upgrade clears the link when it drops the old model's faces.
    reembedded_from: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("person_faces.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("vector_dims(embedding) = dim", name="ck_person_faces_dim"),
        Index("ix_person_faces_model", "model"),
        # The faces enrolled since a gallery's in-memory snapshot (app/gallery/memory_index.py).
        Index("ix_person_faces_model_created_at", "model", "created_at"),
        # One twin per face and model: a re-embedding run twice (or twice at once) adds none.
        Index(
            "ux_person_faces_reembedded_from_model",
            "reembedded_from",
            "model",
            unique=True,
            postgresql_where=text("reembedded_from IS NOT NULL"),
        ),
        # A face of a past job is promoted (enrolled) once.
        Index(
            "ux_person_faces_source_detection",
            "source_detection_id",
            unique=True,
            postgresql_where=text("source_detection_id IS NOT NULL"),
        ),
    )
    __mapper_args__ = {"eager_defaults": True}


class PersonMerge(Base):
    """A person merged into another (app/gallery/people.py merge_people), and into whom: a job
    that identified them before the merge and writes after it names the one merged into
    (app/jobs/results.py). Deleting that person deletes the record (CASCADE): their faces are
    forgotten, this one too. A later merge of that person carries the record along."""

    __tablename__ = "person_merges"

    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    into_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    merged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ImportStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class PeopleImport(Base):
    """A bulk enrollment (POST /v1/people/import): photos grouped by person name, run through
    the workers in batches. The photos wait in the image store (archive_key) until it is over;
    the counters are committed with each batch, so progress survives a restart."""

    __tablename__ = "people_imports"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[ImportStatus] = mapped_column(
        Enum(ImportStatus, name="import_status", native_enum=False, length=16),
        default=ImportStatus.queued,
    )
    # Photos in the archive; photos handled so far (enrolled, duplicate or refused).
    total: Mapped[int] = mapped_column(Integer)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    enrolled: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    people_created: Mapped[int] = mapped_column(Integer, default=0)
    # The first refusals: [{"photo": "name/file.jpg", "reason": "…"}].
    problems: Mapped[list[dict[str, str]]] = mapped_column(JSONB, default=list)
    error: Mapped[str | None] = mapped_column(Text)  # why a failed import stopped
    archive_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __mapper_args__ = {"eager_defaults": True}


class FaceCrop(Base):
    """The aligned crop (JPEG) of a face seen in a job: its thumbnail. Kept for uploads, and for
    node frames only where the node's policy allows (store_face_crops). Goes with the detection
    (and so with its job) by ON DELETE CASCADE."""

    __tablename__ = "face_crops"

    detection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("detections.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


class UnknownFace(Base):
    """A face that got no identity, once the clustering pass has seen it: its cluster (an
    unnamed or named person) or none (not yet dense enough: noise, looked at again as new faces
    arrive near it). Its embedding stays where the worker wrote it (face_embeddings, whose
    per-model HNSW index serves the clustering's neighbour queries): no second copy.

    `manual`: placed by a person (moved, "not this person"); the clustering never moves it.
    Goes with the detection/job (CASCADE) and with its person (CASCADE).
    """

    __tablename__ = "unknown_faces"

    detection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("detections.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    person_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("people.id", ondelete="CASCADE")
    )
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("nodes.id", ondelete="SET NULL")
    )
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_unknown_faces_owner_model", "owner_id", "model"),
        # A person's sightings, newest last (read backwards for the newest first; first and
        # last seen from its two ends; migration 0020); also a deleted person's faces (ON
        # DELETE CASCADE).
        Index("ix_unknown_faces_person_seen", "person_id", "seen_at", "detection_id"),
    )


class SightingTally(Base):
    """A change to a person's count of sightings (unknown faces) from one source: +n as faces
    join them, -n as they leave (moved, merged, deleted, expired with their job). Written by
    triggers on unknown_faces (migration 0021), whatever changed it, cascades included; the
    maintenance pass folds each (person, node)'s rows into one and drops those of people gone
    (app/gallery/people.py compact_tallies).

    What it is for: a person's count and sources, and the unnamed people ranked by count, read
    from these few rows instead of counting every sighting at each call (a page of unnamed
    people at a million unknown faces counted all of them; bench/people_page.py). No foreign
    key: a tally written as its person is deleted must not fail or wait on that row; the
    readers join people, so a gone person's rows are never read.
    """

    __tablename__ = "sighting_tallies"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    node_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    sightings: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_sighting_tallies_person_node", "person_id", "node_id"),)


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # waiting for its first attempt or its next retry
    delivered = "delivered"  # the receiver answered 2xx
    dead = "dead"  # retried for events.retry_window_s without success: the dead letter


class Webhook(Base):
    """A subscription of one API key: events of these types, passing these filters, are POSTed
    to url, signed with secret (Standard Webhooks). The secret is shown once, at creation."""

    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # The API key that created it; None while auth was off (dev). Sees what that key sees.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    # An admin key's webhook (or one made with auth off) receives every owner's events.
    sees_all: Mapped[bool] = mapped_column(Boolean, default=False)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(200))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    # Filters; empty lists match everything.
    node_ids: Mapped[list[str]] = mapped_column(ARRAY(String(36)), default=list)
    labels: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    people: Mapped[list[str]] = mapped_column(ARRAY(String(200)), default=list)
    secret: Mapped[str] = mapped_column(String(64))  # whsec_…: needed to sign, so kept
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __mapper_args__ = {"eager_defaults": True}


class WebhookDelivery(Base):
    """One event for one webhook. Delivered in `seq` order per webhook, at least once."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    # Numbered once per row by the identity; no unique index of its own (migration 0018:
    # Postgres walked it in seq order past other webhooks' deliveries).
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True))
    webhook_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhooks.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(80))  # the webhook-id header; stable on retries
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, name="delivery_status", native_enum=False, length=16),
        default=DeliveryStatus.pending,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ux_webhook_deliveries_event", "webhook_id", "event_id", unique=True),
        # A webhook's queue: its head and what waits behind it, in order.
        Index(
            "ix_webhook_deliveries_pending",
            "webhook_id",
            "seq",
            postgresql_where=text("((status)::text = 'pending'::text)"),
        ),
        # Its deliveries page by page, newest first (GET …/deliveries).
        Index("ix_webhook_deliveries_webhook_seq", "webhook_id", "seq"),
        # What deleting a job or a person deletes (app/events_out/service.py), as Postgres
        # prints the expressions back (so that `alembic check` finds them equal).
        Index("ix_webhook_deliveries_job", text("((payload -> 'job'::text) ->> 'id'::text)")),
        Index(
            "ix_webhook_deliveries_person",
            text("(((payload -> 'data'::text) -> 'person'::text) ->> 'id'::text)"),
            postgresql_where=text("((event_type)::text = 'face.identified'::text)"),
        ),
        Index(
            "ix_webhook_deliveries_cluster",
            text("((payload -> 'data'::text) ->> 'cluster_id'::text)"),
            postgresql_where=text("((event_type)::text = 'face.unknown'::text)"),
        ),
    )
    __mapper_args__ = {"eager_defaults": True}
