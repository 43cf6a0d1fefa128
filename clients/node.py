"""The edge node client (`lookout node run`): capture frames, send those that matter, report.

Runs on the camera machine. OpenCV reads a video file, an RTSP URL or a camera index; a scene
gate sends a frame only when the scene changed enough or `max_interval_s` passed; frames go up
a WebSocket and results come back on it; heartbeats report FPS, round-trip latency (p50), state
(active | idle) and dark-scene warnings. When the server is unreachable the client backs off
(exponentially, with jitter, up to `backoff_max_s`) and reconnects; it never exits on its own
except when a file source ends. It speaks HTTP (httpx) and WebSocket (httpx-ws) only and imports
nothing from the server but app.nodes.schemas.
"""

import asyncio
import contextlib
import random
import statistics
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import httpx
import numpy as np
import structlog
from httpx_ws import AsyncWebSocketSession, aconnect_ws
from numpy.typing import NDArray

from app.nodes.schemas import Heartbeat, HeartbeatAck, TokenOut, TokenRefresh

_T = TypeVar("_T")

log = structlog.get_logger()

CLIENT_VERSION = "lookout-node/0.1.0"
STREAM_PATH = "/v1/nodes/me/stream"
THUMBNAIL_WIDTH = 64
# Refresh the token when less than this share of its lifetime is left (and at least 30 s).
TOKEN_REFRESH_SHARE = 0.2
TOKEN_REFRESH_MIN_S = 30.0
FIRST_HEARTBEAT_S = 5.0
FPS_WINDOW_S = 5.0
LATENCY_SAMPLES = 200
RECENT_RESULTS = 256
MAX_RESULT_MESSAGE_BYTES = 16 * 1024 * 1024

Image = NDArray[np.uint8]


@dataclass(frozen=True)
class NodeClientConfig:
    server: str  # http(s)://host:port of the Lookout API
    node_id: uuid.UUID
    secret: str
    source: str  # video file path, rtsp:// URL, or camera index ("0")
    # Scene gate: a frame is sent when at least change_fraction of its (thumbnail) pixels moved
    # by more than pixel_delta grey levels since the last frame sent, or max_interval_s passed.
    change_fraction: float = 0.02
    pixel_delta: int = 25
    max_interval_s: float = 10.0
    # No change for idle_after_s → idle: only one frame per idle_sample_s is examined.
    idle_after_s: float = 30.0
    idle_sample_s: float = 0.5
    dark_luma: float = 40.0  # mean grey level (0–255) under which the scene is "dark"
    jpeg_quality: int = 85
    max_width: int = 1280  # wider frames are scaled down before sending
    max_in_flight: int = 4  # frames sent and not yet answered
    loop: bool = False  # replay a file source forever
    realtime: bool = True  # read a file source at its own frame rate, as a camera would
    backoff_min_s: float = 0.5
    backoff_max_s: float = 10.0
    result_timeout_s: float = 60.0  # at the end of a file, wait this long for the last results

    def __post_init__(self) -> None:
        # Values that would make the client stall (no frame ever in flight) or reconnect in a
        # loop with no wait at all.
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be 1 or more, not {self.max_in_flight}")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError(
                f"the reconnect backoff must be above 0 and its maximum ({self.backoff_max_s} s) "
                f"at least its minimum ({self.backoff_min_s} s)"
            )


@dataclass(frozen=True)
class FrameResult:
    seq: int
    job_id: str
    counts: dict[str, int]
    latency_ms: float
    received_at: float  # epoch seconds


@dataclass
class NodeReport:
    """What the client did. Counters only grow; `recent` keeps the last results."""

    frames_read: int = 0
    frames_examined: int = 0
    frames_sent: int = 0
    frames_replaced: int = 0  # chosen for sending, then superseded by a newer one before it went
    results: int = 0
    errors: int = 0
    refused: int = 0
    sessions: int = 0
    connection_failures: int = 0
    heartbeats: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    recent: deque[FrameResult] = field(default_factory=lambda: deque(maxlen=RECENT_RESULTS))


