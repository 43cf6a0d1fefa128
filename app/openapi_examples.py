"""Example bodies for the OpenAPI document (/docs): one consistent set, shared by every schema.

They are what the API answered when t1.jpg (a group photo with 6 faces), obama_and_biden.jpg,
dog.jpg and a frame of the node `gate-cam` went through it with the production packs
(SCRFD-500M boxes, landmarks and scores; w600k_mbf embeddings; YOLOX-Nano objects): ids, boxes
and timings are real ones, so a reader of /docs sees what a client will get. The same ids are
used throughout (the job of a face.identified event is the job that found the face).

Plain JSON values (strings for ids and times), each a module-level constant: app/docs_pages.py
serves them as written (nulls and field order kept), which it can do only for bodies defined
here. tests/app/test_openapi_examples.py checks that every example validates against its
schema.
"""

from typing import Any

Json = dict[str, Any]


def authored() -> list[Any]:
    """Every example body of this module: app/docs_pages.py serves each one as it is written
    here (field order, nulls), which pydantic and FastAPI do not."""
    return [
        value
        for name, value in globals().items()
        if name.isupper() and isinstance(value, dict | list)
    ]


# --- ids -------------------------------------------------------------------------------------

KEY_ID = "8d1f3c0e-8d3b-4c1e-9b7a-2f0f6f3e9a11"  # the API key that owns the jobs and people
T1_JOB_ID = "092107a2-2956-457e-958f-19da952495df"  # t1.jpg, 6 faces
PAIR_JOB_ID = "71dbdf81-7e0d-44e2-bbf2-8921228ebcb6"  # obama_and_biden.jpg, tasks faces,identify
DOG_JOB_ID = "72572a5b-0f90-4e38-ba26-dde8913996a8"  # dog.jpg, tasks objects
FRAME_JOB_ID = "4a81290d-4cca-470a-915c-f77b5a55a091"  # a frame of gate-cam
QUERY_JOB_ID = "fa899ff3-e7e0-4a03-9499-31739fef5853"  # the job of an identify/search query
QUERY_JOB_ID_2 = "3665eaed-575c-4925-b7f4-43711e9ad92b"
NODE_ID = "4130b5fe-818c-405d-aef6-707ed13a7404"
NODE_NAME = "gate-cam"
OBAMA_ID = "e43d5498-158a-4681-9a3c-1fcc533e9bfd"
BIDEN_ID = "23dd1efc-243a-414e-8edb-9dcc4e9a6518"
UNNAMED_ID = "f6cb12c2-c9ee-4f15-afee-b8dcb0c915b7"  # a cluster of unknown faces
OBAMA_FACE_IDS = ("95248dc2-fd62-46bb-9c71-152814c7bb27", "ed158ab7-9c6f-4c8b-9ad3-36f5a0b9119a")
NEW_FACE_ID = "d2aa3b01-eb47-4de5-823c-d1273bf82ae3"  # an enrolled face made from a job's face
WEBHOOK_ID = "78c82980-3ccb-4cdc-a93e-8296e96aa7ea"
DELIVERY_ID = "c0f1e2d3-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
EMBEDDING_MODEL = "w600k_mbf"
MATCH_THRESHOLD = 0.6


def job_links(job_id: str, *, stored: bool = True) -> Json:
    """`stored` False: a node frame that was not kept has no pictures (null links)."""
    return {
        "self": f"/v1/jobs/{job_id}",
        "events": f"/v1/jobs/{job_id}/events",
        "image": f"/v1/jobs/{job_id}/image" if stored else None,
        "processed_image": f"/v1/jobs/{job_id}/processed-image" if stored else None,
    }


# --- API keys --------------------------------------------------------------------------------

API_KEY: Json = {
    "name": "home-assistant",
    "prefix": "7a0e0dd72f49",
    "scopes": ["read", "write"],
    "expires_at": None,
    "auth_enabled": True,
    "rate_limit": 600,
    "rate_limit_window_s": 60,
}


# --- jobs ------------------------------------------------------------------------------------


def _face(
    detection_id: int,
    score: float,
    box: list[float],
    landmarks: list[list[float]],
    sharpness: float,
    **identify: Any,
) -> Json:
    return {
        "id": detection_id,
        "kind": "face",
        "label": "face",
        "score": score,
        "box": box,
        "landmarks": landmarks,
        "attributes": {"embedding_model": EMBEDDING_MODEL, "sharpness": sharpness, **identify},
    }


