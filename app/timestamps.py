"""Times on the wire: UTC, ISO-8601 with an explicit offset (`2026-11-26T10:00:00+00:00`)."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer


def as_utc(moment: datetime) -> datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


UtcDatetime = Annotated[
    datetime,
    PlainSerializer(lambda moment: as_utc(moment).isoformat(), return_type=str, when_used="json"),
]