# --- scene gate (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    send: bool
    reason: str | None  # first | change | interval
    state: str  # active | idle
    dark: bool
    state_changed: bool
    dark_changed: bool


def by_class(counts: dict[str, int]) -> Counter[str]:
    """A result's counts by class, for the run's report: a plate's count is keyed by its text
    (`plate:KX51RTA`), and a node watching traffic for weeks would otherwise keep every plate
    (and every misreading) it was ever told of."""
    totals: Counter[str] = Counter()
    for label, n in counts.items():
        totals[label.split(":", 1)[0]] += n
    return totals


# Grey levels (0-255) above dark_luma a dark scene must reach to count as light again.
DARK_BAND = 10.0


class SceneGate:
    """Decides which frames are worth sending. Pure: thumbnails and times in, decisions out."""

    def __init__(
        self,
        *,
        change_fraction: float,
        pixel_delta: int,
        max_interval_s: float,
        idle_after_s: float,
        dark_luma: float,
    ) -> None:
        self.change_fraction = change_fraction
        self.pixel_delta = pixel_delta
        self.max_interval_s = max_interval_s
        self.idle_after_s = idle_after_s
        self.dark_luma = dark_luma
        self.reference: Image | None = None
        self.last_sent_at = 0.0
        self.last_change_at = 0.0
        self.state = "active"
        self.dark = False

    def changed_fraction(self, thumbnail: Image) -> float:
        if self.reference is None or self.reference.shape != thumbnail.shape:
            return 1.0
        delta = cv2.absdiff(thumbnail, self.reference)
        return float(np.count_nonzero(delta > self.pixel_delta)) / delta.size

    def observe(self, thumbnail: Image, now: float) -> GateDecision:
        """`now`: monotonic seconds. A frame sent becomes the reference for the next ones."""
        first = self.reference is None
        changed = self.changed_fraction(thumbnail) >= self.change_fraction
        reason = None
        if first:
            reason = "first"
        elif changed:
            reason = "change"
        elif now - self.last_sent_at >= self.max_interval_s:
            reason = "interval"
        if first or changed:
            self.last_change_at = now
        state = "active" if now - self.last_change_at < self.idle_after_s else "idle"
        # A band, not a line: a scene hovering at the threshold (dusk, sensor noise, exposure
        # hunting at night) flipped the flag on every frame, and each flip is a heartbeat, a
        # firehose event and a webhook. Dark below dark_luma; light again above it + DARK_BAND.
        mean = float(thumbnail.mean())
        dark = mean < self.dark_luma + (DARK_BAND if self.dark else 0.0)
        decision = GateDecision(
            send=reason is not None,
            reason=reason,
            state=state,
            dark=dark,
            state_changed=state != self.state,
            dark_changed=dark != self.dark,
        )
        self.state, self.dark = state, dark
        if decision.send:
            self.reference = thumbnail
            self.last_sent_at = now
        return decision


def thumbnail(frame: Image) -> Image:
    """A small blurred grey copy: cheap to compare, blind to sensor noise."""
    height, width = frame.shape[:2]
    size = (THUMBNAIL_WIDTH, max(1, round(height * THUMBNAIL_WIDTH / width)))
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return np.asarray(cv2.GaussianBlur(grey, (3, 3), 0), dtype=np.uint8)


def encode_frame(frame: Image, *, max_width: int, jpeg_quality: int) -> bytes:
    height, width = frame.shape[:2]
    if width > max_width:
        size = (max_width, round(height * max_width / width))
        frame = np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(encoded.tobytes())


# --- capture ----------------------------------------------------------------------------------


class SourceError(Exception):
    """The capture source could not be opened or stopped delivering frames."""


class SourceEnded(Exception):
    """A file source reached its end (and does not loop)."""


