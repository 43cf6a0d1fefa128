"""API schemas for jobs. Separate from the ORM tables in app/models.py."""

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app import openapi_examples as examples
from app.jobs.tasks import TaskName
from app.models import JobPurpose, JobStatus
from app.schema_types import PixelBox, PixelPoints, Score


class JobSource(enum.StrEnum):
    """Where a job's image came from: an upload (POST /v1/images, the gallery, the compatible
    APIs) or an edge node's frame."""

    upload = "upload"
    node = "node"


class JobLinks(BaseModel):
    self: str
    events: str = Field(description="WebSocket: replays this job's events, then streams new ones")
    image: str | None = Field(
        description="the uploaded image; null for a node frame that was not stored"
    )
    processed_image: str | None = Field(
        description="JPEG with the detections drawn, drawn on the first request (409 until the "
        "job is done); null for a node frame that was not stored and for a failed job"
    )


class ImageOut(BaseModel):
    width: int
    height: int
    content_type: str


class Timings(BaseModel):
    """Milliseconds. `queue_ms`: accepted → picked up; `total_ms`: accepted → finished;
    `inference_ms`: the batch this job ran in (shared with the other jobs of the batch)."""

    queue_ms: float | None = None
    decode_ms: float | None = None
    inference_ms: float | None = None
    total_ms: float | None = None


class DetectionOut(BaseModel):
    id: int = Field(
        description="the detection's id; a face's id is the face_id of "
        "POST /v1/faces/{face_id}/promote",
        examples=[42],
    )
    kind: str = Field(description="face, object, qr, text or plate", examples=["face"])
    label: str | None = Field(default=None, examples=["face"])
    score: Score = Field(examples=[0.87])
    box: PixelBox = Field(description="x1, y1, x2, y2 in pixels", examples=[[10, 20, 110, 150]])
    landmarks: PixelPoints = Field(
        default=None,
        description="key points in pixels: a face's five (eyes, nose, mouth corners), "
        "a QR code's, a text region's or a plate's four corners (top-left, top-right, "
        "bottom-right, bottom-left)",
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="faces: embedding_model, age, gender (when the pack has genderage); "
        "QR codes: payload (its text; U+FFFD for bytes that are not text); text: text, line "
        "(0-based, reading order); plates: plate (upper-case letters and digits), text (as "
        "read), vehicle {label, score, box}",
        examples=[{"embedding_model": "w600k_mbf", "age": 31, "gender": "female"}],
    )


class JobSummary(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DOG_JOB_SUMMARY]})

    id: uuid.UUID
    status: JobStatus
    purpose: JobPurpose = Field(
        default=JobPurpose.detect,
        description="the call that made it: detect (uploads, node frames, detection routes; "
        "counted in stats, found by face search), identify (identify/recognize calls), "
        "compare (verify, face search, match); see README, Gallery calls",
    )
    tasks: list[TaskName] = Field(
        description="what the job runs (identify: its faces matched against the gallery)"
    )
    image: ImageOut
    counts: dict[str, int] = Field(default_factory=dict, examples=[{"face": 6}])
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings: Timings
    links: JobLinks
    node_id: uuid.UUID | None = Field(default=None, description="edge node that sent the frame")
    node_name: str | None = Field(
        default=None, description="that node's name; null for uploads", examples=["gate-cam"]
    )


class JobDetail(JobSummary):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.JOB_DONE]})

    detections: list[DetectionOut] = Field(default_factory=list)
    text: str | None = Field(
        default=None,
        description="tasks=text: the text found, in reading order (a line's regions joined by "
        "spaces, lines by newlines; empty when there is none); null for jobs without the task",
        examples=["Region-based segmentation\nLet us first determine markers of the coins"],
    )


class JobPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.JOB_PAGE]})

    items: list[JobSummary]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last page"
    )
