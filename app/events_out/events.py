"""The outbound event model: firehose entries → versioned events a user subscribes to.

One firehose entry may give several events (a result: `job.done`, one `face.identified` per
known face, one `object.detected` per class, …). Ids are derived from the firehose entry id
and the event's position, so reading the same entry twice (a redelivery) gives the same ids:
the webhook-id a receiver dedupes on, and the key deliveries are stored under.

Payload (schema version EVENT_VERSION):
    {"v": 1, "id": "evt_…", "type": "face.identified", "time": "2026-…Z" (UTC, RFC 3339),
     "owner_id": key id | null, "job": {"id", "tasks"} | null, "node": {"id", "name"} | null,
     "data": {…type-specific…}, "links": {"job", "image", "node"}}
"""

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from app import streams
from app.models import SIGHTING_PURPOSES, JobPurpose

EVENT_VERSION = 1
EventType = Literal[
    "job.done",
    "job.failed",
    "face.identified",
    "face.unknown",
    "object.detected",
    "text.read",
    "plate.read",
    "node.online",
    "node.offline",
    "node.dark",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

OutboundEvent = dict[str, Any]


def event_id(entry_id: streams.StreamId, index: int) -> str:
    return f"evt_{entry_id.decode()}_{index}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_time(at: Any) -> str:
    """A firehose entry's `at` as the event's `time`: an RFC 3339 UTC string (what the API and
    workers write, app/timestamps.py), or epoch seconds (entries from before that change).
    Missing or unreadable: now."""
    moment: datetime | None = None
    if isinstance(at, str):
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            try:
                moment = datetime.fromtimestamp(float(at), UTC)
            except (ValueError, OverflowError, OSError):
                moment = None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    elif isinstance(at, int | float) and not isinstance(at, bool):
        try:
            moment = datetime.fromtimestamp(at, UTC)
        except (ValueError, OverflowError, OSError):
            moment = None
    return rfc3339(moment or datetime.now(UTC))


def _links(
    base: str, job_id: str | None, node_id: str | None, pictures: Mapping[str, Any]
) -> dict[str, str]:
    """`pictures`: the job's own links, which say which pictures it has (a null image: a node
    frame that was not stored; a null processed image: a failed job)."""
    links: dict[str, str] = {}
    if job_id is not None:
        links["job"] = f"{base}/v1/jobs/{job_id}"
        if pictures.get("image", True) is not None:
            links["image"] = f"{base}/v1/jobs/{job_id}/image"
        if pictures.get("processed_image", True) is not None:
            links["processed_image"] = f"{base}/v1/jobs/{job_id}/processed-image"
    if node_id is not None:
        links["node"] = f"{base}/v1/nodes/{node_id}"
    return links


def from_firehose(
    entry_id: streams.StreamId, entry: Mapping[str, Any], *, public_url: str | None = None
) -> list[OutboundEvent]:
    """The outbound events of one firehose entry (none for types no subscriber can want)."""
    base = (public_url or "").rstrip("/")
    kind = entry.get("type")
    time = event_time(entry.get("at"))
    owner = entry.get("owner_id")
    bodies: list[tuple[str, dict[str, Any]]] = []
    pictures: Mapping[str, Any] = {}
    job_ref: dict[str, Any] | None = None
    node_ref: dict[str, Any] | None = None
    if kind == "result" and isinstance(entry.get("job"), dict):
        job = entry["job"]
        pictures = job.get("links") or {}
        job_ref = {"id": job.get("id"), "tasks": job.get("tasks", [])}
        if job.get("node_id"):
            node_ref = {"id": job["node_id"], "name": job.get("node_name")}
        bodies = _result_bodies(job, node_ref)
    elif kind == "error":
        # A failed job has no processed image, and an image only where it was stored.
        stored = entry.get("stored_image", True)  # an entry from before the field: as before
        pictures = {"image": "stored" if stored else None, "processed_image": None}
        job_ref = {"id": entry.get("job_id"), "tasks": None}
        if entry.get("node_id"):
            node_ref = {"id": entry["node_id"], "name": entry.get("node_name")}
        bodies = [("job.failed", {"error": entry.get("error")})]
    elif kind == streams.NODE_EVENT:
        node_ref = {"id": entry.get("node_id"), "name": entry.get("name")}
        bodies = _node_bodies(entry)
    events = []
    for index, (event_type, data) in enumerate(bodies):
        events.append(
            {
                "v": EVENT_VERSION,
                "id": event_id(entry_id, index),
                "type": event_type,
                "time": time,
                "owner_id": owner,
                "job": job_ref,
                "node": node_ref,
                "data": data,
                "links": _links(
                    base,
                    job_ref["id"] if job_ref else None,
                    node_ref["id"] if node_ref else None,
                    pictures,
                ),
            }
        )
    return events


def _source(job: Mapping[str, Any], node: Mapping[str, Any] | None) -> dict[str, Any]:
    if node is not None:
        return {"kind": "node", "node_id": node["id"], "node_name": node.get("name")}
    return {"kind": "upload", "job_id": job.get("id")}


def _result_bodies(
    job: Mapping[str, Any], node: Mapping[str, Any] | None
) -> list[tuple[str, dict[str, Any]]]:
    if job.get("purpose") == JobPurpose.enroll:
        # An enrollment photo's job lives only as long as its call (gallery.discard_jobs): an
        # event would link a job already gone, and the dispatcher drops the events of jobs gone
        # by the time it reads them (dispatcher._still_there), so it would go out or not by timing.
        return []
    detections: list[dict[str, Any]] = [
        d for d in job.get("detections") or [] if isinstance(d, dict)
    ]
    source = _source(job, node)
    bodies: list[tuple[str, dict[str, Any]]] = [
        (
            "job.done",
            {
                "status": job.get("status", "done"),
                "counts": job.get("counts") or {},
                "timings": job.get("timings") or {},
                "detections": len(detections),
                "source": source,
            },
        )
    ]
    if job.get("purpose", JobPurpose.detect) not in SIGHTING_PURPOSES:
        # A verify photo is not a sighting: "unknown face at the door"
        # automations must not fire on it. Its job.done still goes out.
        return bodies
    objects: Counter[str] = Counter()
    texts: list[dict[str, Any]] = []
    plates: list[tuple[str, dict[str, Any]]] = []
    for detection in detections:
        attributes = detection.get("attributes") or {}
        kind = detection.get("kind")
        if kind == "face":
            identity = attributes.get("identity")
            if isinstance(identity, dict) and identity.get("person_id"):
                bodies.append(
                    (
                        "face.identified",
                        {
                            "person": {"id": identity["person_id"], "name": identity.get("name")},
                            "similarity": identity.get("similarity"),
                            "detection_id": detection.get("id"),
                            "box": detection.get("box"),
                            "source": source,
                        },
                    )
                )
            elif attributes.get("unknown"):
                bodies.append(
                    (
                        "face.unknown",
                        {
                            "cluster_id": _cluster_id(attributes),
                            "similarity": attributes.get("similarity"),
                            "detection_id": detection.get("id"),
                            "box": detection.get("box"),
                            "source": source,
                        },
                    )
                )
        elif kind == "object" and detection.get("label"):
            objects[str(detection["label"])] += 1
        elif kind == "text":  # workers/detectors/text.py: attributes text, line
            text = attributes.get("text")
            if text:
                texts.append(
                    {
                        "text": text,
                        "line": attributes.get("line"),
                        "score": detection.get("score"),
                        "box": detection.get("box"),
                    }
                )
        elif kind == "plate" and attributes.get("plate"):  # attributes plate, text, vehicle
            plates.append(
                (
                    "plate.read",
                    {
                        "plate": attributes["plate"],
                        "text": attributes.get("text"),
                        "score": detection.get("score"),
                        "box": detection.get("box"),
                        "vehicle": attributes.get("vehicle"),
                        "detection_id": detection.get("id"),
                        "source": source,
                    },
                )
            )
    for label, count in sorted(objects.items()):
        bodies.append(("object.detected", {"label": label, "count": count, "source": source}))
    if texts:
        bodies.append(("text.read", {"texts": texts, "source": source}))
    bodies.extend(plates)  # one per plate
    return bodies


def _cluster_id(attributes: Mapping[str, Any]) -> Any:
    """The unknown-face cluster, when clustering assigned one (attributes.cluster_id, or
    attributes.cluster.id); None otherwise."""
    if attributes.get("cluster_id") is not None:
        return attributes["cluster_id"]
    cluster = attributes.get("cluster")
    if isinstance(cluster, dict):
        return cluster.get("id")
    return None


def _node_bodies(entry: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    change = entry.get("change")
    status = {
        "online": entry.get("online"),
        "state": entry.get("state"),
        "dark_scene": entry.get("dark_scene"),
        "change": change,
    }
    if change == "online":
        return [("node.online", status)]
    if change in ("offline", "revoked"):
        return [("node.offline", status)]
    if change == "dark_scene" and entry.get("dark_scene"):
        return [("node.dark", status)]
    return []


def matches(
    event: Mapping[str, Any],
    *,
    event_types: list[str],
    node_ids: list[str],
    labels: list[str],
    people: list[str],
) -> bool:
    """Whether a subscription's types and filters let the event through.

    Empty filters match everything. node_ids: only events from those nodes. labels: narrows
    object.detected to those classes. people (ids or names): narrows face.identified.
    """
    if event["type"] not in event_types:
        return False
    node = event.get("node")
    if node_ids and (node is None or str(node.get("id")) not in node_ids):
        return False
    data = event.get("data") or {}
    if labels and event["type"] == "object.detected" and data.get("label") not in labels:
        return False
    if people and event["type"] == "face.identified":
        person = data.get("person") or {}
        if str(person.get("id")) not in people and person.get("name") not in people:
            return False
    return True


def visible_to(event: Mapping[str, Any], *, owner_id: str | None, sees_all: bool) -> bool:
    """An event reaches a key's subscription when the key owns the job (admins: every event;
    node events, with no owner, only admins)."""
    return sees_all or (owner_id is not None and event.get("owner_id") == owner_id)