class FrameSource:
    """cv2.VideoCapture over a file, an RTSP URL or a camera index. Blocking: call in a thread."""

    def __init__(self, source: str, *, loop: bool) -> None:
        self.source = source
        self.loop = loop
        self.is_file = not source.isdigit() and "://" not in source
        self.capture: cv2.VideoCapture | None = None

    @property
    def fps(self) -> float:
        fps = float(self.capture.get(cv2.CAP_PROP_FPS)) if self.capture is not None else 0.0
        return fps if 0 < fps < 1000 else 0.0

    def open(self) -> None:
        self.release()
        if self.is_file and not Path(self.source).is_file():
            raise SourceError(f"no such video file: {self.source}")
        capture = cv2.VideoCapture(int(self.source) if self.source.isdigit() else self.source)
        if not capture.isOpened():
            raise SourceError(f"cannot open video source {self.source}")
        self.capture = capture

    def read(self, *, decode: bool) -> Image | None:
        """The next frame (None when not decoded). SourceEnded at the end of a non-looping file."""
        if self.capture is None:
            self.open()
        assert self.capture is not None
        if not self.capture.grab():
            if not self.is_file:
                raise SourceError(f"video source {self.source} stopped delivering frames")
            if not self.loop:
                raise SourceEnded
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            if not self.capture.grab():
                raise SourceError(f"cannot rewind {self.source}")
        if not decode:
            return None
        ok, frame = self.capture.retrieve()
        if not ok or frame is None:
            raise SourceError(f"cannot decode a frame of {self.source}")
        return np.asarray(frame, dtype=np.uint8)

    def release(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


@dataclass(frozen=True)
class OutgoingFrame:
    jpeg: bytes
    chosen_at: float  # monotonic


class LatestFrame:
    """A one-frame mailbox between capture and sender: a newer frame replaces one not yet sent.

    A live camera wants its freshest frame analysed, not a queue of stale ones.
    """

    def __init__(self) -> None:
        self._frame: OutgoingFrame | None = None
        self._ready = asyncio.Event()
        self.closed = False
        self.replaced = 0

    def offer(self, frame: OutgoingFrame) -> None:
        if self._frame is not None:
            self.replaced += 1
        self._frame = frame
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    @property
    def empty(self) -> bool:
        return self._frame is None

    async def take(self) -> OutgoingFrame | None:
        """The pending frame; None once closed and drained."""
        while self._frame is None:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        return frame


class Metrics:
    """Capture FPS over a sliding window and round-trip latencies."""

    def __init__(self) -> None:
        self.captures: deque[float] = deque()
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def captured(self, now: float) -> None:
        self.captures.append(now)
        while self.captures and now - self.captures[0] > FPS_WINDOW_S:
            self.captures.popleft()

    def fps(self, now: float) -> float:
        while self.captures and now - self.captures[0] > FPS_WINDOW_S:
            self.captures.popleft()
        if len(self.captures) < 2:
            return 0.0
        return round((len(self.captures) - 1) / max(1e-6, self.captures[-1] - self.captures[0]), 2)

    def latency_ms_p50(self) -> float | None:
        return round(statistics.median(self.latencies_ms), 1) if self.latencies_ms else None


# --- the client -------------------------------------------------------------------------------


def token_refresh_after_s(expires_in_s: float) -> float:
    """How long after it was fetched a token is refreshed: when 20% of its lifetime (at least
    30 s) is left, but no later than halfway through, so a short-lived token keeps some slack."""
    left_s = max(TOKEN_REFRESH_MIN_S, TOKEN_REFRESH_SHARE * expires_in_s)
    return expires_in_s - min(left_s, expires_in_s / 2)


class ServerRefused(Exception):
    """The server answered with an error status (bad credentials, revoked node, …)."""


class AuthRefused(ServerRefused):
    """The server refused the node's credentials (wrong secret, unknown or revoked node).

    Final: trying again cannot help, so the client stops instead of reconnecting forever.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the server refused this node's credentials ({status}): {detail}")
        self.status = status
        self.detail = detail


class NodeClient:
    def __init__(
        self, config: NodeClientConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.transport = transport  # tests pass an in-process ASGI transport
        self.report = NodeReport()
        self.metrics = Metrics()
        self.gate = SceneGate(
            change_fraction=config.change_fraction,
            pixel_delta=config.pixel_delta,
            max_interval_s=config.max_interval_s,
            idle_after_s=config.idle_after_s,
            dark_luma=config.dark_luma,
        )
        self.mailbox = LatestFrame()
        self.last_error: str | None = None
        self._urgent_heartbeat = asyncio.Event()
        self._token: TokenOut | None = None
        self._token_fetched_at = 0.0

    async def run(self, stop: asyncio.Event | None = None) -> NodeReport:
        """Capture and stream until `stop` is set or a file source ends.

        Never raises for I/O (the server down or restarting: reconnect with backoff); raises
        AuthRefused when the server refuses the node's credentials, which no retry can fix.
        """
        stop = stop or asyncio.Event()
        backoff_s = self.config.backoff_min_s
        refusal: AuthRefused | None = None
        async with httpx.AsyncClient(
            base_url=self.config.server, transport=self.transport, timeout=10.0
        ) as http:
            capture = asyncio.create_task(self._capture(stop))
            try:
                while not stop.is_set() and not self._finished(capture):
                    connected_at = time.monotonic()
                    try:
                        await self._session(http, stop)
                    except AuthRefused as exc:
                        self.last_error = str(exc)
                        log.error("node_refused", status=exc.status, detail=exc.detail)
                        refusal = exc  # raised once the client is closed, not through it
                        break
                    except Exception as exc:  # the server is down or restarting
                        self.report.connection_failures += 1
                        self.last_error = _describe(exc)
                        if time.monotonic() - connected_at > 2 * self.config.backoff_max_s:
                            backoff_s = self.config.backoff_min_s  # it had been working a while
                        delay_s = backoff_s * random.uniform(0.8, 1.2)
                        log.warning("node_disconnected", error=self.last_error, retry_in_s=delay_s)
                        await _sleep_unless(stop, delay_s)
                        backoff_s = min(backoff_s * 2, self.config.backoff_max_s)
                    else:
                        backoff_s = self.config.backoff_min_s
            finally:
                capture.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await capture
                self.report.frames_replaced = self.mailbox.replaced
        if refusal is not None:
            raise refusal
        log.info(
            "node_stopped",
            frames_read=self.report.frames_read,
            frames_sent=self.report.frames_sent,
            results=self.report.results,
        )
        return self.report

    def _finished(self, capture: "asyncio.Task[None]") -> bool:
        return capture.done() and self.mailbox.empty

    # capture ------------------------------------------------------------------------------

    async def _capture(self, stop: asyncio.Event) -> None:
        """Read frames for the client's whole life, across reconnects; offer the chosen ones."""
        config = self.config
        source = FrameSource(config.source, loop=config.loop)
        backoff_s = config.backoff_min_s
        last_examined = 0.0
        try:
            while not stop.is_set():
                try:
                    await _finish_in_thread(source.open)
                    backoff_s = config.backoff_min_s
                    period_s = 1 / source.fps if config.realtime and source.fps else 0.0
                    next_due = time.monotonic()
                    while not stop.is_set():
                        now = time.monotonic()
                        examine = (
                            self.gate.state == "active"
                            or now - last_examined >= config.idle_sample_s
                        )
                        frame = await _finish_in_thread(source.read, decode=examine)
                        now = time.monotonic()
                        self.report.frames_read += 1
                        self.metrics.captured(now)
                        if frame is not None:
                            last_examined = now
                            await self._examine(frame, now)
                        if source.is_file and period_s:
                            next_due += period_s
                            await asyncio.sleep(max(0.0, next_due - time.monotonic()))
                except SourceEnded:
                    log.info("node_source_ended", source=config.source)
                    return
                except SourceError as exc:
                    self.last_error = str(exc)
                    log.warning("node_source_failed", error=str(exc), retry_in_s=backoff_s)
                    await _sleep_unless(stop, backoff_s)
                    backoff_s = min(backoff_s * 2, config.backoff_max_s)
        finally:
            source.release()
            self.mailbox.close()

    async def _examine(self, frame: Image, now: float) -> None:
        self.report.frames_examined += 1
        decision = self.gate.observe(thumbnail(frame), now)
        if decision.state_changed:
            log.info("node_state", state=decision.state)
            self._urgent_heartbeat.set()
        if decision.dark_changed:
            if decision.dark:
                log.warning("node_dark_scene", mean_below=self.config.dark_luma)
            self._urgent_heartbeat.set()
        if decision.send:
            jpeg = await asyncio.to_thread(
                encode_frame,
                frame,
                max_width=self.config.max_width,
                jpeg_quality=self.config.jpeg_quality,
            )
            self.mailbox.offer(OutgoingFrame(jpeg=jpeg, chosen_at=now))

    # one connection -----------------------------------------------------------------------

    async def _session(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Token, socket, heartbeats; returns when stopped or when a file's frames are answered."""
        await self._fetch_token(http)
        ws: AsyncWebSocketSession
        async with aconnect_ws(
            STREAM_PATH,
            http,
            headers=self._auth_headers(),
            max_message_size_bytes=MAX_RESULT_MESSAGE_BYTES,
            keepalive_ping_interval_seconds=10.0,
            keepalive_ping_timeout_seconds=10.0,
        ) as ws:
            self.report.sessions += 1
            log.info("node_connected", server=self.config.server, session=self.report.sessions)
            in_flight: dict[int, float] = {}
            slot_free = asyncio.Event()
            tasks = {
                asyncio.create_task(self._send_frames(ws, in_flight, slot_free)),
                asyncio.create_task(self._receive_answers(ws, in_flight, slot_free)),
                asyncio.create_task(self._heartbeats(http, ws)),
                asyncio.create_task(stop.wait()),
            }
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
            # Stopped (Ctrl-C, SIGTERM): say goodbye, so the node shows offline now rather than
            # offline_after_s later. Or the sender finished (the file ended and its last frames
            # were answered): report the final figures.
            await self._heartbeat(http, goodbye=stop.is_set())

    async def _send_frames(
        self, ws: AsyncWebSocketSession, in_flight: dict[int, float], slot_free: asyncio.Event
    ) -> None:
        seq = 0
        while True:
            while len(in_flight) >= self.config.max_in_flight:
                slot_free.clear()
                await slot_free.wait()
            frame = await self.mailbox.take()
            if frame is None:  # the source ended: wait for the answers still owed, then stop
                deadline = time.monotonic() + self.config.result_timeout_s
                while in_flight and time.monotonic() < deadline:
                    slot_free.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(slot_free.wait(), deadline - time.monotonic())
                return
            seq += 1
            in_flight[seq] = time.monotonic()
            await ws.send_bytes(frame.jpeg)
            self.report.frames_sent += 1

    async def _receive_answers(
        self, ws: AsyncWebSocketSession, in_flight: dict[int, float], slot_free: asyncio.Event
    ) -> None:
        while True:
            message: dict[str, Any] = await ws.receive_json()
            kind = message.get("type")
            seq = int(message.get("seq", 0))
            sent_at = in_flight.pop(seq, None) if kind in ("result", "error", "refused") else None
            if kind == "result" and sent_at is not None:
                latency_ms = (time.monotonic() - sent_at) * 1000
                self.metrics.latencies_ms.append(latency_ms)
                counts = {str(k): int(v) for k, v in message["job"].get("counts", {}).items()}
                self.report.results += 1
                self.report.counts.update(by_class(counts))
                self.report.recent.append(
                    FrameResult(seq, str(message["job_id"]), counts, latency_ms, time.time())
                )
                log.info(
                    "frame_result",
                    seq=seq,
                    job_id=message["job_id"],
                    counts=counts,
                    latency_ms=round(latency_ms, 1),
                )
            elif kind == "error":
                self.report.errors += 1
                self.last_error = str(message.get("error"))
                log.warning("frame_failed", seq=seq, error=self.last_error)
            elif kind == "refused":
                self.report.refused += 1
                if message.get("reason") != "busy":
                    self.last_error = f"{message.get('reason')}: {message.get('detail')}"
                log.info("frame_refused", seq=seq, reason=message.get("reason"))
            slot_free.set()

    async def _heartbeats(self, http: httpx.AsyncClient, ws: AsyncWebSocketSession) -> None:
        interval_s = FIRST_HEARTBEAT_S
        while True:
            if self._token_expiring():
                await self._fetch_token(http)
                assert self._token is not None
                await ws.send_text(TokenRefresh(token=self._token.access_token).model_dump_json())
            ack = await self._heartbeat(http)
            interval_s = ack.next_heartbeat_s
            self._urgent_heartbeat.clear()
            # Wake for the token too: a token shorter-lived than the heartbeat interval would
            # otherwise expire and drop the socket (4401) before the next heartbeat refreshed it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._urgent_heartbeat.wait(), min(interval_s, self._token_refresh_in_s())
                )

    async def _heartbeat(self, http: httpx.AsyncClient, *, goodbye: bool = False) -> HeartbeatAck:
        heartbeat = Heartbeat(
            goodbye=goodbye,
            fps=self.metrics.fps(time.monotonic()),
            latency_ms_p50=self.metrics.latency_ms_p50(),
            state="active" if self.gate.state == "active" else "idle",
            dark_scene=self.gate.dark,
            version=CLIENT_VERSION,
            last_error=self.last_error[:2000] if self.last_error else None,
        )
        response = await http.post(
            "/v1/nodes/me/heartbeat",
            content=heartbeat.model_dump_json(),
            headers={**self._auth_headers(), "content-type": "application/json"},
        )
        _raise_for_status(response)
        self.report.heartbeats += 1
        return HeartbeatAck.model_validate_json(response.content)

    async def _fetch_token(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/v1/nodes/token",
            json={"node_id": str(self.config.node_id), "secret": self.config.secret},
        )
        if response.status_code in (401, 403):
            raise AuthRefused(response.status_code, _error_detail(response))
        _raise_for_status(response)
        self._token = TokenOut.model_validate_json(response.content)
        self._token_fetched_at = time.monotonic()

    def _token_refresh_in_s(self) -> float:
        if self._token is None:
            return 0.0
        age_s = time.monotonic() - self._token_fetched_at
        return max(0.0, token_refresh_after_s(self._token.expires_in) - age_s)

    def _token_expiring(self) -> bool:
        return self._token_refresh_in_s() <= 0.0

    def _auth_headers(self) -> dict[str, str]:
        assert self._token is not None
        return {"authorization": f"Bearer {self._token.access_token}"}


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise ServerRefused(
            f"{response.request.method} {response.request.url.path} → "
            f"{response.status_code} {response.text[:300]}"
        )


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail") or body)[:300]
    except ValueError:
        return response.text[:300]


def _describe(exc: BaseException) -> str:
    """One line for an error, unwrapping the exception groups that anyio task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:500]


async def _finish_in_thread(function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """asyncio.to_thread, except that a cancelled caller still waits for the thread: the
    capture source is released right after, and OpenCV crashes (SIGSEGV) when a VideoCapture
    is released while another thread reads from it."""
    call = asyncio.ensure_future(asyncio.to_thread(function, *args, **kwargs))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.gather(call, return_exceptions=True)
        raise


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
