"""Types shared by every schema. Input: text Postgres can store, times Python can compute with.
Output: pixel coordinates and scores in one precision everywhere.

Postgres refuses NUL (U+0000) in text and asyncpg cannot encode lone surrogates; Python's
datetime overflows past year 9999 as soon as a bucket or a default span is added. Each of these
used to surface as a 500. Declared on the schema, they are a 422 naming the field instead.
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer

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


# A tenth of a pixel is finer than any detector's accuracy; more digits are noise. Every box
# and point an API answers (jobs, events, identify, face search) is written this way.
PIXEL_DIGITS = 1
SCORE_DIGITS = 4


def round_pixels(values: list[float]) -> list[float]:
    return [round(v, PIXEL_DIGITS) for v in values]


def round_points(points: list[list[float]] | None) -> list[list[float]] | None:
    return None if points is None else [round_pixels(p) for p in points]


def round_score(score: float) -> float:
    return round(score, SCORE_DIGITS)


# x1, y1, x2, y2 (or any list of pixel coordinates), answered to 0.1 px.
PixelBox = Annotated[list[float], PlainSerializer(round_pixels, return_type=list[float])]
# Key points [[x, y], …], answered to 0.1 px.
PixelPoints = Annotated[
    list[list[float]] | None, PlainSerializer(round_points, return_type=list[list[float]] | None)
]
# A detector's score, answered to 4 digits.
Score = Annotated[float, PlainSerializer(round_score, return_type=float)]
