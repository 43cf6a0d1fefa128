"""Edge node logic: credentials, fleet status, frames → jobs (the per-socket relay: relay.py).

No FastAPI here, and no commit: node status events go on the firehose only after the change they
announce is committed (announce_after_commit, app/commits.py).
"""

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.apikeys.service import ANONYMOUS_ADMIN
from app.commits import after_commit, commit
from app.errors import AppError, Conflict, NotFound, PayloadTooLarge, TooManyRequests
from app.images import inspect_image_async
from app.jobs import service as jobs
from app.jobs.schemas import JobDetail
from app.models import JOB_UNFINISHED, Job, JobStatus, Node, NodeState, NodeStatus
from app.nodes.schemas import (
    Heartbeat,
    NodeOut,
)
from app.security import (
    InvalidNodeToken,
    NodeClaims,
    NodeToken,
    generate_node_secret,
    hash_node_secret,
    issue_node_token,
    verify_node_secret,
    verify_node_token,
)
from app.settings import Settings
from app.storage import Storage

log = structlog.get_logger()

# last_seen_at is written at most this often per node: a node streaming frames does not turn
# every frame into an extra UPDATE.
SEEN_RESOLUTION_S = 1.0
# Window of GET /v1/nodes' frames_per_min.
FRAMES_WINDOW_S = 60


@dataclass(frozen=True)
class AuthenticatedNode:
    """A node whose token verified and whose row says it is in service, as of this request."""

    id: uuid.UUID
    name: str
    tasks: tuple[str, ...]
    store_frames: bool
    claims: NodeClaims
    came_online: bool  # this request moved it from offline to online: announce it


class FramesBacklogged(TooManyRequests):
    code = "frames_backlogged"


class NodeUnavailable(AppError):
    status = 503
    code = "unavailable"


# --- admin: register, list, update, revoke --------------------------------------------------


async def register_node(
    session: AsyncSession,
    *,
    name: str,
    tasks: Sequence[str] | None,
    store_frames: bool,
    store_face_crops: bool = False,
) -> tuple[Node, str]:
    """Add a node; returns it with its secret, which exists nowhere else afterwards."""
    secret = generate_node_secret()
    node = Node(
        name=name,
        secret_hash=hash_node_secret(secret),
        tasks=list(_parse_tasks(tasks)),
        store_frames=store_frames,
        store_face_crops=store_face_crops,
        status=NodeStatus.offline,
        dark_scene=False,
    )
    session.add(node)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a node named {name!r} is already registered") from exc
    await session.refresh(node)
    return node, secret


def _parse_tasks(tasks: Sequence[str] | None) -> tuple[str, ...]:
    return jobs.parse_tasks(None if tasks is None else ",".join(tasks))


async def get_node(session: AsyncSession, node_id: uuid.UUID) -> Node:
    node = await session.get(Node, node_id, populate_existing=True)
    if node is None:
        raise NotFound(f"no node with id {node_id}")
    return node


async def update_policy(
    session: AsyncSession,
    node_id: uuid.UUID,
    *,
    tasks: Sequence[str] | None,
    store_frames: bool | None,
    store_face_crops: bool | None = None,
) -> Node:
    """Change what the node's frames run and whether they are stored; applies to its next frame."""
    node = await get_node(session, node_id)
    if node.revoked_at is not None:
        raise Conflict(f"node {node_id} is revoked")
    if tasks is not None:
        node.tasks = list(_parse_tasks(tasks))
    if store_frames is not None:
        node.store_frames = store_frames
    if store_face_crops is not None:
        if store_face_crops and not node.store_face_crops:
            # Frames accepted before now (still queued) keep none (app/gallery/crops.py).
            node.face_crops_since = func.now()
        node.store_face_crops = store_face_crops
    await session.flush()
    return node


async def revoke_node(session: AsyncSession, node_id: uuid.UUID) -> bool:
    """Revoke at once: every request checks the row, so its tokens fail from the next one on.

    Returns False if it was already revoked. The row stays so its jobs keep their node.
    """
    node = await get_node(session, node_id)
    if node.revoked_at is not None:
        return False
    node.revoked_at = datetime.now(UTC)
    node.status = NodeStatus.offline
    await session.flush()
    return True


