"""HTTP routes for webhooks and the outbound events' status. Parse, authorize, call the service."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response, status

from app import openapi_examples as examples
from app.deps import ReadKey, RedisDep, SessionDep, SettingsDep, WriteKey
from app.errors import error_doc
from app.events_out import service
from app.events_out.schemas import (
    EVENT_EXAMPLE,
    DeliveryOut,
    DeliveryPage,
    EventsStatus,
    FaceIdentifiedEvent,
    FaceUnknownEvent,
    JobDoneEvent,
    JobFailedEvent,
    NodeDarkEvent,
    NodeOfflineEvent,
    NodeOnlineEvent,
    ObjectDetectedEvent,
    OutboundEventOut,
    PlateReadEvent,
    TextReadEvent,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
)
from app.models import DeliveryStatus

router = APIRouter(tags=["webhooks"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: error_doc(
        "No such webhook (or not one of this key's)",
        "not_found",
        "no webhook 78c82980-3ccb-4cdc-a93e-8296e96aa7ea",
    )
}
REFUSED: dict[int | str, dict[str, Any]] = {
    422: error_doc(
        "Invalid body, or a target that resolves to a loopback, private, link-local or "
        "metadata address",
        "webhook_target_refused",
        "the target resolves to 192.168.1.20, a private or reserved address; webhooks may only "
        "reach public addresses (an operator can allow networks with "
        "LOOKOUT_EVENTS__ALLOWED_NETWORKS)",
    )
}


@router.post(
    "/v1/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    summary="Subscribe a URL to events; the signing secret is in this response only",
    description="Lookout then POSTs each event of `event_types` that passes `filters` to `url`, "
    "signed (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`, keyed "
    "with `secret`). The body of each event type, field by field with an example, is under "
    "**Webhooks** at the end of this page: `job.done`, `job.failed`, `face.identified`, "
    "`face.unknown`, `object.detected`, `text.read`, `plate.read`, `node.online`, "
    "`node.offline`, `node.dark`.",
    responses=REFUSED,
)
async def create_webhook(
    principal: WriteKey, session: SessionDep, settings: SettingsDep, body: WebhookIn
) -> Any:
    webhook, secret = await service.create_webhook(
        session, principal, body, allowed_networks=settings.events.allowed_networks
    )
    return WebhookCreated(**service.webhook_out(webhook).model_dump(), secret=secret)


@router.get("/v1/webhooks", response_model=WebhookPage, summary="This key's webhooks")
async def list_webhooks(principal: ReadKey, session: SessionDep) -> Any:
    webhooks = await service.list_webhooks(session, principal)
    return WebhookPage(items=[service.webhook_out(w) for w in webhooks])


@router.get(
    "/v1/webhooks/{webhook_id}",
    response_model=WebhookOut,
    summary="One webhook",
    responses=NOT_FOUND,
)
async def get_webhook(principal: ReadKey, session: SessionDep, webhook_id: uuid.UUID) -> Any:
    return service.webhook_out(await service.get_webhook(session, principal, webhook_id))


@router.patch(
    "/v1/webhooks/{webhook_id}",
    response_model=WebhookOut,
    summary="Change a webhook's URL, event types, filters or enabled flag",
    responses={**NOT_FOUND, **REFUSED},
)
async def update_webhook(
    principal: WriteKey,
    session: SessionDep,
    settings: SettingsDep,
    webhook_id: uuid.UUID,
    patch: WebhookPatch,
) -> Any:
    webhook = await service.update_webhook(
        session, principal, webhook_id, patch, allowed_networks=settings.events.allowed_networks
    )
    return service.webhook_out(webhook)


@router.post(
    "/v1/webhooks/{webhook_id}/secret",
    response_model=WebhookCreated,
    summary="Replace the webhook's signing secret; the new one is in this response only",
    description="For a secret that was lost or leaked. Deliveries from now on are signed with "
    "the new secret; one the receiver refuses while it still checks the old secret (answering "
    "non-2xx) is retried as any failed delivery is.",
    responses=NOT_FOUND,
)
async def rotate_secret(principal: WriteKey, session: SessionDep, webhook_id: uuid.UUID) -> Any:
    webhook, secret = await service.rotate_secret(session, principal, webhook_id)
    return WebhookCreated(**service.webhook_out(webhook).model_dump(), secret=secret)


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook and its deliveries",
    responses=NOT_FOUND,
)
async def delete_webhook(
    principal: WriteKey, session: SessionDep, webhook_id: uuid.UUID
) -> Response:
    await service.delete_webhook(session, principal, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    summary="Deliveries of a webhook, newest first: status, attempts, last response code",
    responses=NOT_FOUND,
)
async def list_deliveries(
    principal: ReadKey,
    session: SessionDep,
    webhook_id: uuid.UUID,
    status_: Annotated[
        DeliveryStatus | None, Query(alias="status", description="pending, delivered or dead")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(description="next_cursor of the previous page")] = None,
) -> Any:
    return await service.list_deliveries(
        session, principal, webhook_id, status=status_, limit=limit, before=before
    )


@router.post(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    summary="Send a dead (or delivered) delivery again, with fresh retries; a pending one now",
    description="A pending delivery waiting for its next try (the receiver failed) is tried at "
    "once, its attempts kept: use it once the receiver is fixed. Changing the webhook's URL, or "
    "enabling it again, does the same for every pending delivery.",
    responses={
        **NOT_FOUND,
        202: {"content": {"application/json": {"example": examples.DELIVERY_REQUEUED}}},
    },
)
async def redeliver(
    principal: WriteKey, session: SessionDep, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> Any:
    delivery = await service.redeliver(session, principal, webhook_id, delivery_id)
    return service.delivery_out(delivery)


@router.get(
    "/v1/events/status",
    response_model=EventsStatus,
    summary="Outbound events: webhook queue figures and the MQTT bridge's connection",
)
async def events_status(
    principal: ReadKey, session: SessionDep, redis: RedisDep, settings: SettingsDep
) -> Any:
    return await service.events_status(
        session, redis, principal, mqtt_configured=settings.mqtt.url is not None
    )


@router.get(
    "/v1/events/schema",
    response_model=OutboundEventOut,
    summary="An example outbound event (the body of every webhook POST and MQTT event)",
    description="Every type's body, field by field, is under **Webhooks** at the end of this page.",
)
async def event_schema(principal: ReadKey) -> Any:
    return EVENT_EXAMPLE


# --- the events a webhook receives ------------------------------------------------------------
# Documentation only: the OpenAPI `webhooks` section (/docs lists them under Webhooks), one
# operation per event type with its body (app/events_out/schemas.py). create_app adds this
# router to app.webhooks; nothing routes requests to these handlers. MQTT messages carry the
# same bodies, on lookout/events/<type with / for .> (app/events_out/mqtt.py).


def _signature_headers(
    webhook_id: Annotated[
        str,
        Header(
            alias="webhook-id",
            description="the event's id, the same on every retry: dedupe on it",
            examples=["evt_1796359002885-0_2"],
        ),
    ],
    webhook_timestamp: Annotated[
        int,
        Header(
            alias="webhook-timestamp",
            description="epoch seconds of this attempt",
            examples=[1796359003],
        ),
    ],
    webhook_signature: Annotated[
        str,
        Header(
            alias="webhook-signature",
            description='"v1," + base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}", '
            "keyed with the base64-decoded part of the webhook's whsec_ secret (Standard "
            "Webhooks: verify with the standardwebhooks package)",
            examples=["v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="],
        ),
    ],
) -> None:
    """The signature headers of every delivery (documented on each webhook operation)."""


RECEIVER_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Delivered: any 2xx answer counts; its body is ignored"},
    "default": {
        "description": "Any other answer, none within events.webhook_timeout_s, or no "
        "connection: retried with exponential backoff (this webhook's later events wait), "
        "then dead after events.retry_window_s (GET /v1/webhooks/{id}/deliveries?status=dead)"
    },
}

event_payloads = APIRouter(
    tags=["webhook payloads"],
    dependencies=[Depends(_signature_headers)],
    default_response_class=Response,
    responses=RECEIVER_ANSWERS,
)


@event_payloads.post("job.done", summary="A job finished")
async def job_done(event: JobDoneEvent) -> None:
    """One per finished job: counts per label, timings, how many detections, and its source (an
    upload, or a node's frame). The job's face, object, text and plate events follow it."""


@event_payloads.post("job.failed", summary="A job failed")
async def job_failed(event: JobFailedEvent) -> None:
    """An undecodable image, a detector error, a timeout, or a node frame that expired before a
    worker ran it: `error` says which. `job.tasks` is null."""


@event_payloads.post("face.identified", summary="A face matched an enrolled person")
async def face_identified(event: FaceIdentifiedEvent) -> None:
    """Jobs with the `identify` task: one per face whose nearest enrolled person is at least
    gallery.match_threshold similar. The webhook filter `people` (ids or names) narrows it."""


@event_payloads.post("face.unknown", summary="A face matched nobody")
async def face_unknown(event: FaceUnknownEvent) -> None:
    """Jobs with the `identify` task: one per face no enrolled person matched. Name it with
    POST /v1/faces/{detection_id}/promote."""


@event_payloads.post("object.detected", summary="Objects of one class in a job")
async def object_detected(event: ObjectDetectedEvent) -> None:
    """Jobs with the `objects` task: one per COCO class found, with how many. The webhook filter
    `labels` narrows it."""


@event_payloads.post("text.read", summary="Text read in a job")
async def text_read(event: TextReadEvent) -> None:
    """Jobs with the `text` task that found text: every region, in reading order."""


@event_payloads.post("plate.read", summary="A licence plate read")
async def plate_read(event: PlateReadEvent) -> None:
    """Jobs with the `plates` task: one per plate, with the vehicle it is on."""


@event_payloads.post("node.online", summary="A node came online")
async def node_online(event: NodeOnlineEvent) -> None:
    """The node was heard from again (or for the first time). Node events go to admin keys'
    webhooks only."""


@event_payloads.post("node.offline", summary="A node went offline")
async def node_offline(event: NodeOfflineEvent) -> None:
    """Silent for nodes.offline_after_s, stopped cleanly (a goodbye heartbeat), or revoked
    (`change`: offline or revoked)."""


@event_payloads.post("node.dark", summary="A node's scene went dark")
async def node_dark(event: NodeDarkEvent) -> None:
    """The node reported a scene too dark to detect in (its heartbeat's dark_scene)."""
