"""HTTP routes for webhooks and the outbound events' status. Parse, authorize, call the service."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.deps import ReadKey, RedisDep, SessionDep, SettingsDep, WriteKey
from app.errors import error_doc
from app.events_out import service
from app.events_out.schemas import (
    EVENT_EXAMPLE,
    DeliveryOut,
    DeliveryPage,
    EventsStatus,
    OutboundEventOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
)
from app.models import DeliveryStatus

router = APIRouter(tags=["webhooks"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: error_doc("No such webhook (or not one of this key's)", "not_found")
}
REFUSED: dict[int | str, dict[str, Any]] = {
    422: error_doc(
        "Invalid body, or a target that resolves to a loopback, private, link-local or "
        "metadata address",
        "webhook_target_refused",
    )
}


@router.post(
    "/v1/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    summary="Subscribe a URL to events; the signing secret is in this response only",
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
    summary="Send a dead (or delivered) delivery again, with fresh retries",
    responses={**NOT_FOUND, 422: error_doc("The delivery is still pending", "invalid_request")},
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
)
async def event_schema(principal: ReadKey) -> Any:
    return EVENT_EXAMPLE
