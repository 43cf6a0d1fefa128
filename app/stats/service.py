"""Statistics over finished jobs: objects per class per time bucket. No FastAPI here.

Counts come from jobs.counts (label → n), whatever labels the detectors produce. Buckets are
aligned to UTC (date_bin from 2000-01-01T00:00Z), so a 1h bucket starts on the hour and a 1d
bucket at UTC midnight.
"""

import re
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, DateTime, Interval, cast, func, literal, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.apikeys.service import Principal
from app.errors import InvalidInput, NotFound
from app.models import Job, JobPurpose, JobStatus, Node
from app.stats.schemas import CountBucket, CountsReport
from app.timestamps import as_utc

BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
BUCKET_UNITS_S = {"m": 60, "h": 3600, "d": 86400}
MIN_BUCKET_S = 60
MAX_BUCKETS = 2000
DEFAULT_SPAN = timedelta(days=1)
_BUCKET = re.compile(r"^(\d{1,5})([mhd])$")


def parse_bucket(raw: str) -> int:
    """'15m', '1h', '1d' → seconds. 4xx with an actionable message for anything else."""
    match = _BUCKET.match(raw.strip())
    if match is None:
        raise InvalidInput(f"bucket {raw!r} is not a number followed by m, h or d (e.g. 15m, 1h)")
    seconds = int(match.group(1)) * BUCKET_UNITS_S[match.group(2)]
    if seconds < MIN_BUCKET_S:
        raise InvalidInput(f"bucket must be at least {MIN_BUCKET_S // 60}m")
    return seconds


def floor_to_bucket(moment: datetime, bucket_s: int) -> datetime:
    """The start of the bucket holding `moment` (what date_bin computes in SQL)."""
    elapsed_s = (moment - BUCKET_ORIGIN) // timedelta(seconds=bucket_s) * bucket_s
    return BUCKET_ORIGIN + timedelta(seconds=elapsed_s)


async def count_objects(
    session: AsyncSession,
    viewer: Principal,
    *,
    node_id: uuid.UUID | None,
    start: datetime | None,
    end: datetime | None,
    bucket: str,
    fill: bool = False,
) -> CountsReport:
    """Objects per class per bucket over finished jobs created in [start, end).

    Buckets without a finished job are left out unless `fill` (then every bucket of the span
    is listed, empty ones with frames 0).

    `start` is moved back to the start of its bucket, so every bucket is whole except perhaps
    the last, which ends at `end`. Defaults: end now, start one day earlier. Naive times are
    taken as UTC.

    What `viewer` counts: every node's frames (a camera's counts are the point of a read key on a
    dashboard) and only its own uploads; admin keys count every job.
    """
    bucket_s = parse_bucket(bucket)
    end = as_utc(end) if end is not None else datetime.now(UTC)
    start = as_utc(start) if start is not None else end - DEFAULT_SPAN
    if start >= end:
        raise InvalidInput("`from` must be earlier than `to`")
    span = timedelta(seconds=bucket_s)
    bucket_starts = _bucket_starts(floor_to_bucket(start, bucket_s), end, span)
    if node_id is not None and await session.get(Node, node_id) is None:
        raise NotFound(f"no node with id {node_id}")
    conditions = _counted_jobs(viewer, node_id, bucket_starts[0], end)
    counts, totals, frames = await _count(session, span, conditions)
    return CountsReport(
        node_id=node_id,
        from_=bucket_starts[0],
        to=end,
        bucket=bucket,
        bucket_s=bucket_s,
        buckets=[
            CountBucket(
                start=moment,
                end=min(moment + span, end),
                frames=frames.get(moment, 0),
                counts=dict(sorted(counts.get(moment, {}).items())),
            )
            for moment in bucket_starts
            if fill or frames.get(moment, 0)
        ],
        totals=dict(sorted(totals.items())),
    )


def _bucket_starts(first: datetime, end: datetime, span: timedelta) -> list[datetime]:
    """The starts of the buckets from `first` until `end`; 4xx past MAX_BUCKETS."""
    bucket_starts = []
    moment = first
    while moment < end:
        bucket_starts.append(moment)
        moment += span
        if len(bucket_starts) > MAX_BUCKETS:
            raise InvalidInput(
                f"that is more than {MAX_BUCKETS} buckets; use a larger bucket or a shorter span"
            )
    return bucket_starts


def _counted_jobs(
    viewer: Principal, node_id: uuid.UUID | None, first: datetime, end: datetime
) -> list[ColumnElement[bool]]:
    """The finished detection jobs of the span that `viewer` counts (of one node, if given)."""
    conditions: list[ColumnElement[bool]] = [
        Job.status == JobStatus.done,
        # What the cameras and uploads saw, not the gallery's questions about a photo
        # (identify, verify, face search: app.models.JobPurpose).
        Job.purpose == JobPurpose.detect,
        Job.created_at >= first,
        Job.created_at < end,
    ]
    if node_id is not None:
        conditions.append(Job.node_id == node_id)
    if not viewer.sees_every_job:
        conditions.append(or_(Job.node_id.is_not(None), Job.owner_id == viewer.owner_id))
    return conditions


async def _count(
    session: AsyncSession, span: timedelta, conditions: list[ColumnElement[bool]]
) -> tuple[dict[datetime, dict[str, int]], dict[str, int], dict[datetime, int]]:
    """(label counts per bucket start, label totals, jobs per bucket start)."""
    bucket_start = func.date_bin(
        literal(span, Interval()),
        Job.created_at,
        literal(BUCKET_ORIGIN, DateTime(timezone=True)),
    ).label("bucket_start")
    label_counts = (
        func.jsonb_each_text(Job.counts).table_valued("key", "value").alias("label_count")
    )
    per_label = await session.execute(
        select(bucket_start, label_counts.c.key, func.sum(cast(label_counts.c.value, BigInteger)))
        .select_from(Job)
        .join(label_counts, true())
        .where(*conditions)
        .group_by(bucket_start, label_counts.c.key)
    )
    per_bucket = await session.execute(
        select(bucket_start, func.count()).where(*conditions).group_by(bucket_start)
    )
    counts: dict[datetime, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for moment, label, n in per_label.all():
        if n:
            counts[as_utc(moment)][label] = int(n)
            totals[label] += int(n)
    frames = {as_utc(moment): int(n) for moment, n in per_bucket.all()}
    return counts, totals, frames
