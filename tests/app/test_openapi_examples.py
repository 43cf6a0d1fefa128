"""/docs shows a true example of every answer: each operation's success body and each outbound
event's payload has an example, every example in /openapi.json validates against the schema it
illustrates, and what the API really sends validates against the documented event payloads."""

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import skimage
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import CONTENT_TYPE_LATEST

from app import streams
from app.events_out.events import EVENT_TYPES, from_firehose
from tests.app.events_out.helpers import enroll_from_job
from tests.conftest import SHARED_IMAGES, bearer, node_token, shared_image
from tests.images import dog_with_plate_jpeg

Spec = dict[str, Any]

# Success bodies that are not JSON: there is no example to show for them. Any other media type
# of a 2xx answer must be JSON with an example (or be added here, deliberately).
NOT_JSON_BODIES = {
    "image/jpeg": "uploaded images, processed images, face thumbnails",
    "image/png": "uploaded images",
    "image/webp": "uploaded images",
    CONTENT_TYPE_LATEST: "Prometheus metrics",
}
# Every surface of the API must be in the document, each with its examples.
SURFACES = (
    "/v1/apikeys",
    "/v1/images",
    "/v1/jobs",
    "/v1/nodes",
    "/v1/nodes/me",
    "/v1/stats",
    "/v1/people",
    "/v1/identify",
    "/v1/faces",
    "/v1/webhooks",
    "/v1/events",
    "/v1/vision/",
    "/api/v1/",
    "/health/",
)
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
# scikit-image's photographed book page: its first line reads "Region-based segmentation".
PAGE = Path(skimage.__file__).parent / "data" / "page.png"


def date_time_formats() -> FormatChecker:
    """jsonschema's own checkers (uuid …) and RFC 3339 date-times, with their offset."""
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_date_time(value: object) -> bool:
        return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None

    return checker


FORMATS = date_time_formats()


def errors_of(example: Any, schema: dict[str, Any], spec: Spec) -> list[str]:
    """Why `example` does not validate against `schema` ($refs resolved in the document)."""
    validator = Draft202012Validator(
        {**schema, "components": spec.get("components", {})}, format_checker=FORMATS
    )
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
        for error in validator.iter_errors(example)
    ]


def resolved(schema: dict[str, Any], spec: Spec) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    return schema


def examples_of(media: dict[str, Any], spec: Spec) -> list[Any]:
    """A media type's examples: its own (example, examples) and its schema's (through $ref)."""
    found = [media["example"]] if "example" in media else []
    found += [e["value"] for e in media.get("examples", {}).values() if "value" in e]
    found += resolved(media.get("schema", {}), spec).get("examples", [])
    return found


def operations(spec: Spec) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield f"{method.upper()} {path}", operation


async def openapi(client) -> Spec:  # type: ignore[no-untyped-def]
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_every_success_body_has_an_example_that_matches_its_schema(client):
    spec = await openapi(client)
    problems: list[str] = []
    checked: list[str] = []
    for label, operation in operations(spec):
        successes = {c: r for c, r in operation["responses"].items() if str(c).startswith("2")}
        assert successes, f"{label}: no success response documented"
        for code, response in successes.items():
            content = response.get("content")
            if not content:
                if code != "204":  # the only success with no body by design
                    problems.append(f"{label} {code}: a body is sent but not documented")
                continue
            for media_type, media in content.items():
                if media_type in NOT_JSON_BODIES:
                    continue
                if media_type != "application/json":
                    problems.append(f"{label} {code}: {media_type} is neither JSON nor exempt")
                    continue
                found = examples_of(media, spec)
                if not found:
                    problems.append(f"{label} {code}: no example")
                for example in found:
                    problems += [
                        f"{label} {code}: {e}" for e in errors_of(example, media["schema"], spec)
                    ]
                checked.append(label)
    assert not problems, "\n".join(problems)
    for surface in SURFACES:
        assert any(label.split(" ", 1)[1].startswith(surface) for label in checked), surface