async def frames_last_minute(
    session: AsyncSession, node_id: uuid.UUID | None = None
) -> dict[uuid.UUID, int]:
    """Frames accepted in the last minute, per node (one node's, if given)."""
    since = func.now() - timedelta(seconds=FRAMES_WINDOW_S)
    query = select(Job.node_id, func.count()).where(Job.created_at > since).group_by(Job.node_id)
    query = query.where((Job.node_id == node_id) if node_id else Job.node_id.is_not(None))
    rows = await session.execute(query)
    return {node_id: count for node_id, count in rows.all() if node_id is not None}


async def list_nodes(
    session: AsyncSession, *, offline_after_s: float, include_revoked: bool
) -> list[NodeOut]:
    query = select(Node).order_by(Node.created_at, Node.id)
    if not include_revoked:
        query = query.where(Node.revoked_at.is_(None))
    nodes = list(await session.scalars(query))
    counts = await frames_last_minute(session)
    return [
        node_out(n, offline_after_s=offline_after_s, frames_per_min=counts.get(n.id, 0))
        for n in nodes
    ]


async def get_node_out(
    session: AsyncSession, node_id: uuid.UUID, *, offline_after_s: float
) -> NodeOut:
    node = await get_node(session, node_id)
    counts = await frames_last_minute(session, node.id)
    return node_out(node, offline_after_s=offline_after_s, frames_per_min=counts.get(node.id, 0))


def _said_goodbye(node: Node) -> bool:
    """The node's last word was a goodbye heartbeat (state cleared, status offline), and no
    request of its since (any request sets the status online again)."""
    return (
        node.status == NodeStatus.offline
        and node.state is None
        and node.last_heartbeat_at is not None
    )


def is_online(node: Node, *, offline_after_s: float, now: datetime | None = None) -> bool:
    """Seen within offline_after_s, and not offline by a goodbye heartbeat or a sweep since."""
    if node.revoked_at is not None or node.last_seen_at is None:
        return False
    if _said_goodbye(node):
        return False
    now = now or datetime.now(UTC)
    return now - node.last_seen_at < timedelta(seconds=offline_after_s)


def node_out(node: Node, *, offline_after_s: float, frames_per_min: int) -> NodeOut:
    online = is_online(node, offline_after_s=offline_after_s)
    # An offline node's last figures (fps, latency, state, dark scene) describe a camera that is
    # no longer reporting: shown as unknown rather than as if current.
    return NodeOut(
        id=node.id,
        name=node.name,
        tasks=list(node.tasks),
        store_frames=node.store_frames,
        store_face_crops=node.store_face_crops,
        created_at=node.created_at,
        revoked_at=node.revoked_at,
        online=online,
        last_seen_at=node.last_seen_at,
        last_heartbeat_at=node.last_heartbeat_at,
        state=node.state.value if online and node.state is not None else None,
        fps=node.fps if online else None,
        send_fps=round(frames_per_min / 60, 2),
        latency_ms_p50=node.latency_ms_p50 if online else None,
        frames_per_min=frames_per_min,
        dark_scene=node.dark_scene and online,
        version=node.version,
        last_error=node.last_error,
    )


# --- credentials ----------------------------------------------------------------------------


async def exchange_secret(
    session: AsyncSession, node_id: uuid.UUID, secret: str, settings: Settings
) -> NodeToken:
    """A fresh token for a node that proves its secret. Unknown node and wrong secret look alike."""
    node = await session.get(Node, node_id)
    if node is None or not verify_node_secret(secret, node.secret_hash):
        raise InvalidNodeToken("unknown node id or wrong secret")
    if node.revoked_at is not None:
        raise InvalidNodeToken(f"node {node_id} was revoked")
    return issue_node_token(node.id, settings.nodes)


async def authenticate(session: AsyncSession, token: str, settings: Settings) -> AuthenticatedNode:
    """Verify the token, then check the node row (revocation) and note that the node was seen."""
    return await authenticate_claims(session, verify_node_token(token, settings.nodes))


async def authenticate_claims(session: AsyncSession, claims: NodeClaims) -> AuthenticatedNode:
    """The per-request half of authentication: the node exists, is not revoked; mark it seen.

    Flushes a last_seen_at (and offline → online) change; the caller commits, then announces
    `came_online`.
    """
    if claims.expires_at <= datetime.now(UTC):
        raise InvalidNodeToken("the token has expired; get a new one at POST /v1/nodes/token")
    node = await session.get(Node, claims.node_id, populate_existing=True)
    if node is None:
        raise InvalidNodeToken("the token's node does not exist")
    if node.revoked_at is not None:
        raise InvalidNodeToken(f"node {node.id} was revoked")
    came_online = await _mark_seen(session, node)
    return AuthenticatedNode(
        id=node.id,
        name=node.name,
        tasks=tuple(node.tasks),
        store_frames=node.store_frames,
        claims=claims,
        came_online=came_online,
    )


