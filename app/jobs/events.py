"""The shape of a job's events, in one place: what the API, the workers and the reconciler put
on a job's stream (and the firehose). The wire format of any event is app/streams/events.py;
this module says which events a job's life produces and what each carries.

- `queued` / `running` / `done` / `failed`: {"type": "status", "status": …}; `queued` is sent
  from the job's row, the rest are on the job's stream
- a finished job: {"type": "result", "owner_id", "job": JobDetail}, then status done
- a failed job: {"type": "error", "owner_id", "error": reason, "node_id", "node_name",
  "stored_image"}, then status failed (node_id/node_name null for uploads; stored_image:
  whether its image can be fetched)
`owner_id` (a string, or null for jobs of no key) is what the firehose filters on.
"""

import uuid
from typing import Any

from app import streams
from app.jobs.schemas import JobDetail
from app.models import JobStatus
from app.timestamps import rfc3339

Event = dict[str, Any]


def owner_field(owner_id: uuid.UUID | None) -> str | None:
    """How result/error events name the job's owner (the firehose filters on it)."""
    return None if owner_id is None else str(owner_id)


def status(job_id: uuid.UUID, value: str) -> Event:
    return streams.make_event("status", job_id, status=value)


def queued(job: JobDetail) -> Event:
    """A job's first event, dated when the job was created. It is not on the job's stream,
    which holds what workers report: the events socket sends it from the job's row."""
    return {**status(job.id, JobStatus.queued.value), "at": rfc3339(job.created_at)}


def result(detail: JobDetail, owner_id: uuid.UUID | None) -> Event:
    return streams.make_event(
        "result", detail.id, owner_id=owner_field(owner_id), job=detail.model_dump(mode="json")
    )


def error(
    job_id: uuid.UUID,
    owner_id: uuid.UUID | None,
    reason: str | None,
    *,
    node_id: uuid.UUID | None,
    node_name: str | None,
    stored_image: bool,
) -> Event:
    """Which node's frame failed goes with it: a webhook filtered by node gets it."""
    return streams.make_event(
        "error",
        job_id,
        owner_id=owner_field(owner_id),
        error=reason,
        node_id=None if node_id is None else str(node_id),
        node_name=node_name,
        stored_image=stored_image,
    )


def done(detail: JobDetail, owner_id: uuid.UUID | None) -> list[Event]:
    """The events of a job that has just finished: its result, then its final status."""
    return [result(detail, owner_id), status(detail.id, "done")]


def failed(
    job_id: uuid.UUID,
    owner_id: uuid.UUID | None,
    reason: str,
    *,
    node_id: uuid.UUID | None,
    node_name: str | None,
    stored_image: bool,
) -> list[Event]:
    """The events of a job that has just failed: why, then its final status."""
    return [
        error(
            job_id,
            owner_id,
            reason,
            node_id=node_id,
            node_name=node_name,
            stored_image=stored_image,
        ),
        status(job_id, "failed"),
    ]


def snapshot(job: JobDetail, owner_id: uuid.UUID | None = None) -> list[Event]:
    """Events describing a job's current state, for when its event stream has expired."""
    events = []
    if job.status == JobStatus.done:
        events.append(result(job, owner_id))
    elif job.status == JobStatus.failed:
        events.append(
            error(
                job.id,
                owner_id,
                job.error,
                node_id=job.node_id,
                node_name=job.node_name,
                stored_image=job.links.image is not None,
            )
        )
    events.append(status(job.id, job.status.value))
    return events
