"""Jobs kept: what runs over and over, against a jobs table of a million finished jobs.

Finished jobs are kept for `retention.job_ttl_s` (30 days by default): a camera node sending 5
frames a second leaves 13 million. Some work runs again and again however many there are: the
maintenance pass every 30 s (the reconciler's search for lost unfinished jobs, the expiry of
jobs past retention, the images still needed), a node's backlog counted for every frame it
sends, the job counts behind every /metrics scrape, and a key's page of its jobs. This bench
calls those very functions on an embedded Postgres holding JOBS finished jobs (half of them one
node's, the other half one key's but for the ten oldest, a second key's) and three unfinished
uploads, with the indexes of migrations 0012 (the unfinished jobs) and 0019 (a key's jobs by
time) and, in the same run, without them (as before those migrations), and reports each call's
Postgres CPU (the backends', psutil) and wall time.

`python -m bench.kept_jobs [JOBS]` (default 1,000,000; LOOKOUT_BENCH_KEPT_JOBS). Writes the
"Jobs kept" section of bench/RESULTS.md.
"""

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import text

from app.apikeys.service import Principal
from app.db import create_engine, create_sessionmaker, migrate
from app.embedded import start_embedded
from app.images import inspect_image
from app.jobs.service import create_job, list_jobs
from app.maintenance import expire_jobs, images_in_use, reconcile
from app.models import ApiKey
from app.nodes.service import accept_frame, authenticate, register_node
from app.ops.metrics import ApiMetrics
from app.ops.service import refresh_metrics
from app.security import Scope, issue_node_token
from app.settings import (
    DatabaseSettings,
    MaintenanceSettings,
    NodeSettings,
    RedisSettings,
    Settings,
)
from app.storage import Storage
from bench.harness import SHARED, load_average, machine, postmaster_pid, stack_dir, write_section
from bench.profiling import cpu_mean, postgres_call, wall_median

DEFAULT_JOBS = 1_000_000
CALLS = 20  # of each step, after one call not counted
T1 = (SHARED / "images" / "scenes" / "t1.jpg").read_bytes()
# As migrations 0012 and 0019 make them; 0019's replaced owner_id's own index (the last one).
INDEXES = {
    "ix_jobs_unfinished": "CREATE INDEX ix_jobs_unfinished ON jobs (created_at) "
    "WHERE status IN ('queued', 'running')",
    "ix_jobs_unfinished_node": "CREATE INDEX ix_jobs_unfinished_node ON jobs (node_id) "
    "WHERE node_id IS NOT NULL AND status IN ('queued', 'running')",
    "ix_jobs_owner_created_at_id": "CREATE INDEX ix_jobs_owner_created_at_id ON jobs "
    "(owner_id, created_at, id)",
}
BEFORE_INDEXES = {"ix_jobs_owner_id": "CREATE INDEX ix_jobs_owner_id ON jobs (owner_id)"}
QUIET_JOBS = 10  # the second key's


@dataclass(frozen=True)
class Step:
    name: str
    how_often: str
    # Each (with the indexes, without): Postgres CPU ms a call (mean: psutil counts in ticks of
    # 10 ms) and wall ms a call (median).
    cpu_ms: tuple[float, float]
    wall_ms: tuple[float, float]


