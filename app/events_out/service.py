"""Webhooks: create, list, change, delete; their deliveries; redelivery. No FastAPI here.

A key sees and manages its own webhooks; an admin key (or auth off) sees every one.
"""

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import streams
from app.apikeys.service import Principal
from app.errors import AppError, InvalidInput, NotFound
from app.events_out import signing, ssrf
from app.events_out.events import EVENT_TYPES
from app.events_out.schemas import (
    DeliveryOut,
    DeliveryPage,
    EventsStatus,
    MqttStatus,
    WebhookFilters,
    WebhookIn,
    WebhookLinks,
    WebhookOut,
    WebhookPatch,
)
from app.models import DeliveryStatus, Webhook, WebhookDelivery


class TargetRefused(AppError):
    status = 422
    code = "webhook_target_refused"


async def check_target(url: str, allowed_networks: Sequence[str]) -> None:
    try:
        await ssrf.resolve_target(url, ssrf.parse_networks(allowed_networks))
    except ssrf.TargetRefused as exc:
        raise TargetRefused(f"webhook target {url!r} refused: {exc}") from exc


def webhook_out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        url=webhook.url,
        description=webhook.description,
        event_types=list(webhook.event_types),
        filters=WebhookFilters(
            node_ids=[uuid.UUID(n) for n in webhook.node_ids],
            labels=list(webhook.labels),
            people=list(webhook.people),
        ),
        enabled=webhook.enabled,
        created_at=webhook.created_at,
        links=WebhookLinks(
            self=f"/v1/webhooks/{webhook.id}", deliveries=f"/v1/webhooks/{webhook.id}/deliveries"
        ),
    )


def _apply_filters(webhook: Webhook, filters: WebhookFilters) -> None:
    """The filters given (a PATCH's `filters` may name one; the others stay as they are)."""
    given = filters.model_fields_set
    if "node_ids" in given:
        webhook.node_ids = [str(n) for n in dict.fromkeys(filters.node_ids)]
    if "labels" in given:
        webhook.labels = list(dict.fromkeys(x.strip() for x in filters.labels if x.strip()))
    if "people" in given:
        webhook.people = list(dict.fromkeys(p.strip() for p in filters.people if p.strip()))


def _check_event_types(principal: Principal, event_types: Sequence[str]) -> None:
    """Node events belong to no key: only a webhook of a key that sees every job gets them
    (events.visible_to). Another key's subscription to them would wait for ever."""
    node_types = [t for t in event_types if t.startswith("node.")]
    if node_types and not principal.sees_every_job:
        raise InvalidInput(
            f"{', '.join(node_types)}: node events reach admin keys' webhooks only; this key "
            "gets the events of its own jobs"
        )


async def create_webhook(
    session: AsyncSession,
    principal: Principal,
    body: WebhookIn,
    *,
    allowed_networks: Sequence[str],
) -> tuple[Webhook, str]:
    """The new webhook and its secret (returned this once; kept to sign deliveries)."""
    _check_event_types(principal, body.event_types)
    await check_target(body.url, allowed_networks)
    secret = signing.new_secret()
    webhook = Webhook(
        owner_id=principal.owner_id,
        sees_all=principal.sees_every_job,
        url=body.url,
        description=body.description,
        event_types=list(dict.fromkeys(body.event_types)),
        secret=secret,
        enabled=body.enabled,
        node_ids=[],
        labels=[],
        people=[],
    )
    _apply_filters(webhook, body.filters)
    session.add(webhook)
    await session.flush()
    return webhook, secret


async def list_webhooks(session: AsyncSession, principal: Principal) -> list[Webhook]:
    query = select(Webhook).order_by(Webhook.created_at, Webhook.id)
    if not principal.sees_every_job:
        query = query.where(Webhook.owner_id == principal.owner_id)
    return list(await session.scalars(query))


async def get_webhook(
    session: AsyncSession, principal: Principal, webhook_id: uuid.UUID
) -> Webhook:
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None or (not principal.sees_every_job and webhook.owner_id != principal.owner_id):
        raise NotFound(f"no webhook {webhook_id}")
    return webhook


async def update_webhook(
    session: AsyncSession,
    principal: Principal,
    webhook_id: uuid.UUID,
    patch: WebhookPatch,
    *,
    allowed_networks: Sequence[str],
) -> Webhook:
    webhook = await get_webhook(session, principal, webhook_id)
    # A new URL or a webhook enabled again is the user saying "the receiver works now": what
    # waits is tried at once, not at its backoff's next try (up to an hour away).
    retry_now = (patch.url is not None and patch.url != webhook.url) or (
        patch.enabled is True and not webhook.enabled
    )
    if patch.url is not None and patch.url != webhook.url:
        await check_target(patch.url, allowed_networks)
        webhook.url = patch.url
    if patch.event_types is not None:
        _check_event_types(principal, patch.event_types)
        webhook.event_types = list(dict.fromkeys(patch.event_types))
    if "description" in patch.model_fields_set:
        webhook.description = patch.description
    if patch.filters is not None:
        _apply_filters(webhook, patch.filters)
    if patch.enabled is not None:
        webhook.enabled = patch.enabled
    if retry_now:
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.webhook_id == webhook.id,
                WebhookDelivery.status == DeliveryStatus.pending,
            )
            .values(next_attempt_at=func.now())
        )
    await session.flush()
    return webhook


async def rotate_secret(
    session: AsyncSession, principal: Principal, webhook_id: uuid.UUID
) -> tuple[Webhook, str]:
    """A new signing secret (returned this once) for a lost or leaked one. Deliveries from now
    on are signed with it; one a receiver refuses while it still checks the old secret is
    retried, so none is lost in the switch."""
    webhook = await get_webhook(session, principal, webhook_id)
    webhook.secret = signing.new_secret()
    await session.flush()
    return webhook, webhook.secret


