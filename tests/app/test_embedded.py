"""The zero-config servers: real Postgres and Redis from wheels, with the privacy they promise."""

import os
import secrets
import time
import uuid

from redis import Redis

from app import streams
from app.embedded import EmbeddedServices, shared_buffers_mb, start_embedded


def test_embedded_redis_keeps_nothing_on_disk(tmp_path):
    """`lookout up` sets no frames URL: node frames live in this Redis, which must never write
    them to a file."""
    services = start_embedded(tmp_path / "data")
    try:
        client = Redis.from_url(services.redis_url)
        marker = secrets.token_bytes(32)
        client.set(streams.frame_key(uuid.uuid4()), b"\xff\xd8\xff" + marker, px=60_000)
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("save") == {"save": ""}
        time.sleep(1.2)  # an `appendfsync everysec` AOF would have been written by now
        client.close()
    finally:
        services.stop()
    written = [p for p in (tmp_path / "data" / "redis").rglob("*") if p.is_file()]
    assert not any(marker in p.read_bytes() for p in written), written
    assert {p.name for p in written} <= {"redis.log"}


def shared_buffers(services: EmbeddedServices) -> int:
    shown = services._postgres.psql(
        "SELECT 'mb=' || setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers';"
    )
    return int(shown.split("mb=")[1].split()[0])


def test_embedded_postgres_gets_shared_buffers_that_hold_the_graphs(tmp_path):
    """Postgres' default 128 MB holds no HNSW graph past ~50k faces: the embedded server is
    sized on its first start (a restart) and keeps the size on the next."""
    assert (
        shared_buffers_mb() > 128
        or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") < 2**31
    )
    for _ in range(2):
        services = start_embedded(tmp_path / "data")
        try:
            assert shared_buffers(services) == shared_buffers_mb()
        finally:
            services.stop()
