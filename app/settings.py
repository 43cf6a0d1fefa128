"""Settings, read once from LOOKOUT_* environment variables (nested groups split on `__`).

`LOOKOUT_DATABASE__URL=postgresql+asyncpg://…` sets `settings.database.url`. When the database or
Redis URL is unset, `lookout up` starts embedded servers in `data_dir` and fills them in.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
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
    batch_size: int = Field(default=4, ge=1)


class StreamSettings(BaseModel):
    jobs_maxlen: int = 100_000
    firehose_maxlen: int = 10_000
    job_events_ttl_s: int = 3600  # per-job event stream lives this long after the job ends


class FaceSettings(BaseModel):
    detector_model: str = "det_500m.onnx"
    input_size: int = 640
    score_threshold: float = 0.5


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
    faces: FaceSettings = FaceSettings()
    nodes: NodeSettings = NodeSettings()

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "images"


@lru_cache
def get_settings() -> Settings:
    return Settings()
