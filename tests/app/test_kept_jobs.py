"""What runs over and over (the maintenance pass, a node's every frame, every /metrics scrape,
a listing of the backlog) reads the unfinished jobs only, however many finished ones are kept
(30 days by default: millions at a camera's frame rate).

Each statement the real functions send is planned and run again under EXPLAIN ANALYZE on a
real Postgres holding 20,000 finished jobs; the rows its scans of `jobs` read are counted.
Before the partial indexes of migration 0012 each of them read all 20,000 and more.
"""

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.apikeys.service import ANONYMOUS_ADMIN
from app.jobs.service import list_jobs
from app.maintenance import expire_jobs, images_in_use, reconcile
from app.models import JobStatus
from app.nodes.service import accept_frame, authenticate, register_node
from app.ops.metrics import ApiMetrics
from app.ops.service import refresh_metrics
from app.settings import MaintenanceSettings
from tests.conftest import node_token, shared_image, statements_sent

FINISHED = 20_000
T1 = shared_image("scenes/t1.jpg")


async def keep_finished_jobs(engine: AsyncEngine, node_id: uuid.UUID | None) -> None:
    """FINISHED done jobs, a month old and younger, half of them the node's; then ANALYZE, as
    autovacuum would have long since."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (id, status, purpose, tasks, image_key, content_type, width,"
                " height, counts, attempts, created_at, started_at, finished_at, node_id)"
                " SELECT gen_random_uuid(), 'done', 'detect', ARRAY['faces'], NULL, 'image/jpeg',"
                " 640, 480, '{}', 1, now() - g * interval '2 minutes',"
                " now() - g * interval '2 minutes', now() - g * interval '2 minutes',"
                " CASE WHEN g % 2 = 0 THEN CAST(:node AS uuid) END"
                " FROM generate_series(1, :n) g"
            ),
            {"node": node_id, "n": FINISHED},
        )
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE jobs"))


async def statements_of(
    engine: AsyncEngine, run: Callable[[], Awaitable[Any]]
) -> list[tuple[str, Any]]:
    """The statements that read the jobs table while `run()` ran, with their parameters."""
    _, sent = await statements_sent(
        engine,
        run,
        lambda sql: "FROM jobs" in sql and not sql.lstrip().upper().startswith("INSERT"),
    )
    return sent


def rows_read(plan: dict[str, Any], table: str = "jobs") -> int:
    """Rows the plan's scans of `table` produced or filtered out, over all their loops (not
    those a DELETE's own node counts again)."""
    read = 0
    if plan.get("Relation Name") == table and plan["Node Type"].endswith("Scan"):
        per_loop = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        read += per_loop * plan.get("Actual Loops", 1)
    for child in plan.get("Plans", []):
        read += rows_read(child, table)
    return read


async def literal(raw: Any, value: object) -> str:
    """`value` as an SQL literal, quoted by Postgres itself."""
    if value is None:
        return "NULL"
    if isinstance(value, list | tuple):  # ids, statuses: no commas or quotes in them
        value = "{" + ",".join(str(item) for item in value) + "}"
    quoted: str = await raw.fetchval("SELECT quote_literal($1)", str(value))
    return quoted


async def most_rows_read(engine: AsyncEngine, statements: list[tuple[str, Any]]) -> int:
    """Each statement prepared and run again under EXPLAIN ANALYZE with its generic plan, and
    rolled back (the expiry's DELETE must not happen): the most rows of jobs any one read.

    Generic, as the driver's prepared statements come to be planned once they have run a few
    times: for any parameters, so a status bound as a parameter cannot pick a partial index."""
    assert statements, "the function sent no statement on jobs: nothing was measured"
    most = 0
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("SET plan_cache_mode = force_generic_plan")
        try:
            for statement, parameters in statements:
                most = max(most, await rows_read_generic(raw, statement, parameters))
        finally:  # the connection goes back to the tests' pool
            await raw.execute("RESET plan_cache_mode")
    return most


async def rows_read_generic(raw: Any, statement: str, parameters: Any) -> int:
    """The rows of jobs one statement read, run with its generic plan and rolled back."""
    await raw.execute(f"PREPARE kept AS {statement}")
    try:
        # EXECUTE takes no bound parameters: each value as a literal, of the type PREPARE
        # inferred for it.
        literals = [await literal(raw, value) for value in parameters]
        execute = f"EXECUTE kept({', '.join(literals)})" if literals else "EXECUTE kept"
        transaction = raw.transaction()
        await transaction.start()
        try:
            document = await raw.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {execute}")
        finally:
            await transaction.rollback()
    finally:
        await raw.execute("DEALLOCATE kept")
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return rows_read(plan)


