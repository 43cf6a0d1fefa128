"""API schemas for the gallery (people, enrollment, identify, verify, face search)."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from app import openapi_examples as examples
from app.schema_types import PixelBox, Score, storable_text

# Surrounding spaces are dropped before the length check: a name of spaces alone is refused.
PersonName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(storable_text),
]


class PersonIn(BaseModel):
    name: PersonName = Field(examples=["obama"])


class PersonPatch(BaseModel):
    """Rename (or name an unnamed person: its faces join the gallery), or ignore a cluster."""

    # The schema says what the validator below enforces: at least one field.
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: PersonName | None = None
    ignored: bool | None = Field(
        default=None, description="true: hide this unnamed person from ?named=false"
    )

    @model_validator(mode="after")
    def _something(self) -> "PersonPatch":
        if self.name is None and self.ignored is None:
            raise ValueError("give name, ignored, or both")
        return self


class EnrolledFaceOut(BaseModel):
    id: uuid.UUID
    model: str = Field(examples=["w600k_mbf"])
    source_job_id: uuid.UUID | None = None
    face_px: float = Field(description="shorter side of the face box, pixels")
    sharpness: float = Field(description="Laplacian variance of the aligned crop")
    yaw_ratio: float = Field(description="0 frontal; larger is more turned")
    created_at: datetime
    source_face_id: int | None = Field(
        default=None, description="the face (of a past job) it was enrolled from, if any"
    )
    thumbnail_url: str | None = Field(
        default=None, description="the aligned face crop (JPEG); null where none was kept"
    )


class SightingOut(BaseModel):
    """A face of a past job that got no identity, placed with this person by the clustering
    (or by hand)."""

    face_id: int = Field(description="the face's id in its job (detections)")
    job_id: uuid.UUID
    seen_at: datetime
    node_id: uuid.UUID | None = Field(default=None, description="null: an upload")
    manual: bool = Field(description="placed by hand; the clustering never moves it")
    enrolled: bool = Field(description="also in the gallery (identifies later sightings)")
    thumbnail_url: str | None = Field(
        default=None, description="null: no crop kept (a node whose policy keeps none)"
    )


class SourceCount(BaseModel):
    node_id: uuid.UUID | None = Field(description="null: uploads")
    node_name: str | None = None
    faces: int


class PersonOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.PERSON]})

    id: uuid.UUID
    name: str | None = Field(description="null: an unnamed person (a cluster of unknown faces)")
    named: bool
    ignored: bool = False
    created_at: datetime
    face_count: int = Field(description="enrolled faces (the gallery)")
    faces: list[EnrolledFaceOut] = Field(default_factory=list)
    sighting_count: int = Field(default=0, description="unknown faces placed with this person")
    sightings: list[SightingOut] = Field(
        default_factory=list, description="newest first; in lists, at most `sightings` of them"
    )
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    sources: list[SourceCount] = Field(default_factory=list)


class PersonDetail(PersonOut):
    pass


class MergeIn(BaseModel):
    person_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=100, description="people merged into this one, then deleted"
    )


class MoveIn(BaseModel):
    person_id: uuid.UUID | None = Field(
        description="the person the face belongs to; null: not this person (back to unknown)"
    )


class MovedOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.MOVED]})

    face_id: int
    person_id: uuid.UUID | None
    enrolled: bool = Field(description="the face joined the target person's gallery")


class PersonPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.PERSON_PAGE]})

    items: list[PersonOut]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last page"
    )


class DuplicateOut(BaseModel):
    image: str = Field(description="file name of the upload")
    existing_face_id: uuid.UUID
    similarity: float = Field(description="RAW cosine to the existing face (≥ duplicate_threshold)")


class EnrollOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.ENROLLED]})

    person: PersonDetail
    enrolled: list[EnrolledFaceOut] = Field(description="faces stored by this request")
    duplicates: list[DuplicateOut] = Field(
        default_factory=list,
        description="uploads whose face the person already has (near-duplicates, not stored)",
    )


CALIBRATED = "calibrated similarity in (0, 1): same person ≥ ~0.6, strangers < ~0.4 (README)"


class IdentityOut(BaseModel):
    person_id: uuid.UUID
    name: str
    similarity: float = Field(description=CALIBRATED)


class RunnerUpOut(BaseModel):
    person_id: uuid.UUID
    name: str
    similarity: float


class IdentifiedFace(BaseModel):
    face_id: int = Field(description="id of the face in this job; see /v1/faces/{id}/promote")
    box: PixelBox = Field(description="x1, y1, x2, y2 in pixels (0.1 px)")
    score: Score
    identity: IdentityOut | None = None
    unknown: bool = Field(description="true when no enrolled person is similar enough")
    similarity: float | None = Field(
        default=None,
        description="calibrated similarity of the best enrolled face (matched or not)",
    )
    threshold: float | None = Field(
        default=None, description="the match threshold that applied to this face"
    )
    runner_up: RunnerUpOut | None = Field(
        default=None, description="the next best person (at most one face per person)"
    )


class IdentifyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.IDENTIFIED]})

    job_id: uuid.UUID
    threshold: float = Field(description="gallery.match_threshold, on the calibrated scale")
    faces: list[IdentifiedFace]


class VerifyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.VERIFIED]})

    same_person: bool
    similarity: float = Field(description=CALIBRATED)
    threshold: float = Field(description="gallery.match_threshold, on the calibrated scale")
    job_ids: list[uuid.UUID]


class PastFaceOut(BaseModel):
    face_id: int
    job_id: uuid.UUID
    seen_at: datetime = Field(description="when the job was created")
    box: PixelBox = Field(description="x1, y1, x2, y2 in pixels (0.1 px)")
    similarity: float = Field(description=CALIBRATED)


class FaceSearchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.SEARCHED]})

    job_id: uuid.UUID = Field(description="the job that embedded the query image")
    query_box: PixelBox = Field(description="the query face: x1, y1, x2, y2 in pixels (0.1 px)")
    min_similarity: float = Field(description="only faces at least this similar are listed")
    threshold: float = Field(description="the gallery's match threshold")
    results: list[PastFaceOut]


class PromoteIn(BaseModel):
    """Exactly one: an existing person's id, or a name for a new person."""

    person_id: uuid.UUID | None = None
    name: PersonName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "PromoteIn":
        if (self.person_id is None) == (self.name is None):
            raise ValueError("give exactly one of person_id (existing person) or name (new one)")
        return self


class ImportProblemOut(BaseModel):
    photo: str = Field(description="the photo's path in the import: person/file.jpg")
    reason: str


class ImportOut(BaseModel):
    """A bulk enrollment (POST /v1/people/import). Poll it until `status` is done or failed;
    the counters move once per batch of photos (each batch is one transaction)."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.IMPORT_DONE]})

    id: uuid.UUID
    status: str = Field(description="queued | running | done | failed")
    total: int = Field(description="photos in the import")
    processed: int = Field(description="photos handled so far: enrolled + duplicates + refused")
    enrolled: int = Field(description="faces added to the gallery")
    duplicates: int = Field(description="photos whose face the person already had (not stored)")
    refused: int = Field(description="photos refused (no face, several faces, poor quality…)")
    people_created: int = Field(description="people created for names not seen before")
    problems: list[ImportProblemOut] = Field(
        description="why photos were refused (the first ones, when there are very many)"
    )
    error: str | None = Field(default=None, description="why a failed import stopped")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status_url: str = Field(description="GET it for progress")
