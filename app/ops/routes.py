"""Probes and metrics. Unauthenticated by design: keep them off the public proxy (nginx/)."""

from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict

from app import openapi_examples as examples
from app.deps import StateDep
from app.ops import service

router = APIRouter(tags=["ops"])


class Live(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.LIVE]})

    status: str


class CheckOut(BaseModel):
    ok: bool
    detail: str


class Ready(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.READY]})

    ready: bool
    # "ok"; "degraded": ready, below full strength (fewer workers alive than expected);
    # "unavailable": not ready.
    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, CheckOut]


@router.get("/health/live", response_model=Live, summary="The process is up (no dependency checks)")
async def live() -> Live:
    return Live(status="ok")


@router.get(
    "/health/ready",
    response_model=Ready,
    summary="Postgres, Redis and at least one worker are up",
    responses={
        503: {
            "model": Ready,
            "description": "Not ready: see checks",
            "content": {"application/json": {"example": examples.NOT_READY}},
        }
    },
)
async def ready(state: StateDep) -> Any:
    checks = await service.readiness(
        state.engine, state.redis, expected_workers=state.settings.worker.expected
    )
    status = service.overall_status(checks)
    body = Ready(
        ready=status != "unavailable",
        status=status,
        checks={name: CheckOut(ok=c.ok, detail=c.detail) for name, c in checks.items()},
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(state: StateDep) -> Response:
    await service.refresh_metrics(
        state.metrics,
        state.engine,
        state.redis,
        firehose_groups=service.firehose_readers(state.settings),
    )
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
