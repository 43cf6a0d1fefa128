"""Shared pieces of the outbound-event tests: settings, a running dispatcher, people, waits."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.events_out.dispatcher import WebhookDispatcher
from app.models import FaceEmbedding, Job, JobPurpose, JobStatus, Person, PersonFace
from app.settings import EventsSettings, Settings


def events_settings(settings: Settings, **overrides: object) -> Settings:
    """Loopback receivers allowed (tests only), and retries in fractions of a second."""
    events = EventsSettings(
        allowed_networks=["127.0.0.1/32"],
        retry_base_s=0.2,
        retry_max_backoff_s=0.5,
        poll_interval_s=0.1,
        webhook_timeout_s=2.0,
    ).model_copy(update=overrides)
    return settings.model_copy(update={"events": events})


@asynccontextmanager
async def running_dispatcher(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: Redis
) -> AsyncIterator[WebhookDispatcher]:
    stop = asyncio.Event()
    dispatcher = WebhookDispatcher(settings, sessionmaker, redis, consumer="test-dispatcher")
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def failed_jobs(
    sessionmaker: async_sessionmaker[AsyncSession], count: int
) -> list[uuid.UUID]:
    """The ids of `count` new failed jobs: the events of a job gone by the time the dispatcher
    reads them are not sent, so a test's synthetic job.failed needs its job."""
    jobs = [
        Job(
            status=JobStatus.failed,
            purpose=JobPurpose.detect,
            tasks=["faces"],
            content_type="image/jpeg",
            width=1,
            height=1,
            error="synthetic",
        )
        for _ in range(count)
    ]
    async with sessionmaker.begin() as session:
        session.add_all(jobs)
    return [job.id for job in jobs]


async def wait_for(condition: Callable[[], object], *, timeout_s: float = 30.0) -> None:
    """Poll `condition` (sync or async) until it is truthy; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.1)


async def enroll_from_job(
    sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID, name: str
) -> Person:
    """A person whose enrolled face is the (real) embedding a worker computed for the job."""
    async with sessionmaker.begin() as session:
        embedding = await session.scalar(
            select(FaceEmbedding).where(FaceEmbedding.job_id == job_id).limit(1)
        )
        assert embedding is not None
        person = Person(name=name, owner_id=None)
        session.add(person)
        await session.flush()
        session.add(
            PersonFace(
                person_id=person.id,
                model=embedding.model,
                dim=embedding.dim,
                embedding=embedding.embedding,
                face_px=100.0,
                sharpness=100.0,
                yaw_ratio=0.0,
            )
        )
    return person
