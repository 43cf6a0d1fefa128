"""The bare floor of the plumbing: a minimal FastAPI route that does what an upload must at the
least (parse the same multipart body, one INSERT, one XADD) and nothing of Lookout's: no image
checks, no image store, no auth, no ORM, no events, no worker. bench/plumbing.py measures its
throughput in the same run as Lookout's, on the same Postgres and Redis, served the same way
(uvicorn, httptools, uvloop), so that plumbing ÷ floor says how much of the possible Lookout
keeps.

`python -m bench.floor --port N` with LOOKOUT_DATABASE__URL and LOOKOUT_REDIS__URL set (the
bench stack's environment).
"""

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile, status
from redis.asyncio import Redis

TABLE = "bench_floor_jobs"
STREAM = "bench:floor:jobs"


def create_app(database_url: str, redis_url: str) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(database_url.replace("+asyncpg", ""), max_size=10)
        await pool.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, tasks text[] NOT NULL, "
            "content_type text NOT NULL, bytes integer NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        state["pool"], state["redis"] = pool, Redis.from_url(redis_url)
        yield
        await state["redis"].aclose()
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/images", status_code=status.HTTP_202_ACCEPTED)
    async def upload(
        image: Annotated[UploadFile, File()], tasks: Annotated[str, Form()] = "faces"
    ) -> dict[str, str]:
        data = await image.read()
        job_id = uuid.uuid4()
        await state["pool"].execute(
            f"INSERT INTO {TABLE} (id, tasks, content_type, bytes) VALUES ($1, $2, $3, $4)",
            job_id,
            tasks.split(","),
            image.content_type or "application/octet-stream",
            len(data),
        )
        await state["redis"].xadd(
            STREAM, {"job_id": str(job_id), "tasks": tasks}, maxlen=100_000, approximate=True
        )
        return {"id": str(job_id), "status": "queued"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["LOOKOUT_DATABASE__URL"], os.environ["LOOKOUT_REDIS__URL"])
    # httptools, as `lookout api` serves (app/server.py), so that only Lookout's own work differs.
    uvicorn.run(app, host="127.0.0.1", port=args.port, http="httptools", access_log=False)


if __name__ == "__main__":
    main()