# SCRFD-500M on t1.jpg (1280 × 886): the six faces, best score first.
T1_FACES: list[Json] = [
    _face(
        5,
        0.8795,
        [745.3, 342.2, 847.3, 480.1],
        [[761.1, 400.1], [803.8, 399.8], [774.6, 429.0], [767.2, 444.4], [805.0, 443.5]],
        185.1,
    ),
    _face(
        6,
        0.873,
        [463.5, 266.5, 572.7, 415.4],
        [[495.6, 321.6], [545.6, 335.6], [513.6, 361.8], [484.5, 368.0], [530.7, 380.2]],
        329.8,
    ),
    _face(
        7,
        0.8722,
        [55.6, 260.8, 168.6, 397.9],
        [[82.8, 328.1], [124.4, 302.6], [117.9, 335.1], [114.3, 369.7], [148.9, 347.7]],
        432.6,
    ),
    _face(
        8,
        0.8645,
        [906.0, 59.5, 1011.1, 206.3],
        [[916.7, 118.8], [948.1, 115.6], [920.3, 150.9], [935.2, 169.9], [961.6, 166.1]],
        231.6,
    ),
    _face(
        9,
        0.8592,
        [1130.3, 272.8, 1227.3, 400.6],
        [[1149.3, 324.8], [1194.5, 319.8], [1170.6, 344.2], [1156.5, 366.9], [1197.2, 362.7]],
        254.2,
    ),
    _face(
        10,
        0.8228,
        [270.0, 144.9, 371.9, 270.3],
        [[285.4, 206.1], [318.3, 190.0], [302.7, 223.9], [311.3, 244.7], [339.7, 230.5]],
        123.0,
    ),
]

T1_CREATED_AT = "2026-12-04T04:36:42.143625Z"
T1_IMAGE: Json = {"width": 1280, "height": 886, "content_type": "image/jpeg"}

# POST /v1/images, 202: accepted, not yet run.
JOB_QUEUED: Json = {
    "id": T1_JOB_ID,
    "status": "queued",
    "purpose": "detect",
    "tasks": ["faces"],
    "image": T1_IMAGE,
    "counts": {},
    "error": None,
    "created_at": T1_CREATED_AT,
    "started_at": None,
    "finished_at": None,
    "timings": {"queue_ms": None, "decode_ms": None, "inference_ms": None, "total_ms": None},
    "links": job_links(T1_JOB_ID),
    "node_id": None,
    "node_name": None,
    "detections": [],
    "text": None,
}

# GET /v1/jobs/{id} (and POST /v1/images?wait=): t1.jpg done, six faces.
JOB_DONE: Json = {
    **JOB_QUEUED,
    "status": "done",
    "counts": {"face": 6},
    "started_at": "2026-12-04T04:36:42.154725Z",
    "finished_at": "2026-12-04T04:36:42.497818Z",
    "timings": {"queue_ms": 11.1, "decode_ms": 10.48, "inference_ms": 270.618, "total_ms": 354.193},
    "detections": T1_FACES,
}

DOG_JOB_SUMMARY: Json = {
    "id": DOG_JOB_ID,
    "status": "done",
    "purpose": "detect",
    "tasks": ["objects"],
    "image": {"width": 768, "height": 576, "content_type": "image/jpeg"},
    "counts": {"bicycle": 1, "car": 1, "dog": 1, "truck": 1},
    "error": None,
    "created_at": "2026-12-04T04:36:42.911397Z",
    "started_at": "2026-12-04T04:36:42.930254Z",
    "finished_at": "2026-12-04T04:36:43.039983Z",
    "timings": {
        "queue_ms": 18.857,
        "decode_ms": 6.905,
        "inference_ms": 65.929,
        "total_ms": 128.586,
    },
    "links": job_links(DOG_JOB_ID),
    "node_id": None,
    "node_name": None,
}

JOB_PAGE: Json = {
    "items": [
        DOG_JOB_SUMMARY,
        {k: v for k, v in JOB_DONE.items() if k not in ("detections", "text")},
    ],
    # base64url of "<created_at>|<id>" of the page's last job
    "next_cursor": "MjAyNi0xMi0wNFQwNDozNjo0Mi4xNDM2MjUrMDA6MDB8MDkyMTA3YTItMjk1Ni00NTdlLTk1OGYt"
    "MTlkYTk1MjQ5NWRm",
}

FRAME_CREATED_AT = "2026-12-04T04:36:46.797728Z"

# POST /v1/nodes/me/frames, 202: a frame of gate-cam, accepted.
FRAME_JOB_QUEUED: Json = {
    "id": FRAME_JOB_ID,
    "status": "queued",
    "purpose": "detect",
    "tasks": ["faces", "identify"],
    "image": {"width": 1480, "height": 832, "content_type": "image/jpeg"},
    "counts": {},
    "error": None,
    "created_at": FRAME_CREATED_AT,
    "started_at": None,
    "finished_at": None,
    "timings": {"queue_ms": None, "decode_ms": None, "inference_ms": None, "total_ms": None},
    "links": job_links(FRAME_JOB_ID, stored=False),  # gate-cam does not store its frames
    "node_id": NODE_ID,
    "node_name": NODE_NAME,
}

