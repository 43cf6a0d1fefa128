"""The node socket's frame relay: frames in, one answer per frame out, with backpressure.

One FrameRelay per /v1/nodes/me/stream socket (app/nodes/routes.py node_stream); the messages
are app/nodes/schemas.py's.
"""

import asyncio
import time
import uuid
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.cancellation import cancel_and_wait
from app.commits import commit
from app.errors import AppError
from app.nodes.schemas import (
    FrameAcceptedMessage,
    FrameErrorMessage,
    FrameRefusedMessage,
    FrameResultMessage,
    TokenAcceptedMessage,
)
from app.nodes.service import (
    AuthenticatedNode,
    NodeUnavailable,
    accept_frame,
    announce_after_commit,
    authenticate_claims,
    enqueue_frame,
)
from app.security import InvalidNodeToken, NodeForbidden, verify_node_token
from app.settings import Settings
from app.storage import Storage

log = structlog.get_logger()

# Longest single blocking read while a socket waits for one frame's result.
RESULT_READ_BLOCK_MS = 5000
# Room in a socket's outbox for notices (refusals, token_ok) beyond the answers it owes.
NOTICE_SLACK = 8


class FrameRelay:
    """One node socket: frames in, a job per frame, results out on the same socket.

    Backpressure, per socket, so that a slow node never holds up another one:
    - At most `max_in_flight` frames may be accepted and not yet answered. A frame beyond that
      is refused at once (`refused`, reason `busy`) and dropped: a camera sends a fresher frame
      later rather than queueing stale ones. A frame counts as answered once its result has
      been written to the socket, so a node that stops reading stops getting frames accepted,
      instead of piling results up in the server.
    - The outbox therefore holds at most 2 × max_in_flight answers (accepted + result per
      frame) plus NOTICE_SLACK notices; a notice that does not fit is dropped (the node is not
      reading anyway) and counted.
    - A node's jobs queued or running are capped (max_queued_frames) across its sockets and
      HTTP, so one node cannot flood the work queue all nodes share.
    Each socket waits for its own results on its own Redis reads; nothing is shared between
    sockets but the connection pool.
    """

    def __init__(
        self,
        node: AuthenticatedNode,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        frames_redis: Redis,
        storage: Storage,
    ) -> None:
        self.node = node
        self.claims = node.claims
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.frames_redis = frames_redis
        self.storage = storage
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames = 0
        self.in_flight = 0
        self.dropped_notices = 0
        self._waiters: set[asyncio.Task[None]] = set()

    @property
    def max_in_flight(self) -> int:
        return self.settings.nodes.max_in_flight

    async def submit(self, frame: bytes) -> None:
        """Accept or refuse one frame. Raises InvalidNodeToken when the socket must close."""
        self.frames += 1
        seq = self.frames
        if self.in_flight >= self.max_in_flight:
            self._notice(
                FrameRefusedMessage(
                    seq=seq,
                    reason="busy",
                    detail=f"{self.in_flight} frames in flight (the limit); frame dropped",
                )
            )
            return
        try:
            async with self.sessionmaker() as session:
                node = await authenticate_claims(session, self.claims)
                job = await accept_frame(session, self.storage, node, frame, self.settings)
                if node.came_online:
                    announce_after_commit(session, self.redis, node.id, ["online"], self.settings)
                await commit(session)
            await enqueue_frame(
                self.redis, self.frames_redis, self.sessionmaker, job, frame, self.settings
            )
        except InvalidNodeToken:
            raise
        except AppError as exc:
            self._notice(FrameRefusedMessage(seq=seq, reason=exc.code, detail=exc.detail))
            return
        except (SQLAlchemyError, OSError) as exc:  # Postgres away: refuse, keep the socket
            log.warning("frame_not_accepted", node_id=str(self.node.id), error=repr(exc))
            self._notice(
                FrameRefusedMessage(
                    seq=seq, reason=NodeUnavailable.code, detail="the database is unavailable"
                )
            )
            return
        self.in_flight += 1
        self.outbox.put_nowait(FrameAcceptedMessage(seq=seq, job_id=job.id).model_dump(mode="json"))
        waiter = asyncio.create_task(self._forward_result(seq, job.id))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    def refresh_token(self, token: str) -> None:
        """Swap in a fresh token for the same node (sent before the old one expires)."""
        claims = verify_node_token(token, self.settings.nodes)
        if claims.node_id != self.node.id:
            raise NodeForbidden("the new token belongs to another node")
        self.claims = claims
        self._notice(TokenAcceptedMessage(expires_at=claims.expires_at))

    def answered(self, message: dict[str, Any]) -> None:
        """The socket wrote `message`; a result or error frees its frame's slot."""
        if message.get("type") in ("result", "error") and "seq" in message:
            self.in_flight -= 1

    async def close(self) -> None:
        # cancel_and_wait: Python 3.11's wait_for (under every redis-py write) can swallow a
        # cancel, and a waiter that ignored one held the socket's slot until its result came.
        await cancel_and_wait(self._waiters)

    def _notice(self, message: TokenAcceptedMessage | FrameRefusedMessage) -> None:
        if self.outbox.qsize() >= 2 * self.max_in_flight + NOTICE_SLACK:
            self.dropped_notices += 1
            return
        self.outbox.put_nowait(message.model_dump(mode="json"))

    async def _forward_result(self, seq: int, job_id: uuid.UUID) -> None:
        """Tail the job's events until its result or error; give up after result_timeout_s."""
        answer: FrameResultMessage | FrameErrorMessage | None = None
        deadline = time.monotonic() + self.settings.nodes.result_timeout_s
        after = b"0"
        try:
            while answer is None and (remaining_s := deadline - time.monotonic()) > 0:
                block_ms = max(1, min(RESULT_READ_BLOCK_MS, int(remaining_s * 1000)))
                for entry_id, event in await streams.read_job_events(
                    self.redis, job_id, after=after, block_ms=block_ms
                ):
                    after = entry_id
                    if event["type"] == "result":
                        answer = FrameResultMessage(seq=seq, job_id=job_id, job=event["job"])
                        break
                    if event["type"] == "error":
                        answer = FrameErrorMessage(
                            seq=seq, job_id=job_id, error=str(event["error"])
                        )
                        break
        except (RedisError, OSError) as exc:
            answer = FrameErrorMessage(seq=seq, job_id=job_id, error=f"results unavailable: {exc}")
        if answer is None:
            timeout_s = self.settings.nodes.result_timeout_s
            answer = FrameErrorMessage(
                seq=seq, job_id=job_id, error=f"no result within {timeout_s:g} s"
            )
        self.outbox.put_nowait(answer.model_dump(mode="json"))
