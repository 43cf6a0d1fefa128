"""Settings, read once from LOOKOUT_* environment variables (nested groups split on `__`).

`LOOKOUT_DATABASE__URL=postgresql+asyncpg://…` sets `settings.database.url`. When the database or
Redis URL is unset, `lookout up` starts embedded servers in `data_dir` and fills them in.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseModel):
    url: str | None = None  # postgresql+asyncpg://user:pass@host/db ; None → embedded
    pool_size: int = 10


class RedisSettings(BaseModel):
    url: str | None = None  # redis://host:6379/0 or unix:///path/redis.sock ; None → embedded


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 20 * 1024 * 1024
    # Checked from the image header before any decode: stops decompression bombs.
    max_image_pixels: int = 50_000_000
    max_wait_s: float = 30.0  # cap for POST /v1/images?wait=
    page_size_max: int = 100


class WorkerSettings(BaseModel):
    # One single-threaded process per core measured fastest (ARCHITECTURE.md, Models).
    processes: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # onnxruntime intra-op threads per process; processes × threads should not exceed cores.
    threads: int = Field(default=1, ge=1)
    # A message pending longer than this is presumed to belong to a dead worker and reclaimed.
    job_timeout_s: float = 60.0
    max_deliveries: int = Field(default=3, ge=1)
    block_ms: int = 1000
    # onnxruntime inter-op threads per session. Graphs run sequentially (ORT_SEQUENTIAL), so
    # more than 1 only adds idle threads; kept as a setting for parallel execution experiments.
    inter_op_threads: int = Field(default=1, ge=1)
    # Up to batch_size messages are processed together (all their faces embedded in one call).
    batch_size: int = Field(default=4, ge=1)
    # After the first message arrives, wait this long for more to fill the batch. Small: with
    # light traffic every job pays it as extra latency.
    batch_wait_ms: int = Field(default=5, ge=0)


class StreamSettings(BaseModel):
    jobs_maxlen: int = 100_000
    firehose_maxlen: int = 10_000
    job_events_ttl_s: int = 3600  # per-job event stream lives this long after the job ends


class ModelSettings(BaseModel):
    """Which model packs the workers load (see workers/models.py for the manifest)."""

    # buffalo_sc: SCRFD-500M + ArcFace w600k_mbf (512-d). Tests use scrfd_mobilefacenet.
    face_pack: str = "buffalo_sc"
    object_pack: str = "yolox_nano"
    # onnxruntime execution providers in order of preference; unavailable ones are skipped.
    providers: list[str] = ["CPUExecutionProvider"]
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


class ObjectSettings(BaseModel):
    score_threshold: float = 0.3
    nms_threshold: float = 0.45
    # Keep only these COCO class names (e.g. ["person", "car"]); None keeps all 80.
    classes: list[str] | None = None


class DecodeSettings(BaseModel):
    # JPEGs at least twice this size on the longer side decode at 1/2, 1/4 or 1/8 scale (libjpeg
    # DCT scaling: far less work and memory), never below this. The models letterbox to ≤ 640 px,
    # so detail beyond this only slows decode; boxes are reported in full-resolution pixels.
    target_side_px: int = Field(default=2048, ge=64)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOKOUT_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    env: Literal["local", "dev", "staging", "prod"] = "local"
    log_level: str = "INFO"
    data_dir: Path = Path(".lookout")
    models_dir: Path | None = None  # LOOKOUT_MODELS_DIR

    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    streams: StreamSettings = StreamSettings()
    models: ModelSettings = ModelSettings()
    faces: FaceSettings = FaceSettings()
    objects: ObjectSettings = ObjectSettings()
    decode: DecodeSettings = DecodeSettings()

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def models_cache_dir(self) -> Path:
        """Where downloaded model files go (LOOKOUT_MODELS_DIR is searched before it)."""
        return self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    return Settings()
