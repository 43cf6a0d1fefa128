"""A live Lookout for the DeepStack clients: `lookout api` (keys on, as in production), a
second `lookout api` with keys off (Double Take's `aiserver` detector sends no key), and one
`lookout worker`, as processes on loopback against the session's Postgres and Redis. The
clients under test are synchronous (requests), so they need a real HTTP server."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import SHARED_IMAGES
from tests.e2e.processes import lookout_env, start_api, start_worker, stopping, wait_until

TRAIN = SHARED_IMAGES / "faces" / "train"
TEST_FACES = SHARED_IMAGES / "faces" / "test"
SCENES = SHARED_IMAGES / "scenes"


@dataclass(frozen=True)
class LiveLookout:
    url: str  # keys required
    open_url: str  # keys off (LOOKOUT_AUTH__ENABLED=false, dev)
    data_dir: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stored_images(self) -> list[Path]:
        root = self.data_dir / "images"
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# Package scope: the worker process must be gone before other tests run their own consumer
# on the same stream (it would take their jobs, whose images it cannot see).
@pytest.fixture(scope="package")
def live(servers, models_dir, tmp_path_factory) -> Iterator[LiveLookout]:  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("deepstack-live")
    env = lookout_env(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        data_dir=data_dir,
        models_dir=models_dir,
        LOOKOUT_MAINTENANCE__ENABLED="false",
        # No test here kills a worker, and reading a page of text takes seconds on a busy 2-core
        # machine: the fault tests' 3 s job timeout would fail such jobs.
        LOOKOUT_WORKER__JOB_TIMEOUT_S="60",
    )
    log_dir = data_dir / "logs"
    api, url = start_api(env, log_dir)
    open_api, open_url = start_api({**env, "LOOKOUT_AUTH__ENABLED": "false"}, log_dir, "api-open")
    worker = start_worker(env, log_dir, "worker")
    with stopping(worker, api, open_api):
        wait_until(
            lambda: httpx.get(f"{url}/health/ready").status_code == 200,
            what="a worker",
            process=worker,
        )
        yield LiveLookout(url, open_url, data_dir)


def training_photos() -> dict[str, list[Path]]:
    """../shared/images/faces/train: person → photos."""
    return {d.name: sorted(d.iterdir()) for d in sorted(TRAIN.iterdir())}


# The test photos and who is in them; obama_and_biden.jpg also shows a child nobody enrolled.
TEST_PHOTOS = {
    "obama1.jpg": ["obama"],
    "alex_lacamoire1.jpg": ["alex_lacamoire"],
    "obama_and_biden.jpg": ["biden", "obama", "unknown"],
}


@pytest.fixture
def count(engine):  # type: ignore[no-untyped-def]
    """count("people") → rows in that table now."""

    async def rows(table: str, where: str = "TRUE", **params: Any) -> int:
        async with engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE {where}"), params
            )
            return int(result.scalar_one())

    return rows


@pytest.fixture
async def write_key(make_key) -> str:  # type: ignore[no-untyped-def]
    from app.security import Scope

    return str(await make_key("deepstack-client", scopes=(Scope.read, Scope.write)))


def native(live: LiveLookout, key: str) -> httpx.Client:
    """Lookout's own API on the same server, for checking what the DeepStack calls left."""
    return httpx.Client(base_url=live.url, headers={"X-API-Key": key}, timeout=30)
