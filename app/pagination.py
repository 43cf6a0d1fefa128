"""Keyset pagination: the opaque cursor of a page (created_at and id of its last row)."""

import base64
import uuid
from datetime import datetime
from typing import Protocol

from app.errors import InvalidInput
from app.schema_types import datetime_in_range


class Keyed(Protocol):
    """A row pages are ordered by: newest first, by (created_at, id)."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID: ...


def encode_cursor(last: Keyed) -> str:
    """The cursor of the page after the one that ends with `last`."""
    raw = f"{last.created_at.isoformat()}|{last.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """(created_at, id) of the last row of the previous page; InvalidInput (422) if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, row_id = raw.split("|")
        # In range, as a time the driver can send: 0001-01-01 with a zone east of UTC
        # overflowed converting to UTC (a 500).
        moment = datetime_in_range(datetime.fromisoformat(created_at))
        return moment, uuid.UUID(row_id)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput("invalid cursor: pass back next_cursor from the previous page") from exc