FRAME_FACE: Json = _face(
    23,
    0.7958,
    [539.7, 124.4, 893.9, 643.1],
    [[679.8, 327.3], [831.8, 317.5], [796.9, 416.6], [709.1, 513.4], [828.6, 504.9]],
    1113.2,
    identity={"person_id": OBAMA_ID, "name": "obama", "similarity": 0.92184},
    threshold=MATCH_THRESHOLD,
    runner_up={"person_id": BIDEN_ID, "name": "biden", "similarity": 0.01871},
)

# The same frame, done (?wait=, GET /v1/nodes/me/jobs/{id}): obama, identified.
FRAME_JOB_DONE: Json = {
    **FRAME_JOB_QUEUED,
    "status": "done",
    "counts": {"face": 1},
    "started_at": "2026-12-04T04:36:46.926980Z",
    "finished_at": "2026-12-04T04:36:47.056064Z",
    "timings": {
        "queue_ms": 129.252,
        "decode_ms": 8.663,
        "inference_ms": 83.228,
        "total_ms": 258.336,
    },
    "detections": [FRAME_FACE],
    "text": None,
}

# --- nodes -----------------------------------------------------------------------------------

NODE: Json = {
    "id": NODE_ID,
    "name": NODE_NAME,
    "tasks": ["faces", "identify"],
    "store_frames": False,
    "store_face_crops": False,
    "created_at": "2026-12-04T04:36:46.699550Z",
    "revoked_at": None,
    "online": True,
    "last_seen_at": "2026-12-04T04:41:17.734692Z",
    "last_heartbeat_at": "2026-12-04T04:41:10.744853Z",
    "state": "active",
    "fps": 5.0,
    "send_fps": 2.0,
    "latency_ms_p50": 180.0,
    "frames_per_min": 120,
    "dark_scene": False,
    "version": "0.1.0",
    "last_error": None,
}

# POST /v1/nodes, 201: registered, never heard from yet; its secret, once.
NODE_CREATED: Json = {
    **NODE,
    "online": False,
    "last_seen_at": None,
    "last_heartbeat_at": None,
    "state": None,
    "fps": None,
    "send_fps": 0.0,
    "latency_ms_p50": None,
    "frames_per_min": 0,
    "version": None,
    "secret": "lkn_BgH43-mIiWumHWquVyASHGhehKlMaOVMMbyJp61QykM",
}

NODE_LIST: Json = {
    "items": [
        NODE,
        {
            **NODE,
            "id": "9b0e4c2a-7d1f-4e3b-a5c6-1d2e3f4a5b6c",
            "name": "garage-cam",
            "tasks": ["objects", "plates"],
            "online": False,
            "last_seen_at": "2026-12-04T01:12:05.118204Z",
            "last_heartbeat_at": "2026-12-04T01:12:01.020417Z",
            "state": "idle",
            "fps": 2.0,
            "send_fps": 0.0,
            "latency_ms_p50": 240.0,
            "frames_per_min": 0,
            "dark_scene": True,
            "last_error": "camera read failed: timeout after 5.0 s",
        },
    ],
    "offline_after_s": 30.0,
}

NODE_TOKEN: Json = {
    "access_token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJsb29rb3V0Iiw"
    "iYXVkIjoibG9va291dDpub2RlIiwic3ViIjoiNDEzMGI1ZmUtODE4Yy00MDVkLWFlZjYtNzA3ZWQxM2E3NDA0Iiwian"
    "RpIjoiZDFjYmUyOTA1MmNmNDBjN2IxNzM3Zjg1ZTE0OGIxNDAiLCJpYXQiOjE3OTYzNTkwMDYsImV4cCI6MTc5NjM1"
    "OTkwNn0.Xjbrw9QlsPB5NdwCF94lNz5HSlIEUdjqyMOJpIIFW_c",
    "token_type": "bearer",
    "expires_in": 900,
    "expires_at": "2026-12-04T04:51:46Z",
}

HEARTBEAT_ACK: Json = {"node_id": NODE_ID, "next_heartbeat_s": 10.0, "offline_after_s": 30.0}

# --- stats -----------------------------------------------------------------------------------

COUNTS_REPORT: Json = {
    "node_id": NODE_ID,
    "from": "2026-12-04T02:00:00Z",
    "to": "2026-12-04T05:00:00Z",
    "bucket": "1h",
    "bucket_s": 3600,
    "buckets": [
        {
            "start": "2026-12-04T02:00:00Z",
            "end": "2026-12-04T03:00:00Z",
            "frames": 0,
            "counts": {},
        },
        {
            "start": "2026-12-04T03:00:00Z",
            "end": "2026-12-04T04:00:00Z",
            "frames": 412,
            "counts": {"car": 37, "face": 96, "person": 158},
        },
        {
            "start": "2026-12-04T04:00:00Z",
            "end": "2026-12-04T05:00:00Z",
            "frames": 655,
            "counts": {"car": 12, "face": 201, "person": 340, "plate:KX51RTA": 3},
        },
    ],
    "totals": {"car": 49, "face": 297, "person": 498, "plate:KX51RTA": 3},
}

# --- gallery ---------------------------------------------------------------------------------