async def delete_webhook(
    session: AsyncSession, principal: Principal, webhook_id: uuid.UUID
) -> None:
    """Its deliveries go with it (ON DELETE CASCADE), pending ones included."""
    webhook = await get_webhook(session, principal, webhook_id)
    await session.delete(webhook)
    await session.flush()


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        seq=delivery.seq,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        next_attempt_at=(
            delivery.next_attempt_at if delivery.status == DeliveryStatus.pending else None
        ),
        last_attempt_at=delivery.last_attempt_at,
        delivered_at=delivery.delivered_at,
        payload=delivery.payload,
    )


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    webhook_id: uuid.UUID,
    *,
    status: DeliveryStatus | None,
    limit: int,
    before: int | None,
) -> DeliveryPage:
    """Newest first."""
    await get_webhook(session, principal, webhook_id)
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.seq.desc())
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        query = query.where(WebhookDelivery.seq < before)
    rows = list(await session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(
        items=[delivery_out(r) for r in rows], next_cursor=rows[-1].seq if more else None
    )


async def redeliver(
    session: AsyncSession, principal: Principal, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """Queue a delivery again (dead or delivered): attempts and the retry window start over;
    a pending one waiting for its next try is tried now ("retry now", its count kept).

    It keeps its place (seq): being older than what is pending, it goes out next.
    """
    await get_webhook(session, principal, webhook_id)
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.webhook_id != webhook_id:
        raise NotFound(f"no delivery {delivery_id} for webhook {webhook_id}")
    now = datetime.now(UTC)
    if delivery.status == DeliveryStatus.pending:
        delivery.next_attempt_at = now
        await session.flush()
        return delivery
    delivery.status = DeliveryStatus.pending
    delivery.attempts = 0
    delivery.created_at = now
    delivery.next_attempt_at = now
    delivery.delivered_at = None
    await session.flush()
    return delivery


async def delivery_counts(session: AsyncSession, principal: Principal) -> dict[str, int]:
    query: Any = (
        select(WebhookDelivery.status, func.count())
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status != DeliveryStatus.delivered)
        .group_by(WebhookDelivery.status)
    )
    webhooks: Any = select(func.count()).select_from(Webhook)
    if not principal.sees_every_job:
        query = query.where(Webhook.owner_id == principal.owner_id)
        webhooks = webhooks.where(Webhook.owner_id == principal.owner_id)
    counts = {str(status): int(n) for status, n in (await session.execute(query)).all()}
    counts["webhooks"] = int(await session.scalar(webhooks) or 0)
    return counts


async def events_status(
    session: AsyncSession, redis: Any, principal: Principal, *, mqtt_configured: bool
) -> EventsStatus:
    """Webhook queue figures for this key, and the MQTT bridge's state (from Redis)."""
    counts = await delivery_counts(session, principal)
    lags = await streams.firehose_groups_lag(redis)
    webhook_lag = lags.get(streams.WEBHOOKS_GROUP)
    mqtt = MqttStatus(configured=mqtt_configured)
    raw = await redis.get(streams.MQTT_STATUS)
    if raw:
        mqtt = MqttStatus.model_validate({**json.loads(raw), "configured": mqtt_configured})
    mqtt_lag = lags.get(streams.MQTT_GROUP)
    if mqtt_lag is not None and mqtt_configured:
        mqtt.pending, mqtt.lag = mqtt_lag
    return EventsStatus(
        event_types=list(EVENT_TYPES),
        webhooks=counts.get("webhooks", 0),
        deliveries_pending=counts.get(DeliveryStatus.pending.value, 0),
        deliveries_dead=counts.get(DeliveryStatus.dead.value, 0),
        dispatcher_lag=webhook_lag[1] if webhook_lag is not None else None,
        mqtt=mqtt,
    )


# The deliveries naming these people: face.identified by person, face.unknown by the cluster
# (an unnamed person) it was put in. Each WHERE is its index's (migration 0015).
_FORGET_IDENTIFIED = text(
    """
    DELETE FROM webhook_deliveries
    WHERE event_type = 'face.identified'
      AND payload -> 'data' -> 'person' ->> 'id' = ANY(CAST(:ids AS text[]))
    """
)
_FORGET_CLUSTERED = text(
    """
    DELETE FROM webhook_deliveries
    WHERE event_type = 'face.unknown'
      AND payload -> 'data' ->> 'cluster_id' = ANY(CAST(:ids AS text[]))
    """
)
_FORGET_JOB = text("DELETE FROM webhook_deliveries WHERE payload -> 'job' ->> 'id' = :job_id")


async def forget_people(session: AsyncSession, person_ids: Sequence[uuid.UUID]) -> None:
    """Delete the webhook deliveries that name these people, sent or still to send: a deleted
    person's name is not sent, nor kept in a delivery's history. The caller holds the people's
    rows locked (app/gallery/people.py lock_people), so a dispatcher ingesting an event about
    them either committed before (and is deleted here) or finds them gone (see
    app/events_out/dispatcher.py ingest)."""
    ids = {"ids": [str(i) for i in person_ids]}
    await session.execute(_FORGET_IDENTIFIED, ids)
    await session.execute(_FORGET_CLUSTERED, ids)


async def forget_job(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Delete the webhook deliveries of this job (its faces, texts and plates), sent or not.
    Call after the job's row is deleted in the same transaction (see forget_people)."""
    await session.execute(_FORGET_JOB, {"job_id": str(job_id)})
