"""The zero-config servers: real Postgres and Redis from wheels, with the privacy they promise."""

import secrets
import time
import uuid

from redis import Redis

from app import streams
from app.embedded import start_embedded


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
