"""The outbound event model: firehose entries → versioned events, and subscription filters."""

import uuid

from app import streams
from app.events_out.events import EVENT_TYPES, from_firehose, matches
from app.jobs import events as job_events

NODE = str(uuid.uuid4())
JOB = str(uuid.uuid4())
PERSON = str(uuid.uuid4())


def result_entry(detections: list[dict], *, node: bool = True) -> dict:
    return {
        "type": "result",
        "job_id": JOB,
        "at": "2025-12-03T21:30:00.250000Z",  # app/timestamps.py: RFC 3339, UTC
        "owner_id": "owner-1",
        "job": {
            "id": JOB,
            "status": "done",
            "tasks": ["faces", "identify", "objects"],
            "counts": {"face": 2, "person": 1},
            "node_id": NODE if node else None,
            "node_name": "gate-cam" if node else None,
            "detections": detections,
        },
    }


def face(identity: dict | None, **extra: object) -> dict:
    attributes: dict = {"identity": identity, **extra}
    if identity is None:
        attributes["unknown"] = True
    return {
        "id": 1,
        "kind": "face",
        "label": "face",
        "score": 0.9,
        "box": [0, 0, 9, 9],
        "attributes": attributes,
    }


def test_a_result_gives_done_identified_unknown_objects_and_text_events():
    entry = result_entry(
        [
            face({"person_id": PERSON, "name": "obama", "similarity": 0.81}),
            face(None, cluster_id="c-7", similarity=0.2),
            {"id": 3, "kind": "object", "label": "person", "score": 0.8, "box": [1, 1, 5, 5]},
            {"id": 4, "kind": "object", "label": "car", "score": 0.7, "box": [1, 1, 5, 5]},
            {"id": 5, "kind": "object", "label": "car", "score": 0.6, "box": [1, 1, 5, 5]},
            {
                "id": 6,
                "kind": "text",
                "label": "text",
                "score": 0.9,
                "box": [2, 2, 8, 4],
                "attributes": {"text": "EXIT", "line": 0},
            },
            {  # workers/detectors/text.py PlateDetector
                "id": 7,
                "kind": "plate",
                "label": "plate",
                "score": 0.8,
                "box": [3, 3, 7, 4],
                "attributes": {
                    "plate": "AB123CD",
                    "text": "AB-123-CD",
                    "vehicle": {"label": "car", "score": 0.7, "box": [1, 1, 5, 5]},
                },
            },
        ]
    )
    events = from_firehose(b"1764797400250-0", entry, public_url="https://lookout.example/")
    types = [e["type"] for e in events]
    assert types == [
        "job.done",
        "face.identified",
        "face.unknown",
        "object.detected",
        "object.detected",
        "text.read",
        "plate.read",
    ]
    assert {e["type"] for e in events} <= set(EVENT_TYPES)
    assert len({e["id"] for e in events}) == len(events)  # unique, and stable:
    assert [e["id"] for e in from_firehose(b"1764797400250-0", entry)] == [e["id"] for e in events]
    for event in events:
        assert event["v"] == 1
        assert event["time"] == "2025-12-03T21:30:00.250Z"
        assert event["job"]["id"] == JOB
        assert event["node"] == {"id": NODE, "name": "gate-cam"}
        assert event["links"]["job"] == f"https://lookout.example/v1/jobs/{JOB}"
        assert event["links"]["node"] == f"https://lookout.example/v1/nodes/{NODE}"
    identified, unknown = events[1]["data"], events[2]["data"]
    assert identified["person"] == {"id": PERSON, "name": "obama"}
    assert identified["similarity"] == 0.81
    assert identified["source"] == {"kind": "node", "node_id": NODE, "node_name": "gate-cam"}
    assert unknown["cluster_id"] == "c-7"
    assert [(e["data"]["label"], e["data"]["count"]) for e in events[3:5]] == [
        ("car", 2),
        ("person", 1),
    ]
    assert events[5]["data"]["texts"] == [
        {"text": "EXIT", "line": 0, "score": 0.9, "box": [2, 2, 8, 4]}
    ]
    plate = events[6]["data"]
    assert (plate["plate"], plate["text"], plate["vehicle"]["label"]) == (
        "AB123CD",
        "AB-123-CD",
        "car",
    )


def test_a_node_frame_that_was_not_stored_gets_no_image_links():
    stored = result_entry([])
    stored["job"]["links"] = {
        "image": f"/v1/jobs/{JOB}/image",
        "processed_image": f"/v1/jobs/{JOB}/processed-image",
    }
    unstored = result_entry([])
    unstored["job"]["links"] = {"image": None, "processed_image": None}
    [kept] = from_firehose(b"1-0", stored)
    [private] = from_firehose(b"1-0", unstored)
    assert sorted(kept["links"]) == ["image", "job", "node", "processed_image"]
    assert sorted(private["links"]) == ["job", "node"]