async def fill(settings: Settings, jobs: int) -> tuple[str, Storage, Principal]:
    """The finished jobs (a month's worth, every other one the node's, the others a busy key's
    but for the QUIET_JOBS oldest, a quiet key's), three unfinished uploads, ANALYZE; the node's
    token, the image store and the quiet key."""
    engine = create_engine(settings.database)
    sessionmaker = create_sessionmaker(engine)
    storage = Storage(settings.storage_dir)
    try:
        async with sessionmaker.begin() as session:
            node, _ = await register_node(session, name="door", tasks=["faces"], store_frames=False)
            busy, quiet = (
                ApiKey(name=name, prefix=name, secret_sha256="0" * 64, scopes=[Scope.read])
                for name in ("busy", "quiet")
            )
            session.add_all([busy, quiet])
        step = 30 * 24 * 3600 / jobs
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO jobs (id, status, purpose, tasks, image_key, content_type, width,"
                    " height, counts, attempts, created_at, started_at, finished_at, node_id)"
                    " SELECT gen_random_uuid(), 'done', 'detect', ARRAY['faces'], NULL,"
                    " 'image/jpeg', 640, 480, '{}', 1, now() - g * :step * interval '1 second',"
                    " now() - g * :step * interval '1 second',"
                    " now() - g * :step * interval '1 second',"
                    " CASE WHEN g % 2 = 0 THEN CAST(:node AS uuid) END"
                    " FROM generate_series(1, :n) g"
                ),
                {"node": node.id, "n": jobs, "step": step},
            )
            # The uploads are the busy key's; the quiet key's few are the oldest jobs.
            await connection.execute(
                text("UPDATE jobs SET owner_id = :busy WHERE node_id IS NULL"), {"busy": busy.id}
            )
            await connection.execute(
                text(
                    "UPDATE jobs SET owner_id = :quiet WHERE id IN (SELECT id FROM jobs"
                    " WHERE node_id IS NULL ORDER BY created_at LIMIT :n)"
                ),
                {"quiet": quiet.id, "n": QUIET_JOBS},
            )
        info = inspect_image(T1, max_pixels=settings.api.max_image_pixels)
        for _ in range(3):
            async with sessionmaker.begin() as session:
                await create_job(
                    session, storage, image=T1, info=info, tasks=("faces",), owner_id=None
                )
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE jobs"))
    finally:
        await engine.dispose()
    viewer = Principal(owner_id=quiet.id, scopes=frozenset({Scope.read}))
    return issue_node_token(node.id, settings.nodes).token, storage, viewer


async def measure(
    settings: Settings,
    token: str,
    storage: Storage,
    viewer: Principal,
    postgres: int,
) -> dict[str, list[tuple[float, float]]]:
    """Each step's calls: (Postgres CPU ms, wall ms) of each."""
    engine = create_engine(settings.database)
    sessionmaker = create_sessionmaker(engine)
    assert settings.redis.url is not None
    redis = Redis.from_url(settings.redis.url)
    metrics = ApiMetrics()
    await refresh_metrics(metrics, engine, redis)  # the first scrape counts the finished jobs

    async def frame() -> None:
        async with sessionmaker.begin() as session:
            node = await authenticate(session, token, settings)
            await accept_frame(session, storage, node, T1, settings)

    async def page() -> None:
        # Planned once for any key (a prepared statement's generic plan, which Postgres may
        # settle on from its sixth run on a pool's connection, serving every key): forced, so
        # that the figure does not depend on which keys that connection served first.
        async with sessionmaker() as session:
            await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
            found = await list_jobs(session, viewer, status=None, limit=50, cursor=None)
        assert len(found.items) == QUIET_JOBS

    steps: dict[str, Callable[[], Awaitable[object]]] = {
        "reconcile": lambda: reconcile(settings, sessionmaker, redis),
        "expire": lambda: expire_jobs(settings, sessionmaker, storage),
        "images in use": lambda: images_in_use(sessionmaker),
        "frame": frame,
        "metrics": lambda: refresh_metrics(metrics, engine, redis),
        "page": page,
    }
    calls: dict[str, list[tuple[float, float]]] = {}
    try:
        for name, step in steps.items():
            await step()
            calls[name] = []
            for _ in range(CALLS):
                calls[name].append(await postgres_call(step, postgres))
    finally:
        await redis.aclose()
        await engine.dispose()
    return calls


async def set_indexes(settings: Settings, present: bool) -> None:
    """present: as the migrations leave them; else as before 0012 and 0019."""
    made, dropped = (INDEXES, BEFORE_INDEXES) if present else (BEFORE_INDEXES, INDEXES)
    engine = create_engine(settings.database)
    try:
        async with engine.begin() as connection:
            for create in made.values():
                await connection.execute(text(create))
            for name in dropped:
                await connection.execute(text(f"DROP INDEX {name}"))
            await connection.execute(text("ANALYZE jobs"))
    finally:
        await engine.dispose()


