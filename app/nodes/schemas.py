"""API schemas for edge nodes, and the messages of the node socket (WS /v1/nodes/me/stream).

The node client (clients/node.py) imports this module and nothing else from the server.
"""

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app import openapi_examples as examples
from app.jobs.tasks import TaskName
from app.schema_types import StorableText
from app.timestamps import UtcDatetime

NodeStateName = Literal["active", "idle"]


class NodeCreate(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$",
        examples=["gate-cam-1"],
        description="unique among nodes in service",
    )
    tasks: list[TaskName] | None = Field(
        default=None,
        description="tasks its frames run; default faces (identify: faces matched against "
        "the gallery)",
        examples=[["faces", "identify"]],
    )
    store_frames: StrictBool = Field(
        default=False,
        description="false: frames are never written to disk or Postgres (results are kept)",
    )
    store_face_crops: bool = Field(
        default=False,
        description="true: keep each face's aligned crop (thumbnail) from its frames",
    )


class NodePolicyUpdate(BaseModel):
    tasks: list[TaskName] | None = None
    store_frames: StrictBool | None = None
    store_face_crops: StrictBool | None = None


class NodeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.NODE]})

    id: uuid.UUID
    name: str
    tasks: list[TaskName] = Field(description="tasks its frames run")
    store_frames: bool
    store_face_crops: bool = False
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None
    online: bool = Field(description="heard from within nodes.offline_after_s")
    last_seen_at: UtcDatetime | None = None
    last_heartbeat_at: UtcDatetime | None = None
    state: NodeStateName | None = None
    fps: float | None = Field(
        default=None, description="frames captured per second, as the node last reported"
    )
    send_fps: float = Field(
        description="frames the server accepted per second over the last minute (sent rate)"
    )
    latency_ms_p50: float | None = Field(
        default=None, description="median frame → result round trip the node measured"
    )
    frames_per_min: int = Field(description="frames the server accepted in the last minute")
    dark_scene: bool = False
    version: str | None = None
    last_error: str | None = None


class NodeCreated(NodeOut):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.NODE_CREATED]})

    secret: str = Field(description="shown once; only its hash is kept")


class NodeList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.NODE_LIST]})

    items: list[NodeOut]
    offline_after_s: float


class TokenRequest(BaseModel):
    node_id: uuid.UUID
    secret: StorableText = Field(min_length=1, max_length=200)


class TokenOut(BaseModel):
    """OAuth 2.0's token response shape (RFC 6749 §5.1), which HTTP clients read as is."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.NODE_TOKEN]})

    access_token: str = Field(
        description="the node's JWT (HS256; kid, sub = node id, iat, exp, jti): send it as "
        "`Authorization: Bearer <access_token>` on /v1/nodes/me/* (frames, heartbeat, the "
        "stream socket's upgrade); before expires_at fetch a new one, and hand it to an open "
        'socket as {"type": "token", "token": …}',
    )
    token_type: Literal["bearer"] = Field(
        default="bearer", description="always bearer: the Authorization scheme to use"
    )
    expires_in: int = Field(description="seconds until the token expires")
    expires_at: UtcDatetime = Field(description="when it expires (RFC 3339, UTC)")


class Heartbeat(BaseModel):
    fps: float = Field(ge=0, allow_inf_nan=False, description="frames captured per second")
    latency_ms_p50: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="median frame → result round trip, milliseconds",
    )
    state: NodeStateName
    dark_scene: StrictBool = False
    version: StorableText = Field(default="unknown", max_length=64)
    last_error: StorableText | None = Field(default=None, max_length=2000)
    goodbye: StrictBool = Field(
        default=False,
        description="the client is stopping cleanly: the node is offline now, not in "
        "offline_after_s",
    )


class HeartbeatAck(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.HEARTBEAT_ACK]})

    node_id: uuid.UUID
    next_heartbeat_s: float = Field(description="send the next heartbeat within this")
    offline_after_s: float


# Messages on the node socket. Node → server: binary messages are frames (JPEG, PNG or WebP);
# text messages are JSON control messages (TokenRefresh). Server → node: JSON, one of these.
# `seq` is the frame's position on this socket, counting from 1.


class TokenRefresh(BaseModel):
    type: Literal["token"] = "token"
    token: str


class FrameAcceptedMessage(BaseModel):
    type: Literal["accepted"] = "accepted"
    seq: int
    job_id: uuid.UUID


class FrameResultMessage(BaseModel):
    type: Literal["result"] = "result"
    seq: int
    job_id: uuid.UUID
    job: dict[str, Any] = Field(description="the finished job, as GET /v1/jobs/{id} returns it")


class FrameErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    seq: int
    job_id: uuid.UUID
    error: str


class FrameRefusedMessage(BaseModel):
    """The frame was dropped before it became a job: `busy` (too many in flight), or a 4xx code."""

    type: Literal["refused"] = "refused"
    seq: int
    reason: str
    detail: str


class TokenAcceptedMessage(BaseModel):
    type: Literal["token_ok"] = "token_ok"
    expires_at: UtcDatetime
