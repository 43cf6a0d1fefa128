"""Input types shared by every schema: text Postgres can store, times Python can compute with.

Postgres refuses NUL (U+0000) in text and asyncpg cannot encode lone surrogates; Python's
datetime overflows past year 9999 as soon as a bucket or a default span is added. Each of these
used to surface as a 500. Declared on the schema, they are a 422 naming the field instead.
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

# Far enough from both ends of datetime's range that adding a day, a bucket or a TTL is safe.
EARLIEST_DATETIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DATETIME = datetime(9000, 1, 1, tzinfo=UTC)


def storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


def datetime_in_range(value: datetime) -> datetime:
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST_DATETIME <= moment < LATEST_DATETIME:
        raise ValueError(
            f"must be between {EARLIEST_DATETIME.isoformat()} and {LATEST_DATETIME.isoformat()}"
        )
    return value


# A string with no NUL and no lone surrogate; add StringConstraints for lengths.
StorableText = Annotated[str, AfterValidator(storable_text)]
# A datetime between 1970 and 9000 (naive values are taken as UTC).
BoundedDatetime = Annotated[datetime, AfterValidator(datetime_in_range)]
