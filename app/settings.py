"""Settings, read once from LOOKOUT_* environment variables (nested groups split on `__`).

`LOOKOUT_DATABASE__URL=postgresql+asyncpg://…` sets `settings.database.url`. When the database or
Redis URL is unset, `lookout up` starts embedded servers in `data_dir` and fills them in.

Sources, later ones winning: `.env`, then `.env.{LOOKOUT_ENV}` (e.g. `.env.prod`), then the
process environment. `startup_problems()` lists what makes a configuration unfit to serve
(placeholder secrets outside dev, auth off outside dev); the API and workers refuse to start on it.
"""

import ipaddress
import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["local", "dev", "staging", "prod"]

# Secrets that only ever belong in examples. Outside dev, startup refuses them.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "change_me",
        "changeme",
        "secret",
        "password",
        "postgres",
        "redis",
        "lookout",
        "example",
    }
)
# The examples (.env.example, deploy/k8s/base/secret.yaml) write `change-me-…` values that are
# long enough to pass a length check: any value containing one of these is a placeholder too.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me")
MIN_SECRET_KEY_CHARS = 32


def is_placeholder(value: str) -> bool:
    """True for a secret that only belongs in an example (case-insensitive)."""
    lowered = value.lower()
    return lowered in PLACEHOLDER_SECRETS or any(m in lowered for m in PLACEHOLDER_MARKERS)


class ConfigError(RuntimeError):
    """The configuration cannot be served as it is; the message lists every problem."""


class DatabaseSettings(BaseModel):
    url: str | None = None  # postgresql+asyncpg://user:pass@host/db ; None → embedded
    # The most connections one process holds; each, once made, stays open (app/db.py).
    pool_size: int = Field(default=20, ge=1)
    # Fail fast when Postgres is down: a request gets 503 rather than hanging on a connect.
    connect_timeout_s: float = 5.0


class RedisSettings(BaseModel):
    url: str | None = None  # redis://host:6379/0 or unix:///path/redis.sock ; None → embedded
    # A Redis that never persists (no AOF, no RDB) for node frames that must not touch disk
    # (app/streams.py). None → the main Redis holds them: right only when it keeps nothing on
    # disk either (`lookout up`'s embedded one); production's AOF would write every frame.
    frames_url: str | None = None
    socket_timeout_s: float = 10.0  # must exceed the longest blocking read (streams.MAX_BLOCK_MS)
    connect_timeout_s: float = 5.0


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 20 * 1024 * 1024
    # Checked from the image header before any decode: stops decompression bombs.
    max_image_pixels: int = 50_000_000
    max_wait_s: float = 30.0  # cap for POST /v1/images?wait=
    # Firehose events buffered per WebSocket client before a slow client is dropped.
    ws_max_queued_events: int = 1000
    # Browser origins allowed to call the API (CORS); empty → no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    # Host headers the API answers to; "*" accepts any (put the real names here in production).
    trusted_hosts: list[str] = Field(default_factory=lambda: ["*"])
    # Open WebSockets per API process; one more is closed with 1013 (try again later).
    max_websocket_clients: int = Field(default=1000, ge=1)
    # Slow clients: a connection must send a whole request head within header_timeout_s
    # (app/server.py), and a request body may pause at most body_read_timeout_s between reads
    # (app/limits.py); else the connection is closed (408 for a body).
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_read_timeout_s: float = Field(default=15.0, gt=0)
    # Admission control: request bodies over 64 KiB (uploads, frames) read at once per API
    # process. One more waits up to upload_wait_s for a slot, then gets 503 `busy` with
    # Retry-After: a burst is told to come back, instead of exhausting memory and the DB pool.
    max_concurrent_uploads: int = Field(default=8, ge=1)
    upload_wait_s: float = Field(default=2.0, ge=0)
    # Behind nginx (nginx/): image routes answer with `X-Accel-Redirect: <prefix><storage key>`
    # and no body, and nginx's `internal` location with this path serves the file. None: the API
    # sends the bytes itself. Set it only when such a proxy is in front, or clients get no image.
    accel_redirect_prefix: str | None = None
    # API processes `lookout api` runs. More than one runs gunicorn with deploy/gunicorn.conf.py,
    # as production does: uvicorn workers sharing the port, /metrics merged over them. None: one
    # process, and under `lookout up` as many as the CPUs beside its workers allow (api_processes).
    processes: int | None = Field(default=None, ge=1)

    @field_validator("accel_redirect_prefix")
    @classmethod
    def _prefix_is_a_directory_path(cls, value: str | None) -> str | None:
        # A prefix without the trailing slash would make nginx's `alias` match `/prefix..` paths.
        if value is not None and not (value.startswith("/") and value.endswith("/")):
            raise ValueError("accel_redirect_prefix must start and end with '/'")
        return value