def test_event_time_reads_rfc3339_and_legacy_epoch_at():
    legacy = dict(result_entry([]), at=1764797400.25)
    assert from_firehose(b"1-0", legacy)[0]["time"] == "2025-12-03T21:30:00.250Z"
    offset = dict(result_entry([]), at="2025-12-03T22:30:00.25+01:00")
    assert from_firehose(b"1-0", offset)[0]["time"] == "2025-12-03T21:30:00.250Z"
    live = streams.make_event("error", uuid.UUID(JOB), error="boom")  # what main writes now
    assert live["at"].endswith("Z")
    assert from_firehose(b"1-0", live)[0]["time"][:19] == live["at"][:19]


def test_an_unknown_face_without_clustering_has_a_null_cluster():
    events = from_firehose(b"1-0", result_entry([face(None)], node=False))
    unknown = next(e for e in events if e["type"] == "face.unknown")
    assert unknown["data"]["cluster_id"] is None
    assert unknown["node"] is None
    assert unknown["data"]["source"] == {"kind": "upload", "job_id": JOB}


def test_failures_and_node_changes():
    failed = from_firehose(b"2-0", streams.make_event("error", uuid.UUID(JOB), error="boom"))
    assert [(e["type"], e["data"]["error"]) for e in failed] == [("job.failed", "boom")]
    node_id = uuid.UUID(NODE)
    changes = {
        change: from_firehose(
            b"3-0",
            streams.make_node_event(change, node_id, name="cam", dark_scene=change == "dark_scene"),
        )
        for change in ("online", "offline", "revoked", "dark_scene", "state")
    }
    assert [e["type"] for e in changes["online"]] == ["node.online"]
    assert [e["type"] for e in changes["offline"]] == ["node.offline"]
    assert [e["type"] for e in changes["revoked"]] == ["node.offline"]
    assert [e["type"] for e in changes["dark_scene"]] == ["node.dark"]
    assert changes["state"] == []


def test_filters_narrow_by_type_node_label_and_person():
    events = from_firehose(
        b"4-0",
        result_entry(
            [
                face({"person_id": PERSON, "name": "obama", "similarity": 0.9}),
                {"id": 3, "kind": "object", "label": "car", "score": 0.7, "box": [0, 0, 1, 1]},
            ]
        ),
    )
    by_type = {e["type"]: e for e in events}
    everything = dict(event_types=list(EVENT_TYPES), node_ids=[], labels=[], people=[])
    assert all(matches(e, **everything) for e in events)
    assert not matches(by_type["job.done"], **{**everything, "event_types": ["job.failed"]})
    assert not matches(by_type["job.done"], **{**everything, "node_ids": [str(uuid.uuid4())]})
    assert matches(by_type["job.done"], **{**everything, "node_ids": [NODE]})
    assert not matches(by_type["object.detected"], **{**everything, "labels": ["person"]})
    assert matches(by_type["object.detected"], **{**everything, "labels": ["car"]})
    assert matches(by_type["face.identified"], **{**everything, "people": ["obama"]})
    assert matches(by_type["face.identified"], **{**everything, "people": [PERSON]})
    assert not matches(by_type["face.identified"], **{**everything, "people": ["biden"]})


def test_only_sightings_give_face_and_object_events():
    """A verify or an enrollment photo is not a sighting: an "unknown face at the door"
    automation must not fire on it (app.models.SIGHTING_PURPOSES); identify calls are. An
    enrollment photo's job is deleted when its call ends: no event at all links to it."""
    detections = [
        face({"person_id": PERSON, "name": "obama", "similarity": 0.81}),
        face(None, similarity=0.2),
        {"id": 3, "kind": "object", "label": "person", "score": 0.8, "box": [1, 1, 5, 5]},
    ]
    sighting_types = ["job.done", "face.identified", "face.unknown", "object.detected"]
    for purpose, expected in [
        ("detect", sighting_types),
        ("identify", sighting_types),
        ("compare", ["job.done"]),
        ("enroll", []),
    ]:
        entry = result_entry(detections)
        entry["job"]["purpose"] = purpose
        events = from_firehose(b"1764797400250-0", entry, public_url="https://lookout.example/")
        assert [e["type"] for e in events] == expected, purpose


def test_a_node_frame_s_failure_names_its_node_and_links_no_picture_it_lacks():
    """job.failed carried no node: a webhook filtered to a camera never got the failures of
    its frames (README: "a node frame that expired before a worker ran it"), and it linked a
    processed image no failed job has."""
    entry = job_events.error(
        uuid.UUID(JOB),
        None,
        "expired before a worker ran it",
        node_id=uuid.UUID(NODE),
        node_name="gate-cam",
        stored_image=False,
    )
    [failed] = from_firehose(b"2-0", entry)
    assert failed["node"] == {"id": NODE, "name": "gate-cam"}
    assert sorted(failed["links"]) == ["job", "node"]
    for_the_camera = dict(event_types=["job.failed"], labels=[], people=[])
    assert matches(failed, node_ids=[NODE], **for_the_camera)
    assert not matches(failed, node_ids=[str(uuid.uuid4())], **for_the_camera)
    upload = job_events.error(
        uuid.UUID(JOB), None, "bad", node_id=None, node_name=None, stored_image=True
    )
    [failed] = from_firehose(b"2-0", upload)
    assert failed["node"] is None
    assert sorted(failed["links"]) == ["image", "job"]