OBAMA_FACES: list[Json] = [
    {
        "id": OBAMA_FACE_IDS[0],
        "model": EMBEDDING_MODEL,
        "source_job_id": None,
        "face_px": 260.8,
        "sharpness": 1495.4,
        "yaw_ratio": 0.239,
        "created_at": "2026-12-04T04:36:41.477082Z",
        "source_face_id": None,
        "thumbnail_url": f"/v1/people/{OBAMA_ID}/faces/{OBAMA_FACE_IDS[0]}/thumbnail",
    },
    {
        "id": OBAMA_FACE_IDS[1],
        "model": EMBEDDING_MODEL,
        "source_job_id": None,
        "face_px": 231.5,
        "sharpness": 1998.7,
        "yaw_ratio": 0.008,
        "created_at": "2026-12-04T04:36:41.477082Z",
        "source_face_id": None,
        "thumbnail_url": f"/v1/people/{OBAMA_ID}/faces/{OBAMA_FACE_IDS[1]}/thumbnail",
    },
]

# POST /v1/people, 201: a new person, no face yet.
PERSON_NEW: Json = {
    "id": OBAMA_ID,
    "name": "obama",
    "named": True,
    "ignored": False,
    "created_at": "2026-12-04T04:36:40.689971Z",
    "face_count": 0,
    "faces": [],
    "sighting_count": 0,
    "sightings": [],
    "first_seen": None,
    "last_seen": None,
    "sources": [],
}

PERSON: Json = {**PERSON_NEW, "face_count": 2, "faces": OBAMA_FACES}

# An unnamed person: unknown faces the clustering grouped (GET /v1/people?named=false).
UNNAMED_PERSON: Json = {
    "id": UNNAMED_ID,
    "name": None,
    "named": False,
    "ignored": False,
    "created_at": "2026-12-04T04:40:02.513377Z",
    "face_count": 0,
    "faces": [],
    "sighting_count": 2,
    "sightings": [
        {
            "face_id": 57,
            "job_id": "5262c58e-d439-4e7e-a165-40b2d2e9e642",
            "seen_at": "2026-12-04T04:39:47.591204Z",
            "node_id": NODE_ID,
            "manual": False,
            "enrolled": False,
            "thumbnail_url": None,
        },
        {
            "face_id": 5,
            "job_id": T1_JOB_ID,
            "seen_at": T1_CREATED_AT,
            "node_id": None,
            "manual": False,
            "enrolled": False,
            "thumbnail_url": "/v1/faces/5/thumbnail",
        },
    ],
    "first_seen": T1_CREATED_AT,
    "last_seen": "2026-12-04T04:39:47.591204Z",
    "sources": [
        {"node_id": NODE_ID, "node_name": NODE_NAME, "faces": 1},
        {"node_id": None, "node_name": None, "faces": 1},
    ],
}

PERSON_PAGE: Json = {"items": [PERSON, UNNAMED_PERSON], "next_cursor": None}

# POST /v1/people/{id}/faces: two photos of obama enrolled.
ENROLLED: Json = {
    "person": PERSON,
    "enrolled": OBAMA_FACES,
    "duplicates": [],
}

# POST /v1/faces/{face_id}/promote: face 5 of t1.jpg becomes the first face of a new person.
PROMOTED_FACE: Json = {
    "id": NEW_FACE_ID,
    "model": EMBEDDING_MODEL,
    "source_job_id": T1_JOB_ID,
    "face_px": 101.9,
    "sharpness": 185.1,
    "yaw_ratio": 0.184,
    "created_at": "2026-12-04T04:36:46.652259Z",
    "source_face_id": 5,
    "thumbnail_url": f"/v1/people/{UNNAMED_ID}/faces/{NEW_FACE_ID}/thumbnail",
}
PROMOTED: Json = {
    "person": {
        **PERSON_NEW,
        "id": UNNAMED_ID,
        "name": "guest-1",
        "created_at": "2026-12-04T04:36:46.652259Z",
        "face_count": 1,
        "faces": [PROMOTED_FACE],
    },
    "enrolled": [PROMOTED_FACE],
    "duplicates": [],
}

MOVED: Json = {"face_id": 57, "person_id": OBAMA_ID, "enrolled": True}