class AuthSettings(BaseModel):
    # False only where env == "dev": every request then acts as an admin with no owner.
    enabled: bool = True
    # Requests per key per window (fixed window in Redis); 0 turns rate limiting off.
    rate_limit_requests: int = Field(default=600, ge=0)
    rate_limit_window_s: int = Field(default=60, ge=1)
    # last_used_at is written at most this often per key (it costs a row update).
    last_used_resolution_s: int = 60
    # Per client address and rate_limit_window_s (Redis, shared by replicas; 0 turns it off):
    # failed API-key authentications, beyond which its requests get 429 (sockets close 4429)
    # until the window ends, and WebSocket connects, beyond which one more is refused alike.
    failed_auth_per_client: int = Field(default=30, ge=0)
    websocket_connects_per_client: int = Field(default=120, ge=0)
    # Open WebSockets (firehose, job events, node streams) re-check their key or node token this
    # often and close with 4401 once it is revoked; an expiry closes them at the expiry itself.
    websocket_recheck_s: float = Field(default=5.0, gt=0)


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota if any."""
    if not hasattr(os, "sched_getaffinity"):  # macOS: no affinity mask, no cgroups
        return os.cpu_count() or 1
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota != "max":
        cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return cpus


class WorkerSettings(BaseModel):
    # One single-threaded process per core measured fastest (docs/architecture.md, Models).
    processes: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # onnxruntime intra-op threads per process; processes × threads should not exceed cores.
    threads: int = Field(default=1, ge=1)
    # A message pending longer than this is presumed to belong to a dead worker and reclaimed;
    # a pipeline running longer than this fails its job ("timed out").
    job_timeout_s: float = 60.0
    max_deliveries: int = Field(default=3, ge=1)
    block_ms: int = 1000
    # onnxruntime inter-op threads per session. Graphs run sequentially (ORT_SEQUENTIAL), so
    # more than 1 only adds idle threads; kept as a setting for parallel execution experiments.
    inter_op_threads: int = Field(default=1, ge=1)
    # Up to batch_size messages are processed together (all their faces embedded in one call).
    batch_size: int = Field(default=4, ge=1)
    # Liveness seen by /health/ready: a worker counts as alive for heartbeat_ttl_s after a beat.
    heartbeat_interval_s: float = 5.0
    heartbeat_ttl_s: float = 15.0
    # How many worker processes should be alive (`lookout up` sets it); fewer alive makes
    # /health/ready report "degraded". None: any live worker is full strength.
    expected: int | None = Field(default=None, ge=1)
    # Pause before retrying after Postgres or Redis went away.
    retry_backoff_s: float = 1.0
    # Prometheus exporter of each worker process: process i listens on metrics_port + i.
    # None → no exporter. (Each process serves its own registry; no multiprocess dir needed.)
    metrics_port: int | None = None
    # When a read finds a queue (several messages, fewer than batch_size), wait this long for
    # more to fill the batch. A lone message never waits (workers/consumer.py, next_entries).
    batch_wait_ms: int = Field(default=5, ge=0)
    # A batch still in inference this long after it started is marked running (row and
    # `running` events); one whose results come sooner goes from queued to done, skipping an
    # UPDATE, a commit and two Redis commands per job that nobody would see for long. A second:
    # a CPU batch of four photos (~0.4 s on 2 cores) is not marked, which saved 0.3-1.4 ms of
    # CPU an image, all processes together, in two probes (bench/RESULTS.md, the throughput
    # section's notes); OCR and other slow jobs still show `running`. 0: every batch is
    # marked running before its images are loaded.
    running_after_ms: int = Field(default=1000, ge=0)


class StreamSettings(BaseModel):
    jobs_maxlen: int = 100_000
    firehose_maxlen: int = 10_000
    job_events_ttl_s: int = 3600  # per-job event stream lives this long after the job ends


class RetentionSettings(BaseModel):
    image_ttl_s: int = 7 * 24 * 3600  # uploaded and processed images are deleted after this
    storage_max_bytes: int = 10 * 1024**3  # total image bytes; oldest evicted first
    job_ttl_s: int = 30 * 24 * 3600  # finished jobs (with their detections) are deleted after this


class MaintenanceSettings(BaseModel):
    # The reconciler + janitor loop in the API lifespan; one replica runs it (Redis lock).
    enabled: bool = True
    interval_s: float = 30.0
    # A queued/running job younger than this is left alone: the API may be between its
    # INSERT and its XADD.
    reconcile_grace_s: float = 30.0
    reconcile_batch: int = 500


class ModelSettings(BaseModel):
    """Which model packs the workers load (see workers/models/catalog.py for the manifest)."""

    # buffalo_sc: SCRFD-500M + ArcFace w600k_mbf (512-d). Tests use scrfd_mobilefacenet.
    face_pack: str = "buffalo_sc"
    object_pack: str = "yolox_nano"
    # PP-OCR files from the rapidocr-onnxruntime wheel (text.engine=ppocr): ppocr_v4 or
    # ppocr_v4_upright (no angle classifier). `lookout models list` shows every pack.
    text_pack: str = "ppocr_v4"
    # onnxruntime execution providers in order of preference; unavailable ones are skipped.
    # CUDA where this onnxruntime build has it (onnxruntime-gpu: Dockerfile.worker's GPU
    # variant), else CPU: the CPU package never lists CUDA, so CPU machines are unaffected.
    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # Fetch a missing file from its upstream release (checksum-verified) into data_dir/models.
    download: bool = True
    # Fetch from this base URL instead of upstream (an offline mirror): {mirror_url}/{file}.
    mirror_url: str | None = None
    download_timeout_s: float = 60.0
    # Hash every file at worker start; a file that does not match its manifest sha256 is refused.
    verify_on_start: bool = True
    # Run each model once on a blank input at start, so the first job does not pay for
    # onnxruntime's lazy allocations.
    warm_up: bool = True


class FaceSettings(BaseModel):
    input_size: int = 640  # SCRFD input (the image is letterboxed to this square)
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    # Age and gender, when the face pack has a genderage model.
    attributes: bool = True
    # Faces per embedder call. All faces of a batch go in one call up to this many; more are
    # split. On a 2-core CPU the stand-in's per-face cost rose with batch size (bench/RESULTS.md);
    # large batches pay off on GPUs.
    max_embed_batch: int = Field(default=64, ge=1)


class GallerySettings(BaseModel):
    """Face recognition against enrolled people (app/gallery, workers/gallery.py)."""

    # Calibrated similarity (app/calibration.py: the same scale for every embedding model, the
    # one every API reports) at or above which a face is the nearest enrolled person; below,
    # unknown. 0.60 is Double Take's default match and, for the MobileFaceNet stand-in, raw
    # cosine 0.619 (the former raw threshold 0.62, in the gap between different-person pairs
    # ≤ 0.54 and same-person pairs ≥ 0.70 on ../shared/images). README: "Similarity".
    match_threshold: float = Field(default=0.60, ge=0, le=1)
    # An enrollment whose RAW cosine to a face the person already has is at least this is a
    # near-duplicate: reported and not stored again (the same photo re-encoded measures > 0.99).
    # Raw, not calibrated: it compares photos, and the calibrated scale saturates near 1.
    duplicate_threshold: float = Field(default=0.97, ge=-1, le=1)
    # Enrollment quality (app/gallery/quality.py). Shorter side of the face box, in pixels.
    min_face_px: float = 40.0
    # Variance of the Laplacian of the 112-px aligned grey crop. The shared training photos
    # measure 980-4400; no really blurred photo was measured, so this floor is deliberately low.
    min_sharpness: float = 25.0
    # |nose x - eye midpoint x| / eye distance (0 frontal, ~0.5 and more in profile).
    max_yaw_ratio: float = 0.45
    # Angle of the eye line from horizontal, degrees.
    max_roll_deg: float = 40.0
    # How long a synchronous gallery call (enroll, identify, verify, search) waits for a worker.
    wait_s: float = Field(default=30.0, gt=0)
    max_search_results: int = Field(default=50, ge=1)
    # Building the gallery's HNSW index (`lookout gallery reindex`, migration 0009): Postgres's
    # maintenance_work_mem for the build, in MiB. The graph must fit in it, or pgvector spills
    # to disk and the build takes several times longer (bench/RESULTS.md, "Gallery"): about
    # 1.5 GiB per million faces at m=32. docs/deploy.md: Postgres needs as much shared memory.
    index_build_memory_mb: int = Field(default=2048, ge=64)
    # Parallel workers beside the leader for that build (max_parallel_maintenance_workers).
    index_build_workers: int = Field(default=1, ge=0)
    # The HNSW graph's m and ef_construction for builds; None: chosen by the gallery's size
    # (app/gallery/index.py). Larger finds the right person more often, and builds slower.
    index_m: int | None = Field(default=None, ge=2, le=100)
    index_ef_construction: int | None = Field(default=None, ge=4, le=1000)
    # Identify's in-memory index of a large gallery (app/gallery/memory_index.py: from 50,000
    # faces of one model and owner), built by each process that identifies: about 0.35 GB a
    # process per million faces. false: this process walks pgvector's graph at every size (API
    # pods with many gunicorn workers and little memory). docs/deploy.md, "The gallery at scale".
    memory_index: bool = True
    # Bulk enrollment (POST /v1/people/import): photos per batch (one transaction each), and
    # batches in flight at once (their photos queued for the workers together).
    import_batch: int = Field(default=16, ge=1, le=500)
    import_batches_in_flight: int = Field(default=2, ge=1, le=16)
    # Most photos in one import request (whose size api.max_upload_bytes bounds, like every
    # upload: `lookout people import` sends a large folder as several imports).
    import_max_photos: int = Field(default=1000, ge=1)
    # Imports one API process runs at a time; later ones wait their turn (queued).
    import_concurrency: int = Field(default=1, ge=1)


class ClusterSettings(BaseModel):
    """Unknown faces grouped into unnamed people (app/gallery/clusters.py), per owner and model.

    Incremental DBSCAN: a face is a *core* when at least `core_faces` unknown faces (itself
    included) lie within `min_similarity` of it; a core face founds or joins a cluster with
    every unclustered face around it, and merges the unnamed clusters it bridges. A non-core
    face within reach of a clustered one joins that cluster (a border face); otherwise it waits
    (noise) until new faces arrive near it.
    """

    # Runs in the API lifespan: each finished job's faces as its result reaches the firehose
    # (consumer group `clusters`), one batch at a time in the deployment (a Postgres lock).
    enabled: bool = True
    # A sweep of every face for those no result event announced (the firehose trimmed it
    # before the clustering read it): at the start, then this often. It reads every face
    # embedding (1.3 s of Postgres at 1M faces).
    sweep_interval_s: float = Field(default=3600.0, gt=0)
    # Neighbour radius as cosine similarity. Default: the gallery's match threshold (0.62), so
    # a face clusters with the faces that would identify it. Recalibrate with it.
    min_similarity: float = Field(default=0.62, ge=-1, le=1)
    # Faces (itself included) within min_similarity that make a face a core (DBSCAN minPts);
    # a new cluster therefore starts with at least this many faces.
    core_faces: int = Field(default=3, ge=2)
    # An unnamed person with fewer faces (after moves and deletions) is not listed.
    min_person_faces: int = Field(default=2, ge=1)
    # Neighbours looked at per face (the k of the HNSW query).
    max_neighbours: int = Field(default=32, ge=2)
    # Unknown faces taken per transaction; a pass runs batches until none are left.
    batch_size: int = Field(default=500, ge=1)


class CompreFaceSettings(BaseModel):
    """The CompreFace-compatible API (app/compat/compreface)."""

    # Clients send det_prob_threshold on CompreFace's detector scale, where a clear face scores
    # ~0.99 (Double Take sends 0.8 by default). SCRFD-500M scores clear faces lower: 0.76-0.89
    # on ../shared/images. A requested threshold above this is lowered to it.
    max_det_prob_threshold: float = Field(default=0.7, ge=0, le=1)


class ClientSettings(BaseModel):
    """What every remote command (`lookout people …`, `lookout nodes …`) uses to talk to a
    running API; --server / --api-key override it (app.cli.common.client_config)."""

    url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None  # LOOKOUT_CLIENT__API_KEY
    timeout_s: float = 120.0


class ObjectSettings(BaseModel):
    score_threshold: float = 0.3
    nms_threshold: float = 0.45
    # Keep only these COCO class names (e.g. ["person", "car"]); None keeps all 80.
    classes: list[str] | None = None


class TextSettings(BaseModel):
    """The `text` and `plates` tasks (workers/detectors/text.py)."""

    # ppocr: the models.text_pack ONNX files; tesseract: Debian's tesseract-ocr, installed
    # separately (a worker set to it refuses to start without the binary).
    engine: Literal["ppocr", "tesseract"] = "ppocr"
    # A region is kept when its string's recognition confidence reaches this (0..1).
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    # PP-OCR detector input: longer side at most max_side_px; small images are enlarged
    # until the shorter side reaches min_side_px.
    max_side_px: int = Field(default=960, ge=64)
    min_side_px: int = Field(default=640, ge=32)
    box_threshold: float = Field(default=0.5, ge=0, le=1)
    tesseract_command: str = "tesseract"
    tesseract_languages: str = "eng"  # e.g. eng+deu (each needs tesseract-ocr-<lang>)
    tesseract_psm: int = Field(default=3, ge=0, le=13)  # page segmentation mode


class PlateSettings(BaseModel):
    """The `plates` task: text read inside vehicles found by the object detector (or, with no
    vehicle found, in the whole image: a plate camera's close-up)."""

    vehicle_classes: list[str] = ["car", "truck", "bus", "motorcycle"]
    # Full match on the string upper-cased with all but letters and digits (of any script)
    # removed. Default: 4-10 letters and digits, at least one digit.
    pattern: str = r"(?=.*\d)[^\W_]{4,10}"
    # No vehicle found: read the whole image. Off: frames without a vehicle cost no OCR.
    whole_image_without_vehicle: bool = True


class DecodeSettings(BaseModel):
    # JPEGs at least twice this size on the longer side decode at 1/2, 1/4 or 1/8 scale (libjpeg
    # DCT scaling: far less work and memory), never below this. The models letterbox to ≤ 640 px,
    # so detail beyond this only slows decode; boxes are reported in full-resolution pixels.
    target_side_px: int = Field(default=2048, ge=64)


class EventsSettings(BaseModel):
    """Outbound events: webhooks (app/events_out), delivered by `lookout events`."""

    # Base URL put in front of event links (e.g. https://lookout.example); None: links are paths.
    public_url: str | None = None
    # A delivery attempt waits this long for the receiver's answer.
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Retries: exponential backoff from retry_base_s, capped at retry_max_backoff_s, each wait
    # jittered down to half; after retry_window_s from the event a delivery is dead-lettered.
    retry_base_s: float = Field(default=5.0, gt=0)
    retry_max_backoff_s: float = Field(default=3600.0, gt=0)
    retry_window_s: float = Field(default=24 * 3600.0, gt=0)
    # SSRF guard: targets resolving to loopback, link-local, private or metadata addresses are
    # refused, except addresses inside these networks: "192.168.1.0/24,10.0.0.5" or the JSON
    # list ["192.168.1.0/24", "10.0.0.5"]. Checked at start: a typo is refused there, naming it.
    allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks_list(cls, value: object) -> object:
        """An environment variable's text: a JSON list, or networks separated by commas."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"LOOKOUT_EVENTS__ALLOWED_NETWORKS: {entry!r} is not an address or a network "
                    "(e.g. 192.168.1.0/24)"
                ) from None
        return value

    # How often the dispatcher looks for due retries (new events wake it at once).
    poll_interval_s: float = Field(default=1.0, gt=0)
    # Webhooks delivered at the same time (each webhook's deliveries go one by one, in order).
    max_concurrent_webhooks: int = Field(default=32, ge=1)
    # Firehose entries read per batch by each consumer group.
    read_count: int = Field(default=100, ge=1)
    # Deliveries kept per webhook after they end (delivered or dead); older ones are pruned.
    keep_deliveries: int = Field(default=1000, ge=10)


class MqttSettings(BaseModel):
    """Events published to an MQTT broker (optional), with Home Assistant discovery."""

    # mqtt://user:pass@host:1883 (mqtts:// for TLS); None: no MQTT.
    url: str | None = None
    # mqtts:// only. The CA to verify the broker with, instead of the system's (a broker with a
    # self-signed certificate: that certificate); a client certificate and key where the broker
    # asks for one.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    topic_prefix: str = "lookout"
    client_id: str = "lookout"
    discovery: bool = True  # Home Assistant MQTT discovery configs (retained)
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = Field(default=30, ge=5)
    # Reconnect waits double from reconnect_min_s up to reconnect_max_s.
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    # Node status (online, fps) and discovery are refreshed this often, and `online` said again.
    status_interval_s: float = Field(default=30.0, gt=0)
    # Events older than this when the bridge reaches them (the broker was down, the bridge
    # behind) are not published as events: an automation would act on them late ("an unknown
    # face at the door" an hour ago). The retained states they change are still applied. 0: all.
    max_event_age_s: float = Field(default=300.0, ge=0)


# Accepted only when env is local or dev; the API refuses to start with it anywhere else.
PLACEHOLDER_NODE_SIGNING_KEY = "dev-only-node-signing-key-not-a-secret"


class NodeSettings(BaseModel):
    """Edge node credentials, heartbeats and frame flow control."""

    # HS256 key for node JWTs (32+ random bytes outside dev) and its id, sent as the `kid` header.
    signing_key: SecretStr = SecretStr(PLACEHOLDER_NODE_SIGNING_KEY)
    signing_key_id: str = Field(default="k1", min_length=1, max_length=64)
    # Rotation: kid → key of earlier keys; tokens they signed verify until they expire.
    previous_signing_keys: dict[str, SecretStr] = Field(default_factory=dict)
    token_ttl_s: int = Field(default=900, ge=30)
    # A node unheard of for this long is offline (a `node` event on the firehose says so).
    offline_after_s: float = Field(default=30.0, gt=0)
    max_frame_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # Per socket: frames accepted whose result has not been sent yet. More are refused.
    max_in_flight: int = Field(default=4, ge=1)
    # Per node, over HTTP and WebSocket together: its jobs queued or running. More are refused.
    max_queued_frames: int = Field(default=16, ge=1)
    # A socket stops waiting for one frame's result after this long and reports an error.
    result_timeout_s: float = Field(default=60.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOKOUT_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        # `LOOKOUT_MQTT__URL=` (a line of .env.example uncommented as it is) is the default,
        # not an empty string: "" enabled MQTT with no URL, and failed every int setting.
        env_ignore_empty=True,
    )

    env: Environment = "local"
    log_level: str = "INFO"
    data_dir: Path = Path(".lookout")
    models_dir: Path | None = None  # LOOKOUT_MODELS_DIR
    # Signs tokens (node JWTs). Outside dev it must be set to a real, long random value.
    secret_key: SecretStr = SecretStr("change-me")

    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    worker: WorkerSettings = WorkerSettings()
    streams: StreamSettings = StreamSettings()
    retention: RetentionSettings = RetentionSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    models: ModelSettings = ModelSettings()
    faces: FaceSettings = FaceSettings()
    objects: ObjectSettings = ObjectSettings()
    text: TextSettings = TextSettings()
    plates: PlateSettings = PlateSettings()
    nodes: NodeSettings = NodeSettings()
    decode: DecodeSettings = DecodeSettings()
    gallery: GallerySettings = GallerySettings()
    clusters: ClusterSettings = ClusterSettings()
    compreface: CompreFaceSettings = CompreFaceSettings()
    client: ClientSettings = ClientSettings()
    events: EventsSettings = EventsSettings()
    mqtt: MqttSettings = MqttSettings()

    @model_validator(mode="after")
    def _auth_off_only_in_dev(self) -> "Settings":
        if not self.auth.enabled and self.env != "dev":
            raise ValueError(
                f"auth.enabled=false is allowed only when env is 'dev' (env is {self.env!r})"
            )
        return self

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "images"

    def startup_problems(self) -> list[str]:
        """Why this configuration must not serve; empty when it may. Dev accepts anything."""
        if self.env == "dev":
            return []
        problems = []
        secret = self.secret_key.get_secret_value()
        if is_placeholder(secret) or len(secret) < MIN_SECRET_KEY_CHARS:
            problems.append(
                f"LOOKOUT_SECRET_KEY is a placeholder or shorter than {MIN_SECRET_KEY_CHARS} "
                "characters; set a long random value (python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))')"
            )
        for name, url in (
            ("LOOKOUT_DATABASE__URL", self.database.url),
            ("LOOKOUT_REDIS__URL", self.redis.url),
            ("LOOKOUT_REDIS__FRAMES_URL", self.redis.frames_url),
        ):
            password = urlsplit(url).password if url else None
            if password is not None and is_placeholder(password):
                problems.append(f"{name} uses a placeholder password ({password!r})")
        return problems

    @property
    def models_cache_dir(self) -> Path:
        """Where downloaded model files go (LOOKOUT_MODELS_DIR is searched before it)."""
        return self.data_dir / "models"

    def check_startup(self) -> None:
        problems = self.startup_problems()
        if problems:
            raise ConfigError(f"refusing to start with env={self.env!r}: " + "; ".join(problems))


def _environment_file_names(env: str) -> tuple[str, str]:
    return (".env", f".env.{env}")


@lru_cache
def get_settings() -> Settings:
    # The environment picks the second .env file, so it is read first on its own.
    env = Settings().env
    return Settings(_env_file=_environment_file_names(env))
