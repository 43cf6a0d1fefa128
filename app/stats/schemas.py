"""API schemas for statistics. Times are RFC 3339 in UTC (`Z`)."""

import uuid

from pydantic import BaseModel, ConfigDict, Field

from app import openapi_examples as examples
from app.timestamps import UtcDatetime


class CountBucket(BaseModel):
    start: UtcDatetime
    end: UtcDatetime
    frames: int = Field(description="finished jobs in the bucket, with or without detections")
    counts: dict[str, int] = Field(
        description="detections per label (label → n): COCO classes, face, qr, text, and each "
        "licence plate read as `plate:<string>`; zeros omitted",
        examples=[{"car": 3, "person": 2, "plate:KX51RTA": 1}],
    )


class CountsReport(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True, json_schema_extra={"examples": [examples.COUNTS_REPORT]}
    )

    node_id: uuid.UUID | None = Field(description="null: every job, uploads included")
    from_: UtcDatetime = Field(
        alias="from", description="start of the first bucket: the requested `from`, floored"
    )
    to: UtcDatetime = Field(description="exclusive; the last bucket ends here")
    bucket: str = Field(examples=["1h"])
    bucket_s: int
    buckets: list[CountBucket] = Field(description="every bucket from `from` to `to`, in order")
    totals: dict[str, int]
