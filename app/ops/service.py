"""Readiness checks and the cluster-wide numbers behind /metrics. No FastAPI here."""

import asyncio
import time
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from sqlalchemy import ColumnElement, TextClause, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import streams
from app.db import SCHEMA_HEAD, schema_version
from app.errors import is_outage
from app.models import FINISHED_STATUSES, JOB_UNFINISHED, Job, JobStatus
from app.ops.metrics import ApiMetrics
from app.settings import Settings

log = structlog.get_logger()

# A probe must answer before the orchestrator's own timeout (typically 1–5 s).
CHECK_TIMEOUT_S = 2.0
# Counting the finished jobs reads every job kept (~90 ms of Postgres CPU at a million): done
# at most this often, not at every scrape. The unfinished ones are counted every time, from
# their partial index: they are the backlog an operator watches.
FINISHED_RECOUNT_S = 300.0
FINISHED_COUNT_TIMEOUT_S = 5.0  # within Prometheus's default scrape timeout (10 s)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    degraded: bool = False  # working, below full strength (e.g. 1 of 2 workers alive)


async def check_postgres(engine: AsyncEngine) -> Check:
    """Reachable, and its schema at the migration this code needs: an API started before (or
    while) `lookout migrate` runs was ready and served errors, on an empty or an old schema
    (Kubernetes applies the migration Job and the Deployments together)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), engine.connect() as connection:
            version = await schema_version(connection)
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        return Check(False, f"unreachable: {exc.__class__.__name__}")
    if version is None:
        return Check(False, "no schema: run `lookout migrate`")
    if version != SCHEMA_HEAD:
        return Check(
            False, f"schema at {version}, this release needs {SCHEMA_HEAD}: run `lookout migrate`"
        )
    return Check(True, "ok")


async def check_redis(redis: Redis) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await redis.ping()
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        return Check(False, f"unreachable: {exc.__class__.__name__}")
    return Check(True, "ok")


async def check_workers(redis: Redis, expected: int | None = None) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            alive = await streams.live_workers(redis)
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        return Check(False, "unknown: Redis is unreachable")
    if not alive:
        return Check(False, "no worker heartbeat: jobs would queue but never run")
    if expected is not None:
        return Check(True, f"{len(alive)} of {expected} alive", degraded=len(alive) < expected)
    return Check(True, f"{len(alive)} alive")


def overall_status(checks: dict[str, Check]) -> str:
    """ "ok", "degraded" (serving below full strength) or "unavailable" (not ready)."""
    if not all(c.ok for c in checks.values()):
        return "unavailable"
    return "degraded" if any(c.degraded for c in checks.values()) else "ok"


async def readiness(
    engine: AsyncEngine, redis: Redis, *, expected_workers: int | None = None
) -> dict[str, Check]:
    postgres, redis_check, workers = await asyncio.gather(
        check_postgres(engine), check_redis(redis), check_workers(redis, expected_workers)
    )
    return {"postgres": postgres, "redis": redis_check, "workers": workers}


async def _count_jobs(
    connection: AsyncConnection, where: ColumnElement[bool] | TextClause
) -> dict[str, int]:
    rows = await connection.execute(
        select(Job.status, func.count()).where(where).group_by(Job.status)
    )
    return {JobStatus(status).value: int(n) for status, n in rows}


async def _recount_finished(metrics: ApiMetrics, engine: AsyncEngine) -> None:
    """Count the finished jobs again, once per FINISHED_RECOUNT_S whatever happens: a count
    that outlasts FINISHED_COUNT_TIMEOUT_S (tens of millions of jobs kept) leaves the last one,
    and neither fails the scrape nor says Postgres is down."""
    metrics.finished_jobs_counted_at = time.monotonic()
    try:
        async with asyncio.timeout(FINISHED_COUNT_TIMEOUT_S), engine.connect() as connection:
            finished = Job.status.in_(FINISHED_STATUSES)
            metrics.finished_jobs = await _count_jobs(connection, finished)
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        log.warning("finished_jobs_not_counted", error=repr(exc))


def firehose_readers(settings: Settings) -> tuple[str, ...]:
    """The firehose groups something reads in this configuration. The API makes all three at
    start (so `lookout events` finds what it missed), but a group nobody reads (MQTT not
    configured, clustering off) only grows: its lag reported an alarm that was not one."""
    groups = [streams.WEBHOOKS_GROUP]
    if settings.mqtt.url is not None:
        groups.append(streams.MQTT_GROUP)
    if settings.clusters.enabled:
        groups.append(streams.CLUSTERS_GROUP)
    return tuple(groups)


async def refresh_metrics(
    metrics: ApiMetrics,
    engine: AsyncEngine,
    redis: Redis,
    *,
    firehose_groups: tuple[str, ...] = streams.FIREHOSE_GROUPS,
) -> None:
    """Set the cluster-wide gauges; a dependency that is down reports 0 in dependency_up.
    `firehose_groups`: the groups whose lag to report (firehose_readers)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), engine.connect() as connection:
            counts = await _count_jobs(connection, JOB_UNFINISHED)
        if time.monotonic() - metrics.finished_jobs_counted_at > FINISHED_RECOUNT_S:
            await _recount_finished(metrics, engine)
        counts |= metrics.finished_jobs
        for status in JobStatus:
            metrics.jobs.labels(status.value).set(counts.get(status.value, 0))
        metrics.dependency_up.labels("postgres").set(1)
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        metrics.dependency_up.labels("postgres").set(0)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            stats = await streams.queue_stats(redis)
            alive = await streams.live_workers(redis)
            firehose = await streams.firehose_groups_lag(redis)
        metrics.stream_length.set(stats.length)
        metrics.stream_lag.set(stats.lag)
        metrics.stream_pending.set(stats.pending)
        metrics.dead_letters.set(stats.dead_letters)
        metrics.workers_alive.set(len(alive))
        for group in firehose_groups:
            if group in firehose:  # the API makes them at start
                pending, lag = firehose[group]
                metrics.firehose_pending.labels(group).set(pending)
                metrics.firehose_lag.labels(group).set(lag)
        metrics.dependency_up.labels("redis").set(1)
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        metrics.dependency_up.labels("redis").set(0)