# POST /v1/identify with obama_and_biden.jpg: two enrolled people and a stranger.
IDENTIFIED: Json = {
    "job_id": QUERY_JOB_ID,
    "threshold": MATCH_THRESHOLD,
    "faces": [
        {
            "face_id": 18,
            "box": [760.5, 390.9, 938.9, 647.4],
            "score": 0.8849,
            "identity": {"person_id": BIDEN_ID, "name": "biden", "similarity": 0.89007},
            "unknown": False,
            "similarity": 0.89007,
            "threshold": MATCH_THRESHOLD,
            "runner_up": {"person_id": OBAMA_ID, "name": "obama", "similarity": 0.04323},
        },
        {
            "face_id": 19,
            "box": [1143.4, 358.5, 1331.1, 605.9],
            "score": 0.8624,
            "identity": {"person_id": OBAMA_ID, "name": "obama", "similarity": 0.902},
            "unknown": False,
            "similarity": 0.902,
            "threshold": MATCH_THRESHOLD,
            "runner_up": {"person_id": BIDEN_ID, "name": "biden", "similarity": 0.00678},
        },
        {
            "face_id": 20,
            "box": [1639.4, 1035.7, 1789.1, 1230.8],
            "score": 0.788,
            "identity": None,
            "unknown": True,
            "similarity": 0.01634,
            "threshold": MATCH_THRESHOLD,
            "runner_up": {"person_id": OBAMA_ID, "name": "obama", "similarity": 0.00478},
        },
    ],
}

VERIFIED: Json = {
    "same_person": True,
    "similarity": 0.88412,
    "threshold": MATCH_THRESHOLD,
    "job_ids": [QUERY_JOB_ID, QUERY_JOB_ID_2],
}

# POST /v1/faces/search with obama1.jpg: where obama was seen.
SEARCHED: Json = {
    "job_id": QUERY_JOB_ID,
    "query_box": [539.7, 124.4, 893.9, 643.1],
    "min_similarity": MATCH_THRESHOLD,
    "threshold": MATCH_THRESHOLD,
    "results": [
        {
            "face_id": 23,
            "job_id": FRAME_JOB_ID,
            "seen_at": FRAME_CREATED_AT,
            "box": [539.7, 124.4, 893.9, 643.1],
            "similarity": 0.99871,
        },
        {
            "face_id": 12,
            "job_id": PAIR_JOB_ID,
            "seen_at": "2026-12-04T04:36:42.531960Z",
            "box": [1143.4, 358.5, 1331.1, 605.9],
            "similarity": 0.92184,
        },
    ],
}

# --- outbound events (webhook POST bodies, MQTT messages) ------------------------------------

EVENT_TIME = "2026-12-04T04:36:42.883Z"


def _event(
    event_id: str,
    event_type: str,
    data: Json,
    *,
    job: Json | None,
    node: Json | None = None,
    owner_id: str | None = KEY_ID,
    time: str = EVENT_TIME,
) -> Json:
    links: Json = {}
    if job is not None:
        links = {k: v for k, v in job_links(job["id"]).items() if k not in ("self", "events")}
        links = {"job": f"/v1/jobs/{job['id']}", **links}
    if node is not None:
        links["node"] = f"/v1/nodes/{node['id']}"
    return {
        "v": 1,
        "id": event_id,
        "type": event_type,
        "time": time,
        "owner_id": owner_id,
        "job": job,
        "node": node,
        "data": data,
        "links": links,
    }


_PAIR_JOB: Json = {"id": PAIR_JOB_ID, "tasks": ["faces", "identify"]}
_PAIR_SOURCE: Json = {"kind": "upload", "job_id": PAIR_JOB_ID}
_FRAME_JOB: Json = {"id": FRAME_JOB_ID, "tasks": ["faces", "identify"]}
_NODE_REF: Json = {"id": NODE_ID, "name": NODE_NAME}
_NODE_SOURCE: Json = {"kind": "node", "node_id": NODE_ID, "node_name": NODE_NAME}

