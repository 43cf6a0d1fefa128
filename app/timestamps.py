"""Times on the wire: one format everywhere, RFC 3339 in UTC with `Z` (`2026-11-26T10:00:00Z`):
jobs, nodes, stats, tokens and event `at` alike."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer


def as_utc(moment: datetime) -> datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-11-26T10:00:00.123456Z`: UTC, `Z` rather than `+00:00` (as pydantic writes UTC)."""
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


UtcDatetime = Annotated[
    datetime,
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
]
