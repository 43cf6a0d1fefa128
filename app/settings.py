"""Settings, read once from LOOKOUT_* environment variables (nested groups split on `__`).

`LOOKOUT_DATABASE__URL=postgresql+asyncpg://…` sets `settings.database.url`. When the database or
Redis URL is unset, `lookout up` starts embedded servers in `data_dir` and fills them in.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
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
    # Behind nginx (nginx/): image routes answer with `X-Accel-Redirect: <prefix><storage key>`
    # and no body, and nginx's `internal` location with this path serves the file. None: the API
    # sends the bytes itself. Set it only when such a proxy is in front, or clients get no image.
    accel_redirect_prefix: str | None = None

    @field_validator("accel_redirect_prefix")
    @classmethod
    def _prefix_is_a_directory_path(cls, value: str | None) -> str | None:
        # A prefix without the trailing slash would make nginx's `alias` match `/prefix..` paths.
        if value is not None and not (value.startswith("/") and value.endswith("/")):
            raise ValueError("accel_redirect_prefix must start and end with '/'")
        return value


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

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "images"


@lru_cache
def get_settings() -> Settings:
    return Settings()