async def check_in_service(session: AsyncSession, claims: NodeClaims) -> None:
    """InvalidNodeToken if the token has expired or its node was revoked (open sockets)."""
    if claims.expires_at <= datetime.now(UTC):
        raise InvalidNodeToken("the token has expired; get a new one at POST /v1/nodes/token")
    revoked_at = await session.scalar(select(Node.revoked_at).where(Node.id == claims.node_id))
    if revoked_at is not None:
        raise InvalidNodeToken(f"node {claims.node_id} was revoked")


async def _mark_seen(session: AsyncSession, node: Node) -> bool:
    """Update last_seen_at (at most every SEEN_RESOLUTION_S); True if the node just came online.

    The offline → online update is conditional on the row's status, so when several requests
    race, exactly one of them sees the transition and announces it.
    """
    if node.status == NodeStatus.offline:
        came_online = await session.scalar(
            update(Node)
            .where(Node.id == node.id, Node.status == NodeStatus.offline)
            .values(status=NodeStatus.online, last_seen_at=func.now())
            .returning(Node.id)
            .execution_options(synchronize_session=False)
        )
        if came_online is not None:
            return True
    stale = node.last_seen_at is None or (
        datetime.now(UTC) - node.last_seen_at > timedelta(seconds=SEEN_RESOLUTION_S)
    )
    if stale:
        await session.execute(
            update(Node)
            .where(Node.id == node.id)
            .values(last_seen_at=func.now())
            .execution_options(synchronize_session=False)
        )
    return False


async def record_heartbeat(
    session: AsyncSession, node: AuthenticatedNode, heartbeat: Heartbeat
) -> list[streams.NodeChange]:
    """Store the heartbeat's figures; returns the changes worth announcing (state, dark scene)."""
    row = await get_node(session, node.id)
    changes: list[streams.NodeChange] = []
    state = NodeState(heartbeat.state)
    if row.state is not None and row.state != state:
        changes.append("state")
    if row.dark_scene != heartbeat.dark_scene:
        changes.append("dark_scene")
    row.state = state
    row.dark_scene = heartbeat.dark_scene
    row.fps = heartbeat.fps
    row.latency_ms_p50 = heartbeat.latency_ms_p50
    row.version = heartbeat.version
    row.last_error = heartbeat.last_error
    row.last_heartbeat_at = datetime.now(UTC)
    if heartbeat.goodbye:
        # The client stops cleanly: offline now, not offline_after_s from now. Its next request
        # brings it back online (_mark_seen); its next heartbeat sets a state again.
        row.status = NodeStatus.offline
        row.state = None
        if "state" in changes:
            changes.remove("state")
        changes.append("offline")
    await session.flush()
    return changes


async def announce(
    redis: Redis,
    session: AsyncSession,
    node_id: uuid.UUID,
    changes: Sequence[streams.NodeChange],
    settings: Settings,
) -> None:
    """Publish node events for committed changes, with the node's status after them."""
    if not changes:
        return
    node = await get_node(session, node_id)
    snapshot = {
        "online": is_online(node, offline_after_s=settings.nodes.offline_after_s),
        "state": node.state.value if node.state is not None else None,
        "dark_scene": node.dark_scene,
        "revoked": node.revoked_at is not None,
    }
    for change in changes:
        log.info("node_status_changed", node_id=str(node.id), change=change, **snapshot)
        try:
            await streams.publish_firehose_event(
                redis,
                streams.make_node_event(change, node.id, name=node.name, **snapshot),
                maxlen=settings.streams.firehose_maxlen,
            )
        except (RedisError, OSError) as exc:  # the change is in Postgres; the event is a courtesy
            log.warning("node_event_lost", node_id=str(node.id), change=change, error=repr(exc))


def announce_after_commit(
    session: AsyncSession,
    redis: Redis,
    node_id: uuid.UUID,
    changes: Sequence[streams.NodeChange],
    settings: Settings,
) -> None:
    """Announce node changes once the session has committed them (app/commits.py)."""
    if changes:
        after_commit(session, lambda: announce(redis, session, node_id, changes, settings))


