"""Readiness checks and the cluster-wide numbers behind /metrics. No FastAPI here."""

import asyncio
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import streams
from app.errors import is_outage
from app.models import Job, JobStatus
from app.ops.metrics import ApiMetrics

log = structlog.get_logger()

# A probe must answer before the orchestrator's own timeout (typically 1–5 s).
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    degraded: bool = False  # working, below full strength (e.g. 1 of 2 workers alive)


async def check_postgres(engine: AsyncEngine) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        return Check(False, f"unreachable: {exc.__class__.__name__}")
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


async def refresh_metrics(metrics: ApiMetrics, engine: AsyncEngine, redis: Redis) -> None:
    """Set the cluster-wide gauges; a dependency that is down reports 0 in dependency_up."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), engine.connect() as connection:
            rows = (
                await connection.execute(select(Job.status, func.count()).group_by(Job.status))
            ).all()
        counts = {JobStatus(status): int(n) for status, n in rows}
        for status in JobStatus:
            metrics.jobs.labels(status.value).set(counts.get(status, 0))
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
        for group in streams.FIREHOSE_GROUPS:
            if group in firehose:  # the API makes them at start
                pending, lag = firehose[group]
                metrics.firehose_pending.labels(group).set(pending)
                metrics.firehose_lag.labels(group).set(lag)
        metrics.dependency_up.labels("redis").set(1)
    except Exception as exc:
        if not (is_outage(exc) or isinstance(exc, TimeoutError)):
            raise
        metrics.dependency_up.labels("redis").set(0)