EVENT_JOB_DONE = _event(
    "evt_1796359002885-0_0",
    "job.done",
    {
        "status": "done",
        "counts": {"face": 3},
        "timings": {
            "queue_ms": 15.446,
            "decode_ms": 87.253,
            "inference_ms": 152.888,
            "total_ms": 343.971,
        },
        "detections": 3,
        "source": _PAIR_SOURCE,
    },
    job=_PAIR_JOB,
)
EVENT_JOB_FAILED = _event(
    "evt_1796359004120-0_0",
    "job.failed",
    {"error": "the JPEG image could not be decoded"},
    job={"id": "0ffcd73e-798e-4797-a787-7ce59b40c06c", "tasks": None},
    time="2026-12-04T04:36:44.117Z",
)
EVENT_FACE_IDENTIFIED = _event(
    "evt_1796359002885-0_2",
    "face.identified",
    {
        "person": {"id": OBAMA_ID, "name": "obama"},
        "similarity": 0.902,
        "detection_id": 12,
        "box": [1143.4, 358.5, 1331.1, 605.9],
        "source": _PAIR_SOURCE,
    },
    job=_PAIR_JOB,
)
EVENT_FACE_UNKNOWN = _event(
    "evt_1796359002885-0_3",
    "face.unknown",
    {
        "cluster_id": None,
        "similarity": 0.01634,
        "detection_id": 13,
        "box": [1639.4, 1035.7, 1789.1, 1230.8],
        "source": _PAIR_SOURCE,
    },
    job=_PAIR_JOB,
)
EVENT_OBJECT_DETECTED = _event(
    "evt_1796359003044-0_3",
    "object.detected",
    {"label": "dog", "count": 1, "source": {"kind": "upload", "job_id": DOG_JOB_ID}},
    job={"id": DOG_JOB_ID, "tasks": ["objects"]},
    time="2026-12-04T04:36:43.041Z",
)
_TEXT_JOB_ID = "a41c9e3b-2f5d-4a86-9c1e-7b3d5f8e2a60"
EVENT_TEXT_READ = _event(
    "evt_1796359012408-0_1",
    "text.read",
    {
        "texts": [
            {
                "text": "Region-based segmentation",
                "line": 0,
                "score": 0.9712,
                "box": [42.0, 18.5, 371.0, 49.0],
            },
            {
                "text": "Let us first determine markers of the coins",
                "line": 1,
                "score": 0.9534,
                "box": [40.5, 61.0, 598.0, 92.5],
            },
        ],
        "source": {"kind": "upload", "job_id": _TEXT_JOB_ID},
    },
    job={"id": _TEXT_JOB_ID, "tasks": ["text"]},
    time="2026-12-04T04:36:52.405Z",
)
_PLATE_JOB_ID = "d7e8f9a0-b1c2-4d3e-8f4a-5b6c7d8e9f01"
_GARAGE_REF: Json = {"id": "9b0e4c2a-7d1f-4e3b-a5c6-1d2e3f4a5b6c", "name": "garage-cam"}
EVENT_PLATE_READ = _event(
    "evt_1796359015530-0_2",
    "plate.read",
    {
        "plate": "KX51RTA",
        "text": "KX51 RTA",
        "score": 0.9911,
        "box": [623.0, 136.0, 673.0, 153.0],
        "vehicle": {"label": "car", "score": 0.8734, "box": [512.6, 61.2, 781.9, 214.7]},
        "detection_id": 88,
        "source": {"kind": "node", "node_id": _GARAGE_REF["id"], "node_name": "garage-cam"},
    },
    job={"id": _PLATE_JOB_ID, "tasks": ["objects", "plates"]},
    node=_GARAGE_REF,
    owner_id=None,
    time="2026-12-04T04:36:55.527Z",
)
EVENT_NODE_ONLINE = _event(
    "evt_1796359006745-0_0",
    "node.online",
    {"online": True, "state": "active", "dark_scene": False, "change": "online"},
    job=None,
    node=_NODE_REF,
    owner_id=None,
    time="2026-12-04T04:36:46.744Z",
)
EVENT_NODE_OFFLINE = _event(
    "evt_1796361125014-0_0",
    "node.offline",
    {"online": False, "state": "active", "dark_scene": False, "change": "offline"},
    job=None,
    node=_NODE_REF,
    owner_id=None,
    time="2026-12-04T05:12:05.011Z",
)
EVENT_NODE_DARK = _event(
    "evt_1796376230911-0_0",
    "node.dark",
    {"online": True, "state": "active", "dark_scene": True, "change": "dark_scene"},
    job=None,
    node=_NODE_REF,
    owner_id=None,
    time="2026-12-04T09:23:50.908Z",
)

# A delivery of the face.identified event to a webhook.
DELIVERY: Json = {
    "id": DELIVERY_ID,
    "seq": 17,
    "event_id": EVENT_FACE_IDENTIFIED["id"],
    "event_type": "face.identified",
    "status": "delivered",
    "attempts": 1,
    "last_status_code": 200,
    "last_error": None,
    "created_at": "2026-12-04T04:36:42.902114Z",
    "next_attempt_at": None,
    "last_attempt_at": "2026-12-04T04:36:42.915337Z",
    "delivered_at": "2026-12-04T04:36:42.958401Z",
    "payload": EVENT_FACE_IDENTIFIED,
}
DEAD_DELIVERY: Json = {
    **DELIVERY,
    "id": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
    "seq": 16,
    "event_id": EVENT_JOB_FAILED["id"],
    "event_type": "job.failed",
    "status": "dead",
    "attempts": 14,
    "last_status_code": 502,
    "last_error": "the receiver answered 502",
    "created_at": "2026-12-03T04:36:44.130228Z",
    "last_attempt_at": "2026-12-04T04:30:12.580944Z",
    "delivered_at": None,
    "payload": EVENT_JOB_FAILED,
}
# POST .../redeliver, 202: queued again, fresh retries.
DELIVERY_REQUEUED: Json = {
    **DEAD_DELIVERY,
    "status": "pending",
    "attempts": 0,
    "created_at": "2026-12-04T04:42:00.301554Z",
    "next_attempt_at": "2026-12-04T04:42:00.301554Z",
}
DELIVERY_PAGE: Json = {"items": [DELIVERY, DEAD_DELIVERY], "next_cursor": 16}