async def test_every_outbound_event_is_documented_with_an_example(client):
    spec = await openapi(client)
    assert set(spec["webhooks"]) == set(EVENT_TYPES)
    for event_type, item in spec["webhooks"].items():
        body = item["post"]["requestBody"]["content"]["application/json"]
        [example] = examples_of(body, spec)
        assert example["type"] == event_type
        assert errors_of(example, body["schema"], spec) == [], event_type
        headers = {p["name"] for p in item["post"]["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    # The webhook route tells where to find them.
    assert "Webhooks" in spec["paths"]["/v1/webhooks"]["post"]["description"]


def examples_in(node: Any, where: str = "") -> Iterator[tuple[str, Any, dict]]:
    """Every (where, example, schema) of the document: schemas' `examples` (and their older
    `example`), and media types' and parameters' `example`/`examples`. Example values
    themselves are not searched."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from examples_in(item, f"{where}/{index}")
        return
    if not isinstance(node, dict):
        return
    if "schema" in node:  # a media type or a parameter
        if "example" in node:
            yield where, node["example"], node["schema"]
        if isinstance(node.get("examples"), dict):
            for name, item in node["examples"].items():
                yield f"{where}/{name}", item.get("value"), node["schema"]
    else:  # a schema (or an object with no example)
        schema = {k: v for k, v in node.items() if k not in ("example", "examples")}
        if isinstance(node.get("examples"), list):
            for example in node["examples"]:
                yield where, example, schema
        if "example" in node:
            yield where, node["example"], schema
    for key, value in node.items():
        if key not in ("example", "examples"):
            yield from examples_in(value, f"{where}/{key}")


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


async def test_every_example_in_the_document_validates_and_none_is_a_placeholder(client):
    spec = await openapi(client)
    found = list(examples_in(spec))
    assert len(found) > 100  # the walk reaches schemas, responses, parameters and webhooks
    problems = [
        f"{where}: {e}"
        for where, example, schema in found
        for e in errors_of(example, schema, spec)
    ]
    problems += [
        f"{where}: placeholder {text!r}"
        for where, example, _ in found
        for text in strings_in(example)
        if "…" in text
    ]
    assert not problems, "\n".join(problems)


async def test_examples_are_served_as_written_fields_in_order_nulls_kept(client):
    """Pydantic sorts an example's keys and FastAPI drops null members; /docs shows a job with
    its id first and its detections last, and a queued job with its null times."""
    spec = await openapi(client)
    schemas = spec["components"]["schemas"]
    [job] = schemas["JobDetail"]["examples"]
    assert list(job) == list(schemas["JobDetail"]["properties"])
    assert list(job["detections"][0])[:3] == ["id", "kind", "label"]
    assert len(job["detections"]) == 6  # t1.jpg's six faces
    upload = spec["paths"]["/v1/images"]["post"]["responses"]
    queued = upload["202"]["content"]["application/json"]["example"]
    assert (queued["status"], queued["started_at"], queued["node_id"]) == ("queued", None, None)
    assert queued["timings"]["total_ms"] is None
    [event] = schemas["FaceUnknownEvent"]["examples"]
    assert list(event)[:3] == ["v", "id", "type"]
    assert event["node"] is None and event["data"]["cluster_id"] is None


async def test_what_the_api_sends_matches_the_documented_event_payloads(
    client, settings, redis, sessionmaker, storage, make_job, make_consumer, make_node
):
    """Real jobs through the real worker, real node heartbeats: each outbound event they give
    (from the firehose, as the webhook dispatcher and the MQTT bridge read it) validates against
    the payload /docs documents for its type, and every type is covered."""
    spec = await openapi(client)
    enrolment = await make_job(shared_image("faces/train/obama/obama.jpg"))
    await make_consumer().run(burst=True)
    await enroll_from_job(sessionmaker, enrolment.id, "obama")
    await redis.delete(streams.FIREHOSE)  # only the events of the jobs below
    await make_job(shared_image("faces/train/obama/obama.jpg"), tasks=("faces", "identify"))
    await make_job(shared_image("scenes/t1.jpg"), tasks=("faces", "identify"))  # strangers
    await make_job(PAGE.read_bytes(), tasks=("text",))
    lost = await make_job(shared_image("scenes/dog.jpg"), tasks=("objects",))
    assert lost.image_key is not None
    storage.delete(lost.image_key)  # the worker finds the stored image gone: job.failed
    node = await make_node("garage-cam", tasks=("objects", "plates"))
    auth = bearer(node_token(settings, node.id))
    beat = {"fps": 2.0, "state": "active", "version": "0.1.0"}
    assert (await client.post("/v1/nodes/me/heartbeat", json=beat, headers=auth)).status_code == 200
    frame = await client.post(
        "/v1/nodes/me/frames",
        content=dog_with_plate_jpeg(SHARED_IMAGES),
        headers={**auth, "content-type": "image/jpeg"},
    )
    assert frame.status_code == 202, frame.text
    await make_consumer().run(burst=True)
    for heartbeat in ({**beat, "dark_scene": True}, {**beat, "goodbye": True}):
        response = await client.post("/v1/nodes/me/heartbeat", json=heartbeat, headers=auth)
        assert response.status_code == 200

    events = [
        event
        for entry_id, fields in await redis.xrange(streams.FIREHOSE)
        for event in from_firehose(entry_id, json.loads(fields[b"data"]))
    ]
    problems = []
    for event in events:
        body = spec["webhooks"][event["type"]]["post"]["requestBody"]["content"]
        problems += [
            f"{event['type']}: {e}"
            for e in errors_of(event, body["application/json"]["schema"], spec)
        ]
    assert not problems, "\n".join(problems)
    assert {e["type"] for e in events} == set(EVENT_TYPES)
