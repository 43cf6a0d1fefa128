"""API schemas for webhooks, deliveries and the outbound event model."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.events_out.events import EventType
from app.models import DeliveryStatus

EVENT_EXAMPLE: dict[str, Any] = {
    "v": 1,
    "id": "evt_1764790000000-0_1",
    "type": "face.identified",
    "time": "2026-12-03T21:30:00.123Z",
    "owner_id": "8d1f3c0e-8d3b-4c1e-9b7a-2f0f6f3e9a11",
    "job": {"id": "0b7e8a52-6f7c-4a0e-8f55-2b8e3c1d9f00", "tasks": ["faces", "identify"]},
    "node": {"id": "5c2d7e10-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "name": "gate-cam"},
    "data": {
        "person": {"id": "a3c1…", "name": "obama"},
        "similarity": 0.83,
        "detection_id": 42,
        "box": [10, 20, 110, 150],
        "source": {"kind": "node", "node_id": "5c2d7e10-…", "node_name": "gate-cam"},
    },
    "links": {
        "job": "/v1/jobs/0b7e8a52-6f7c-4a0e-8f55-2b8e3c1d9f00",
        "image": "/v1/jobs/0b7e8a52-6f7c-4a0e-8f55-2b8e3c1d9f00/image",
        "node": "/v1/nodes/5c2d7e10-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
    },
}


class OutboundEventOut(BaseModel):
    """The body POSTed to a webhook and published on MQTT (schema version `v`)."""

    model_config = {"json_schema_extra": {"examples": [EVENT_EXAMPLE]}}

    v: int = Field(description="payload schema version (1)")
    id: str = Field(description="unique per event; also the webhook-id header (dedupe on it)")
    type: EventType
    time: str = Field(description="when it happened, UTC, RFC 3339")
    owner_id: str | None = Field(description="API key id that owns the job; null for nodes")
    job: dict[str, Any] | None = Field(description="{id, tasks} of the job, if any")
    node: dict[str, Any] | None = Field(description="{id, name} of the edge node, if any")
    data: dict[str, Any] = Field(
        description="job.done: counts, timings, source · job.failed: error · face.identified: "
        "person {id, name}, similarity, box, source · face.unknown: cluster_id (null until "
        "clustered), box, source · object.detected: label, count, source · text.read: texts "
        "[{text, line, score, box}], source · plate.read: plate (normalised), text (as read), "
        "score, box, vehicle {label, score, box}, detection_id, source · node.*: online, "
        "state, dark_scene, change"
    )
    links: dict[str, str]


class WebhookFilters(BaseModel):
    node_ids: list[uuid.UUID] = Field(
        default_factory=list, description="only events from these nodes (empty: any)"
    )
    labels: list[str] = Field(
        default_factory=list,
        description="object.detected only for these classes (empty: any)",
        examples=[["person", "car"]],
    )
    people: list[str] = Field(
        default_factory=list,
        description="face.identified only for these people, by id or name (empty: any)",
    )


class WebhookIn(BaseModel):
    url: str = Field(
        max_length=2000,
        description="http(s) URL that receives POSTs; must resolve to a public address",
        examples=["https://automations.example/hooks/lookout"],
    )
    event_types: list[EventType] = Field(min_length=1, examples=[["face.unknown", "job.failed"]])
    description: str | None = Field(default=None, max_length=200)
    filters: WebhookFilters = Field(default_factory=WebhookFilters)
    enabled: bool = True


class WebhookPatch(BaseModel):
    url: str | None = Field(default=None, max_length=2000)
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=200)
    filters: WebhookFilters | None = None
    enabled: bool | None = None


class WebhookLinks(BaseModel):
    self: str
    deliveries: str


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    filters: WebhookFilters
    enabled: bool
    created_at: datetime
    links: WebhookLinks


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="Standard Webhooks secret (whsec_…) to verify webhook-signature; "
        "shown only in this response",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookPage(BaseModel):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: uuid.UUID
    seq: int = Field(description="delivery order within the webhook")
    event_id: str
    event_type: str
    status: DeliveryStatus = Field(
        description="pending (first attempt or a retry to come), delivered (2xx), "
        "dead (retries exhausted: the dead letter)"
    )
    attempts: int
    last_status_code: int | None = Field(description="HTTP status of the last attempt")
    last_error: str | None
    created_at: datetime = Field(description="when it was queued (or queued again)")
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    payload: dict[str, Any]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: int | None = Field(
        default=None, description="pass as ?before= for older deliveries; null on the last page"
    )


class MqttStatus(BaseModel):
    configured: bool
    connected: bool = False
    broker: str | None = Field(default=None, description="host:port (never credentials)")
    since: str | None = Field(default=None, description="when it (dis)connected, RFC 3339")
    last_error: str | None = None
    published: int = Field(default=0, description="messages published since the connection")
    pending: int | None = Field(default=None, description="events read but not yet published")
    lag: int | None = Field(default=None, description="events not yet read by the MQTT bridge")


class EventsStatus(BaseModel):
    event_types: list[str]
    webhooks: int = Field(description="this key's webhooks")
    deliveries_pending: int
    deliveries_dead: int
    dispatcher_lag: int | None = Field(
        default=None, description="firehose events the webhook dispatcher has not read yet"
    )
    mqtt: MqttStatus
