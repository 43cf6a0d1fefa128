"""API schemas for webhooks, deliveries and the outbound event model."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app import openapi_examples as examples
from app.events_out.events import EventType
from app.jobs.schemas import Timings
from app.jobs.tasks import TaskName
from app.models import DeliveryStatus
from app.schema_types import StorableText

# The body GET /v1/events/schema answers with.
EVENT_EXAMPLE: dict[str, Any] = examples.EVENT_FACE_IDENTIFIED


class OutboundEventOut(BaseModel):
    """The body POSTed to a webhook and published on MQTT (schema version `v`). Each type's
    `data`, with an example, is under Webhooks in /docs (the OpenAPI `webhooks` section)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EVENT_EXAMPLE]})

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


# --- each event type, field by field -------------------------------------------------------
# Documentation of what app/events_out/events.py builds (as plain dicts, from firehose entries):
# the OpenAPI `webhooks` section (app/events_out/routes.py `event_payloads`) shows one
# operation per type with these bodies. tests/app/test_openapi_examples.py holds the two
# together: what from_firehose builds validates against them.


class EventJob(BaseModel):
    id: uuid.UUID
    tasks: list[TaskName] | None = Field(description="the job's tasks; null in job.failed")


class EventNode(BaseModel):
    id: uuid.UUID
    name: str | None


class UploadSource(BaseModel):
    kind: Literal["upload"]
    job_id: uuid.UUID


class NodeSource(BaseModel):
    kind: Literal["node"]
    node_id: uuid.UUID
    node_name: str | None


EventSource = Annotated[
    UploadSource | NodeSource,
    Field(discriminator="kind", description="where the image came from: an upload or a node"),
]


class JobDoneData(BaseModel):
    status: Literal["done"]
    counts: dict[str, int] = Field(description="detections per label (as the job's counts)")
    timings: Timings
    detections: int = Field(description="how many detections the job has")
    source: EventSource


class JobFailedData(BaseModel):
    error: str | None = Field(description="why the job failed, for a person")


class EventPerson(BaseModel):
    id: uuid.UUID
    name: str | None


class FaceIdentifiedData(BaseModel):
    person: EventPerson
    similarity: float = Field(description="calibrated similarity (≥ gallery.match_threshold)")
    detection_id: int = Field(description="the face's id in the job (its face_id)")
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels")
    source: EventSource


class FaceUnknownData(BaseModel):
    cluster_id: str | None = Field(
        description="the unknown-face cluster, when clustering assigned one before the event; "
        "null until then (clustering runs after the job: see GET /v1/people?named=false)"
    )
    similarity: float | None = Field(
        description="calibrated similarity of the nearest enrolled face (below the threshold); "
        "null when nobody is enrolled"
    )
    detection_id: int = Field(description="the face's id in the job: POST /v1/faces/{id}/promote")
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels")
    source: EventSource


class ObjectDetectedData(BaseModel):
    label: str = Field(description="COCO class name")
    count: int = Field(description="objects of this class in the job")
    source: EventSource


class TextRegion(BaseModel):
    text: str
    line: int | None = Field(description="0-based line, in reading order")
    score: float
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels")


class TextReadData(BaseModel):
    texts: list[TextRegion] = Field(description="in reading order")
    source: EventSource


class PlateVehicle(BaseModel):
    label: str = Field(description="the COCO class of the vehicle (car, truck, bus, motorcycle)")
    score: float
    box: list[float]


class PlateReadData(BaseModel):
    plate: str = Field(description="upper-case letters and digits")
    text: str | None = Field(description="as read")
    score: float
    box: list[float] = Field(description="the plate, x1, y1, x2, y2 in pixels")
    vehicle: PlateVehicle | None
    detection_id: int
    source: EventSource


class NodeStatusData(BaseModel):
    online: bool | None
    state: Literal["active", "idle"] | None = Field(description="as the node last reported")
    dark_scene: bool | None
    change: Literal["online", "offline", "revoked", "dark_scene"] = Field(
        description="what changed: offline and revoked both give node.offline"
    )


class OutboundEvent(BaseModel):
    """What every event has; each type narrows `type` and `data`."""

    v: Literal[1] = Field(description="payload schema version")
    id: str = Field(
        description="unique per event, stable across retries: the webhook-id header (dedupe on it)"
    )
    type: str
    time: datetime = Field(description="when it happened, UTC, RFC 3339")
    owner_id: uuid.UUID | None = Field(
        description="the API key that owns the job; null for node events and node frames"
    )
    job: EventJob | None = Field(description="null for node events")
    node: EventNode | None = Field(description="the edge node, for its frames and its events")
    data: BaseModel
    links: dict[str, str] = Field(
        description="job, image, processed_image (events of a job), node (a node's): paths, or "
        "absolute URLs when events.public_url is set"
    )


class JobDoneEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_JOB_DONE]})
    type: Literal["job.done"]
    data: JobDoneData


class JobFailedEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_JOB_FAILED]})
    type: Literal["job.failed"]
    data: JobFailedData


class FaceIdentifiedEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_FACE_IDENTIFIED]})
    type: Literal["face.identified"]
    data: FaceIdentifiedData


class FaceUnknownEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_FACE_UNKNOWN]})
    type: Literal["face.unknown"]
    data: FaceUnknownData


class ObjectDetectedEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_OBJECT_DETECTED]})
    type: Literal["object.detected"]
    data: ObjectDetectedData


class TextReadEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_TEXT_READ]})
    type: Literal["text.read"]
    data: TextReadData


class PlateReadEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_PLATE_READ]})
    type: Literal["plate.read"]
    data: PlateReadData


class NodeOnlineEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_NODE_ONLINE]})
    type: Literal["node.online"]
    data: NodeStatusData


class NodeOfflineEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_NODE_OFFLINE]})
    type: Literal["node.offline"]
    data: NodeStatusData


class NodeDarkEvent(OutboundEvent):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT_NODE_DARK]})
    type: Literal["node.dark"]
    data: NodeStatusData


# Every event type and the model of its body (the webhooks section documents each).
EVENT_PAYLOADS: dict[str, type[OutboundEvent]] = {
    "job.done": JobDoneEvent,
    "job.failed": JobFailedEvent,
    "face.identified": FaceIdentifiedEvent,
    "face.unknown": FaceUnknownEvent,
    "object.detected": ObjectDetectedEvent,
    "text.read": TextReadEvent,
    "plate.read": PlateReadEvent,
    "node.online": NodeOnlineEvent,
    "node.offline": NodeOfflineEvent,
    "node.dark": NodeDarkEvent,
}


# As long as the webhooks table's columns hold (app/models.py Webhook), and text Postgres stores:
# a longer or a NUL-bearing value is a 422 naming the field, not a 500 at the INSERT.
WebhookUrl = Annotated[StorableText, StringConstraints(max_length=2000)]
Description = Annotated[StorableText, StringConstraints(max_length=200)]
Label = Annotated[StorableText, StringConstraints(max_length=64)]
PersonRef = Annotated[StorableText, StringConstraints(max_length=200)]


class WebhookFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_ids: list[uuid.UUID] = Field(
        default_factory=list, description="only events from these nodes (empty: any)"
    )
    labels: list[Label] = Field(
        default_factory=list,
        description="object.detected only for these classes (empty: any)",
        examples=[["person", "car"]],
    )
    people: list[PersonRef] = Field(
        default_factory=list,
        description="face.identified only for these people, by id or name (empty: any)",
    )


class WebhookIn(BaseModel):
    # A field this API does not take is a 422, not ignored: {"secret": "mine"} was accepted
    # with a generated secret, and every signature then failed the receiver's check.
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl = Field(
        description="http(s) URL that receives POSTs; must resolve to a public address",
        examples=["https://automations.example/hooks/lookout"],
    )
    event_types: list[EventType] = Field(min_length=1, examples=[["face.unknown", "job.failed"]])
    description: Description | None = None
    filters: WebhookFilters = Field(default_factory=WebhookFilters)
    enabled: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    description: Description | None = None
    filters: WebhookFilters | None = None
    enabled: bool | None = None


class WebhookLinks(BaseModel):
    self: str
    deliveries: str


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.WEBHOOK]})

    id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    filters: WebhookFilters
    enabled: bool
    created_at: datetime
    links: WebhookLinks


class WebhookCreated(WebhookOut):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.WEBHOOK_CREATED]})

    secret: str = Field(
        description="Standard Webhooks secret (whsec_…) to verify webhook-signature; "
        "shown only in this response",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.WEBHOOK_PAGE]})

    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DELIVERY]})

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
    model_config = ConfigDict(json_schema_extra={"examples": [examples.DELIVERY_PAGE]})

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
    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENTS_STATUS]})

    event_types: list[str]
    webhooks: int = Field(description="this key's webhooks")
    deliveries_pending: int
    deliveries_dead: int
    dispatcher_lag: int | None = Field(
        default=None, description="firehose events the webhook dispatcher has not read yet"
    )
    mqtt: MqttStatus