def jobs_gauge(metrics: ApiMetrics, status: str) -> float | None:
    return metrics.registry.get_sample_value("lookout_jobs", {"status": status})


@pytest.fixture
async def node_and_jobs(settings, engine, sessionmaker, make_job):  # type: ignore[no-untyped-def]
    """A node, FINISHED finished jobs, and three unfinished uploads."""
    async with sessionmaker.begin() as session:
        node, _ = await register_node(session, name="door", tasks=["faces"], store_frames=False)
    await keep_finished_jobs(engine, node.id)
    for _ in range(3):
        await make_job(T1, enqueue=False)
    return node


async def test_the_maintenance_pass_reads_only_unfinished_jobs(
    settings, engine, sessionmaker, redis, storage, node_and_jobs
):
    no_grace = settings.model_copy(
        update={"maintenance": MaintenanceSettings(enabled=False, reconcile_grace_s=0)}
    )
    sent = await statements_of(engine, lambda: reconcile(no_grace, sessionmaker, redis))
    assert await most_rows_read(engine, sent) <= 3
    sent = await statements_of(engine, lambda: images_in_use(sessionmaker))
    assert await most_rows_read(engine, sent) <= 3
    # Nothing is due: the expiry finds so at once, not by reading every job kept.
    sent = await statements_of(engine, lambda: expire_jobs(settings, sessionmaker, storage))
    assert await most_rows_read(engine, sent) == 0


async def add_due_jobs(engine: AsyncEngine, ids: list[uuid.UUID]) -> None:
    """Finished jobs past the 30 days' retention, with these ids."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (id, status, purpose, tasks, content_type, width, height,"
                " counts, attempts, created_at, started_at, finished_at)"
                " SELECT id, 'done', 'detect', ARRAY['faces'], 'image/jpeg', 640, 480, '{}', 1,"
                " now() - interval '40 days', now() - interval '40 days',"
                " now() - interval '40 days' FROM unnest(CAST(:ids AS uuid[])) id"
            ),
            {"ids": ids},
        )


async def test_the_expiry_reads_only_the_jobs_it_deletes(
    settings, engine, sessionmaker, storage, node_and_jobs
):
    due = [uuid.uuid4() for _ in range(10)]
    await add_due_jobs(engine, due)
    deleted = 0

    async def expire() -> None:
        nonlocal deleted
        deleted = await expire_jobs(settings, sessionmaker, storage)

    sent = await statements_of(engine, expire)
    assert deleted == len(due)
    await add_due_jobs(engine, due)  # the statements run again below find them as they did
    assert await most_rows_read(engine, sent) <= len(due)


async def test_a_node_frame_counts_its_backlog_without_reading_its_finished_jobs(
    settings, engine, sessionmaker, storage, node_and_jobs
):
    async def send_frame() -> None:
        async with sessionmaker.begin() as session:
            node = await authenticate(session, node_token(settings, node_and_jobs.id), settings)
            await accept_frame(session, storage, node, T1, settings)

    sent = await statements_of(engine, send_frame)
    assert await most_rows_read(engine, sent) <= 1  # its unfinished frames: none yet


async def test_metrics_count_finished_jobs_once_then_only_the_backlog(engine, redis, node_and_jobs):
    metrics = ApiMetrics()
    sent = await statements_of(engine, lambda: refresh_metrics(metrics, engine, redis))
    assert await most_rows_read(engine, sent) >= FINISHED  # the first scrape counts them all
    assert jobs_gauge(metrics, "done") == FINISHED
    assert jobs_gauge(metrics, "queued") == 3

    sent = await statements_of(engine, lambda: refresh_metrics(metrics, engine, redis))
    assert await most_rows_read(engine, sent) <= 3
    assert jobs_gauge(metrics, "done") == FINISHED  # the last count, kept
    assert jobs_gauge(metrics, "queued") == 3


async def test_listing_the_backlog_reads_only_unfinished_jobs(engine, sessionmaker, node_and_jobs):
    async def first_page() -> None:
        async with sessionmaker() as session:
            page = await list_jobs(
                session, ANONYMOUS_ADMIN, status=JobStatus.queued, limit=50, cursor=None
            )
        assert len(page.items) == 3 and page.next_cursor is None

    sent = await statements_of(engine, first_page)
    assert await most_rows_read(engine, sent) <= 3