async def mark_offline_nodes(session: AsyncSession, *, offline_after_s: float) -> list[uuid.UUID]:
    """Nodes unheard of for offline_after_s become offline; returns those that just did.

    Conditional on status, so with several API processes sweeping, each node is announced once.
    """
    cutoff = func.now() - timedelta(seconds=offline_after_s)
    rows = await session.scalars(
        update(Node)
        .where(
            Node.status == NodeStatus.online,
            Node.revoked_at.is_(None),
            Node.last_seen_at < cutoff,
        )
        .values(status=NodeStatus.offline)
        .returning(Node.id)
        .execution_options(synchronize_session=False)
    )
    return list(rows)


async def sweep_offline_nodes(
    sessionmaker: async_sessionmaker[AsyncSession], redis: Redis, settings: Settings
) -> None:
    """Run until cancelled (the API lifespan owns it): mark silent nodes offline, announce them."""
    interval_s = max(0.2, settings.nodes.offline_after_s / 4)
    while True:
        try:
            async with sessionmaker() as session:
                went_offline = await mark_offline_nodes(
                    session, offline_after_s=settings.nodes.offline_after_s
                )
                for node_id in went_offline:
                    announce_after_commit(session, redis, node_id, ["offline"], settings)
                await commit(session)
        except Exception as exc:  # Postgres or Redis away: try again next round, never die
            log.warning("node_sweep_failed", error=repr(exc))
        await asyncio.sleep(interval_s)


# --- frames -------------------------------------------------------------------------------


async def accept_frame(
    session: AsyncSession,
    storage: Storage,
    node: AuthenticatedNode,
    frame: bytes,
    settings: Settings,
) -> Job:
    """Turn a frame into a job row under the node's policy (flushed, not committed).

    With store_frames false the row has image_key None and nothing is written to storage:
    the bytes go to the worker through the frames Redis (enqueue_frame) and nowhere else.
    """
    if len(frame) > settings.nodes.max_frame_bytes:
        raise PayloadTooLarge(
            f"the frame is larger than the limit of {settings.nodes.max_frame_bytes} bytes"
        )
    info = await inspect_image_async(frame, max_pixels=settings.api.max_image_pixels)
    backlog = await session.scalar(
        select(func.count()).select_from(Job).where(Job.node_id == node.id, JOB_UNFINISHED)
    )
    if (backlog or 0) >= settings.nodes.max_queued_frames:
        raise FramesBacklogged(
            f"{backlog} frames of this node are waiting for a worker; send again later"
        )
    return await jobs.create_job(
        session,
        storage,
        image=frame,
        info=info,
        tasks=node.tasks,
        owner_id=None,  # a node's job belongs to no API key: admin keys see node jobs
        node_id=node.id,
        store_image=node.store_frames,
    )


async def enqueue_frame(
    redis: Redis,
    frames_redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    job: Job,
    frame: bytes,
    settings: Settings,
) -> None:
    """Hand a committed frame job to the workers; unless the frame was stored, its bytes go to
    the frames Redis for as long as the job may take (streams.frame_ttl_ms).

    If Redis refuses, the job is marked failed (a frame that was not stored cannot be
    re-enqueued later: its bytes exist nowhere else) and NodeUnavailable (503) is raised.
    """
    unstored = job.image_key is None
    try:
        await jobs.enqueue(
            redis, job, settings, frame=frame if unstored else None, frames_redis=frames_redis
        )
    except (RedisError, OSError) as exc:
        log.warning("frame_enqueue_failed", job_id=str(job.id), error=repr(exc))
        if unstored:
            # The frame may be in the frames Redis with no message naming it: do not leave it
            # there for its whole TTL (if this fails too, the TTL is the backstop).
            with contextlib.suppress(RedisError, OSError):
                await frames_redis.delete(streams.frame_key(job.id))
        async with sessionmaker.begin() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(
                    status=JobStatus.failed,
                    error="the work queue was unavailable",
                    finished_at=func.now(),
                )
            )
        raise NodeUnavailable("the work queue is unavailable; send the frame again later") from exc


async def get_own_job(
    session: AsyncSession, node: AuthenticatedNode, job_id: uuid.UUID
) -> JobDetail:
    """A job this node sent. Another node's job is 404 exactly as an unknown id is: a node must
    not learn which ids exist."""
    # Authorized here by node, not by API key: read it as the system, then check the node.
    detail = await jobs.get_job_detail(session, job_id, ANONYMOUS_ADMIN)
    if detail.node_id != node.id:
        raise NotFound(f"no job with id {job_id}")
    return detail