WEBHOOK: Json = {
    "id": WEBHOOK_ID,
    "url": "https://automations.example/hooks/lookout",
    "description": "door chime for known faces",
    "event_types": ["face.identified", "job.failed"],
    "filters": {"node_ids": [NODE_ID], "labels": [], "people": ["obama"]},
    "enabled": True,
    "created_at": "2026-12-04T04:36:47.222382Z",
    "links": {
        "self": f"/v1/webhooks/{WEBHOOK_ID}",
        "deliveries": f"/v1/webhooks/{WEBHOOK_ID}/deliveries",
    },
}
WEBHOOK_CREATED: Json = {**WEBHOOK, "secret": "whsec_EBcQlNBh5NbscwCWbHYLRANjWI/5QNBR"}
WEBHOOK_PAGE: Json = {"items": [WEBHOOK]}

EVENTS_STATUS: Json = {
    "event_types": [
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
    ],
    "webhooks": 1,
    "deliveries_pending": 0,
    "deliveries_dead": 1,
    "dispatcher_lag": 0,
    "mqtt": {
        "configured": True,
        "connected": True,
        "broker": "mqtt.home.arpa:1883",
        "since": "2026-12-04T04:30:05.412Z",
        "last_error": None,
        "published": 1284,
        "pending": 0,
        "lag": 0,
    },
}

# --- ops -------------------------------------------------------------------------------------

LIVE: Json = {"status": "ok"}
READY: Json = {
    "ready": True,
    "status": "ok",
    "checks": {
        "postgres": {"ok": True, "detail": "ok"},
        "redis": {"ok": True, "detail": "ok"},
        "workers": {"ok": True, "detail": "2 alive"},
    },
}
# GET /health/ready, 503: Redis down (the workers' heartbeats live in Redis too).
NOT_READY: Json = {
    "ready": False,
    "status": "unavailable",
    "checks": {
        "postgres": {"ok": True, "detail": "ok"},
        "redis": {"ok": False, "detail": "unreachable: ConnectionError"},
        "workers": {"ok": False, "detail": "unknown: Redis is unreachable"},
    },
}


# --- compatible APIs: DeepStack / CodeProject.AI, CompreFace -------------------------------

