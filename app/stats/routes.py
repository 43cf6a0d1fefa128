"""HTTP routes for statistics. Parse, call the service; nothing else."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import ReadKey, SessionDep
from app.errors import error_doc
from app.schema_types import BoundedDatetime
from app.stats import service
from app.stats.schemas import CountsReport

router = APIRouter(tags=["stats"])


@router.get(
    "/v1/stats/counts",
    response_model=CountsReport,
    summary="Objects per class per time bucket",
    responses={
        404: error_doc(
            "No such node", "not_found", "no node with id 4130b5fe-818c-405d-aef6-707ed13a7404"
        ),
        422: error_doc(
            "Bad bucket, `from` not before `to`, or too many buckets",
            "invalid_request",
            "`from` must be earlier than `to`",
        ),
    },
)
async def counts(
    session: SessionDep,
    viewer: ReadKey,
    node_id: Annotated[uuid.UUID | None, Query(description="one node; omit for all jobs")] = None,
    from_: Annotated[
        BoundedDatetime | None,
        Query(
            alias="from",
            description="ISO-8601; no offset means UTC (encode + as %2B); default `to` − 1 day",
        ),
    ] = None,
    to: Annotated[
        BoundedDatetime | None, Query(description="ISO-8601, exclusive; default now")
    ] = None,
    bucket: Annotated[
        str,
        Query(
            description="15m, 1h, 1d …; buckets align to UTC",
            json_schema_extra={"pattern": r"^[1-9][0-9]{0,4}[mhd]$"},
        ),
    ] = "1h",
    fill: Annotated[
        bool, Query(description="list every bucket of the span, empty ones too (frames 0)")
    ] = False,
) -> CountsReport:
    return await service.count_objects(
        session, viewer, node_id=node_id, start=from_, end=to, bucket=bucket, fill=fill
    )