STEPS = {
    "reconcile": ("the reconciler's search for lost unfinished jobs", "every 30 s"),
    "expire": ("the expiry of jobs past retention (none due)", "every 30 s"),
    "images in use": ("the images unfinished jobs still need", "every image sweep"),
    "frame": ("a node frame: its backlog counted, its job row added", "every frame"),
    "metrics": ("/metrics: jobs by status", "every scrape"),
    "page": (f"a key's page of its jobs (GET /v1/jobs), a key with {QUIET_JOBS}", "each call"),
}


def run(jobs: int) -> tuple[list[Step], int]:
    with stack_dir("lookout-bench-kept-") as tmp:
        data = Path(tmp) / "data"
        services = start_embedded(data)
        try:
            migrate(services.database_url)
            settings = Settings(
                env="dev",
                data_dir=data,
                database=DatabaseSettings(url=services.database_url),
                redis=RedisSettings(url=services.redis_url),
                maintenance=MaintenanceSettings(enabled=False, reconcile_grace_s=0),
                # The frames sent here are never run: room for all of them in the backlog.
                nodes=NodeSettings(max_queued_frames=1000),
            )
            token, storage, viewer = asyncio.run(fill(settings, jobs))
            postgres = postmaster_pid(data / "postgres")
            assert postgres is not None
            with_indexes = asyncio.run(measure(settings, token, storage, viewer, postgres))
            asyncio.run(set_indexes(settings, present=False))
            without = asyncio.run(measure(settings, token, storage, viewer, postgres))
            asyncio.run(set_indexes(settings, present=True))
        finally:
            services.stop()
    steps = []
    for name in STEPS:
        steps.append(
            Step(
                name,
                STEPS[name][1],
                (cpu_mean(with_indexes[name]), cpu_mean(without[name])),
                (wall_median(with_indexes[name]), wall_median(without[name])),
            )
        )
    return steps, jobs


def write_results(steps: list[Step], jobs: int, measured: str, load_before: str) -> None:
    lines = [
        "## Jobs kept (bench/kept_jobs.py)",
        "",
        f"Measured {measured}. The functions that run over and over, called on an embedded "
        f"Postgres holding {jobs:,} finished jobs (a month of them, every other one a node's) and",
        f"3 unfinished uploads (the jobs not a node's are a busy key's, the {QUIET_JOBS} oldest a "
        "quiet key's): with the partial indexes of the unfinished jobs (migration 0012) and a key's "
        "jobs by time (0019) and, in the same run, without them (owner_id's index alone).",
        f"{CALLS} calls each (one more before, not counted): Postgres CPU (its backends and "
        "parallel workers, psutil) their mean, wall time their median.",
        "",
        *machine([]),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| step | runs | Postgres CPU, ms a call | without the indexes | wall, ms a call "
        "| without the indexes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for step in steps:
        lines.append(
            f"| {STEPS[step.name][0]} | {step.how_often} | {step.cpu_ms[0]:.1f} | "
            f"{step.cpu_ms[1]:.1f} | {step.wall_ms[0]:.1f} | {step.wall_ms[1]:.1f} |"
        )
    lines += [
        "",
        "The expiry finds the jobs past retention through `created_at`'s index (a job finishes "
        "after it is created), with or without the partial indexes. /metrics counts the "
        "finished jobs at most every 5 minutes (the first scrape, not in the table, did); "
        "the unfinished ones at every scrape. A key's page: the quiet key's first page (its "
        f"{QUIET_JOBS} jobs, the oldest) with the statement planned for any key (the generic "
        "plan Postgres may settle on for a prepared statement from its sixth run on a "
        "connection; forced here with plan_cache_mode), which without 0019's index walks the "
        "jobs newest first to find the quiet key's; planned for the key itself, both read it "
        "in about a millisecond (a probe). psutil reads CPU in ticks of 10 ms: 0.0 is "
        f"no tick in {CALLS} calls.",
    ]
    write_section("kept_jobs", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    jobs = int(args[0]) if args else int(os.environ.get("LOOKOUT_BENCH_KEPT_JOBS") or DEFAULT_JOBS)
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    steps, jobs = run(jobs)
    for step in steps:
        print(step, flush=True)
    write_results(steps, jobs, measured, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