# A face embedding as CompreFace's embedding routes echo it: 512 numbers for w600k_mbf; the
# examples show the first 8.
COMPREFACE_EMBEDDING: list[float] = [
    0.00760503,
    0.00798378,
    -0.00848329,
    -0.00706809,
    0.00995007,
    -0.2507081,
    0.05270649,
    -0.12221491,
]
COMPREFACE_IMAGE_IDS = (
    "2bb4166d-2f0b-4237-b257-92b093f5d39e",
    "95248dc2-fd62-46bb-9c71-152814c7bb27",
)
DEEPSTACK_DETECTION: Json = {
    "success": True,
    "predictions": [
        {
            "confidence": 0.8551,
            "label": "dog",
            "y_min": 206,
            "x_min": 132,
            "y_max": 543,
            "x_max": 325,
        },
        {
            "confidence": 0.8026,
            "label": "bicycle",
            "y_min": 137,
            "x_min": 51,
            "y_max": 423,
            "x_max": 572,
        },
        {
            "confidence": 0.7982,
            "label": "car",
            "y_min": 78,
            "x_min": 466,
            "y_max": 171,
            "x_max": 692,
        },
    ],
    "duration": 0.1158,
}
DEEPSTACK_FACES: Json = {
    "success": True,
    "predictions": [
        {"confidence": 0.8795, "y_min": 342, "x_min": 745, "y_max": 480, "x_max": 847},
        {"confidence": 0.873, "y_min": 266, "x_min": 463, "y_max": 415, "x_max": 572},
        {"confidence": 0.8722, "y_min": 260, "x_min": 55, "y_max": 397, "x_max": 168},
        {"confidence": 0.8645, "y_min": 59, "x_min": 906, "y_max": 206, "x_max": 1011},
        {"confidence": 0.8592, "y_min": 272, "x_min": 1130, "y_max": 400, "x_max": 1227},
        {"confidence": 0.8228, "y_min": 144, "x_min": 270, "y_max": 270, "x_max": 371},
    ],
    "duration": 0.3419,
}
DEEPSTACK_RECOGNITION: Json = {
    "success": True,
    "predictions": [
        {
            "confidence": 0.902,
            "userid": "obama",
            "y_min": 358,
            "x_min": 1143,
            "y_max": 605,
            "x_max": 1331,
        },
        {
            "confidence": 0.89007,
            "userid": "biden",
            "y_min": 390,
            "x_min": 760,
            "y_max": 647,
            "x_max": 938,
        },
        {
            "confidence": 0.0,
            "userid": "unknown",
            "y_min": 1035,
            "x_min": 1639,
            "y_max": 1230,
            "x_max": 1789,
        },
    ],
    "duration": 0.3253,
}
DEEPSTACK_REGISTERED: Json = {"success": True, "message": "face added", "duration": 0.4}
DEEPSTACK_FACE_LIST: Json = {"success": True, "faces": ["biden", "obama"], "duration": 0.003}
DEEPSTACK_DELETED: Json = {"success": True, "duration": 0.01}
DEEPSTACK_CUSTOM_MODELS: Json = {"success": True, "models": ["yolox_nano"], "duration": 0.001}
DEEPSTACK_MATCH: Json = {"success": True, "similarity": 0.91, "duration": 0.3}
CODEPROJECT_ALPR: Json = {
    "success": True,
    "predictions": [
        {
            "confidence": 0.99,
            "label": "Plate: KX51RTA",
            "plate": "KX51RTA",
            "y_min": 136,
            "x_min": 623,
            "y_max": 153,
            "x_max": 673,
        }
    ],
    "message": "Found Plate: KX51RTA",
    "processMs": 2410,
    "inferenceMs": 2302,
    "duration": 2.41,
}
COMPREFACE_DETECTED: Json = {
    "result": [
        {
            "box": {
                "probability": 0.8624,
                "x_max": 1332,
                "y_max": 606,
                "x_min": 1143,
                "y_min": 358,
            },
            "landmarks": [[1189, 461], [1273, 439], [1240, 491], [1214, 546], [1287, 527]],
        },
        {
            "box": {"probability": 0.8849, "x_max": 939, "y_max": 648, "x_min": 760, "y_min": 390},
            "landmarks": [[799, 488], [882, 499], [827, 542], [788, 564], [873, 574]],
        },
    ]
}
COMPREFACE_RECOGNIZED: Json = {
    "result": [
        {
            "box": {
                "probability": 0.8624,
                "x_max": 1332,
                "y_max": 606,
                "x_min": 1143,
                "y_min": 358,
            },
            "subjects": [{"subject": "obama", "similarity": 0.902}],
        },
        {
            "box": {"probability": 0.8849, "x_max": 939, "y_max": 648, "x_min": 760, "y_min": 390},
            "subjects": [{"subject": "biden", "similarity": 0.89007}],
        },
    ]
}
COMPREFACE_FACE_VERIFIED: Json = {
    "result": [
        {
            "box": {"probability": 0.8412, "x_max": 413, "y_max": 465, "x_min": 176, "y_min": 114},
            "subject": "obama",
            "similarity": 0.82757,
        }
    ]
}
COMPREFACE_VERIFIED: Json = {
    "result": [
        {
            "source_image_face": {
                "box": {
                    "probability": 0.7848,
                    "x_max": 874,
                    "y_max": 385,
                    "x_min": 626,
                    "y_min": 60,
                }
            },
            "face_matches": [
                {
                    "box": {
                        "probability": 0.8412,
                        "x_max": 413,
                        "y_max": 465,
                        "x_min": 176,
                        "y_min": 114,
                    },
                    "similarity": 0.82757,
                }
            ],
        }
    ]
}
COMPREFACE_SUBJECT: Json = {"subject": "rose_leslie"}
COMPREFACE_SUBJECTS: Json = {"subjects": ["obama", "biden", "rose_leslie"]}
COMPREFACE_UPDATED: Json = {"updated": True}
COMPREFACE_DELETED: Json = {"deleted": 2}
COMPREFACE_EXAMPLE: Json = {"image_id": COMPREFACE_IMAGE_IDS[0], "subject": "rose_leslie"}
COMPREFACE_EXAMPLE_PAGE: Json = {
    "faces": [
        {"image_id": COMPREFACE_IMAGE_IDS[1], "subject": "obama"},
        {"image_id": COMPREFACE_IMAGE_IDS[0], "subject": "rose_leslie"},
    ],
    "page_number": 0,
    "page_size": 20,
    "total_pages": 1,
    "total_elements": 2,
}
COMPREFACE_EMBEDDING_RECOGNIZED: Json = {
    "result": [
        {
            "embedding": COMPREFACE_EMBEDDING,
            "similarities": [{"subject": "rose_leslie", "similarity": 0.82757}],
        }
    ]
}
COMPREFACE_EMBEDDING_VERIFIED: Json = {
    "result": [{"embedding": COMPREFACE_EMBEDDING, "similarity": 0.82757}]
}

# --- bulk enrollment (POST /v1/people/import, GET /v1/people/imports/{id}) ------------------

IMPORT_ID = "6f1c2a9e-3b7d-4e8a-9c1f-2d5b8e7a4c30"

# A folder of 13 photos of 6 people imported, one refused.
IMPORT_DONE: Json = {
    "id": IMPORT_ID,
    "status": "done",
    "total": 13,
    "processed": 13,
    "enrolled": 12,
    "duplicates": 0,
    "refused": 1,
    "people_created": 6,
    "problems": [{"photo": "biden/biden_dog.jpg", "reason": "no face found"}],
    "error": None,
    "created_at": "2026-12-04T05:40:12.481Z",
    "started_at": "2026-12-04T05:40:12.502Z",
    "finished_at": "2026-12-04T05:40:16.913Z",
    "status_url": f"/v1/people/imports/{IMPORT_ID}",
}
