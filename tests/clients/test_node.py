"""The node client's parts: the scene gate, the one-frame mailbox, metrics, and reconnecting."""

import asyncio
import uuid

import cv2
import numpy as np
import pytest

from clients.node import (
    AuthRefused,
    LatestFrame,
    Metrics,
    NodeClient,
    NodeClientConfig,
    OutgoingFrame,
    SceneGate,
    by_class,
    thumbnail,
    token_refresh_after_s,
)
from tests.conftest import shared_image, websocket_transport
from tests.images import decode, write_video
from tests.test_cli import free_port

T1 = decode(shared_image("scenes/t1.jpg"))
DOG = decode(shared_image("scenes/dog.jpg"))


def gate(**overrides: float) -> SceneGate:
    options = {
        "change_fraction": 0.02,
        "pixel_delta": 25,
        "max_interval_s": 10.0,
        "idle_after_s": 30.0,
        "dark_luma": 40.0,
    } | overrides
    return SceneGate(**options)  # type: ignore[arg-type]


def test_the_gate_sends_the_first_frame_then_only_changes():
    scene = gate()
    assert scene.observe(thumbnail(T1), 0.0).reason == "first"
    assert scene.observe(thumbnail(T1), 0.1).send is False
    assert scene.observe(thumbnail(DOG), 0.2).reason == "change"
    assert scene.observe(thumbnail(DOG), 0.3).send is False


def test_sensor_noise_is_not_a_change_but_a_moving_object_is():
    scene = gate()
    scene.observe(thumbnail(T1), 0.0)
    noise = np.random.default_rng(7).integers(-6, 7, T1.shape)
    noisy = np.clip(T1.astype(int) + noise, 0, 255).astype(np.uint8)
    assert scene.observe(thumbnail(noisy), 0.1).send is False
    moved = T1.copy()
    cv2.rectangle(moved, (100, 100), (400, 400), (0, 0, 0), -1)  # something walks in
    assert scene.observe(thumbnail(moved), 0.2).reason == "change"


def test_an_unchanging_scene_is_still_sent_every_max_interval():
    scene = gate(max_interval_s=5)
    scene.observe(thumbnail(T1), 0.0)
    assert scene.observe(thumbnail(T1), 4.9).send is False
    assert scene.observe(thumbnail(T1), 5.0).reason == "interval"
    assert scene.observe(thumbnail(T1), 9.9).send is False


def test_the_gate_goes_idle_without_change_and_wakes_on_change():
    scene = gate(idle_after_s=30, max_interval_s=1000)
    assert scene.observe(thumbnail(T1), 0.0).state == "active"
    assert scene.observe(thumbnail(T1), 29.0).state == "active"
    went_idle = scene.observe(thumbnail(T1), 30.0)
    assert (went_idle.state, went_idle.state_changed, went_idle.send) == ("idle", True, False)
    assert scene.observe(thumbnail(T1), 40.0).state_changed is False
    woke = scene.observe(thumbnail(DOG), 41.0)
    assert (woke.state, woke.state_changed, woke.reason) == ("active", True, "change")


def test_the_gate_warns_on_dark_scenes():
    scene = gate()
    assert scene.observe(thumbnail(T1), 0.0).dark is False
    night = (T1 * 0.1).astype(np.uint8)
    dark = scene.observe(thumbnail(night), 1.0)
    assert (dark.dark, dark.dark_changed) == (True, True)
    assert scene.observe(thumbnail(night), 2.0).dark_changed is False
    assert scene.observe(thumbnail(T1), 3.0).dark_changed is True


def test_a_scene_at_the_dark_threshold_does_not_flip_the_flag_on_every_frame():
    """Dusk, sensor noise or exposure hunting keep the mean grey level around dark_luma: each
    flip was an urgent heartbeat, a firehose event and a node.dark webhook. Dark below the
    threshold, light again only 10 grey levels above it."""
    scene = gate(dark_luma=40.0)

    def grey(level: int) -> np.ndarray:
        return np.full((90, 160, 3), level, np.uint8)

    flips = [scene.observe(grey(level), t).dark_changed for t, level in enumerate([39, 40] * 10)]
    assert flips == [True] + [False] * 19  # dark at the first 39, and it stays dark
    assert scene.observe(grey(49), 21.0).dark is True
    assert scene.observe(grey(50), 22.0).dark_changed is True  # light again past the band


def test_the_run_report_counts_plates_by_class_not_by_text():
    counts = {"car": 2, "plate:KX51RTA": 1, "plate:AB12CDE": 1, "face": 0}
    assert by_class(counts) == {"car": 2, "plate": 2, "face": 0}


def test_settings_that_would_stall_or_spin_the_client_are_refused():
    base = {"server": "http://x", "node_id": uuid.uuid4(), "secret": "s", "source": "0"}
    with pytest.raises(ValueError, match="max_in_flight"):
        NodeClientConfig(**base, max_in_flight=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backoff"):
        NodeClientConfig(**base, backoff_max_s=0)  # type: ignore[arg-type]
    assert NodeClientConfig(**base).max_in_flight == 4  # type: ignore[arg-type]


async def test_the_mailbox_keeps_only_the_freshest_frame():
    mailbox = LatestFrame()
    for n in range(3):
        mailbox.offer(OutgoingFrame(jpeg=bytes([n]), chosen_at=n))
    assert (await mailbox.take()).jpeg == bytes([2])
    assert mailbox.replaced == 2
    waiting = asyncio.create_task(mailbox.take())
    await asyncio.sleep(0)
    mailbox.offer(OutgoingFrame(jpeg=b"late", chosen_at=9))
    assert (await waiting).jpeg == b"late"
    mailbox.close()
    assert await mailbox.take() is None


def test_metrics_report_capture_fps_and_median_latency():
    metrics = Metrics()
    for n in range(11):
        metrics.captured(100 + n * 0.1)
    assert metrics.fps(101.0) == 10.0
    assert metrics.fps(200.0) == 0.0  # nothing captured lately
    assert metrics.latency_ms_p50() is None
    metrics.latencies_ms.extend([30.0, 10.0, 500.0])
    assert metrics.latency_ms_p50() == 30.0


def test_tokens_are_refreshed_before_they_expire_whatever_their_lifetime():
    assert token_refresh_after_s(900) == 720  # 20% of the lifetime left
    assert token_refresh_after_s(120) == 90  # at least 30 s left
    assert token_refresh_after_s(30) == 15  # a short-lived token: refreshed halfway


async def test_with_no_server_the_client_backs_off_and_keeps_trying(tmp_path):
    video = write_video(tmp_path / "v.avi", [T1] * 4, fps=10)
    client = NodeClient(
        NodeClientConfig(
            server=f"http://127.0.0.1:{free_port()}",  # nothing listens there
            node_id=uuid.uuid4(),
            secret="lkn_x",
            source=str(video),
            loop=True,
            backoff_min_s=0.1,
            backoff_max_s=0.4,
        )
    )
    stop = asyncio.Event()
    running = asyncio.create_task(client.run(stop))
    # Until it has failed three times and read past the video's end (it loops); waited for,
    # not slept: on a busy 2-core machine (CI run 47) 2 s saw 2 failures and 3 frames.
    for _ in range(300):
        if client.report.connection_failures >= 3 and client.report.frames_read > 4:
            break
        await asyncio.sleep(0.1)
    assert not running.done()  # still trying, not crashed
    stop.set()
    report = await asyncio.wait_for(running, 10)
    assert report.connection_failures >= 3
    assert report.sessions == 0
    assert report.frames_read > 4  # capture went on (looping) while the server was away
    assert "ConnectError" in (client.last_error or "")


@pytest.mark.parametrize("refusal", ["revoked", "wrong secret"])
async def test_an_auth_refusal_is_final_the_client_stops_with_the_reason(
    app, client, make_node, tmp_path, refusal
):
    """Retrying cannot fix a revoked node or a wrong secret: no reconnect loop of 401s."""
    node = await make_node()
    secret = node.secret
    if refusal == "revoked":
        assert (await client.delete(f"/v1/nodes/{node.id}")).status_code == 204
    else:
        secret = "lkn_" + "x" * 40
    video = write_video(tmp_path / "v.avi", [T1] * 4, fps=10)
    node_client = NodeClient(
        NodeClientConfig(
            server="http://lookout.test",
            node_id=node.id,
            secret=secret,
            source=str(video),
            loop=True,
            backoff_min_s=0.1,
            backoff_max_s=0.2,
        ),
        transport=websocket_transport(app),
    )
    with pytest.raises(AuthRefused, match="refused this node's credentials \\(401\\)") as raised:
        await asyncio.wait_for(node_client.run(asyncio.Event()), 10)
    assert raised.value.status == 401
    assert node_client.report.sessions == 0
    assert node_client.report.connection_failures == 0


async def test_a_clean_stop_says_goodbye_and_the_node_is_offline_at_once(
    app, client, make_node, tmp_path
):
    """Issue 12: a node whose client stopped cleanly stayed online for offline_after_s (30 s)
    with its last figures. Ctrl-C / SIGTERM (the stop event) now ends with a goodbye."""
    node = await make_node()
    video = write_video(tmp_path / "v.avi", [T1, DOG] * 2, fps=10)
    node_client = NodeClient(
        NodeClientConfig(
            server="http://lookout.test",
            node_id=node.id,
            secret=node.secret,
            source=str(video),
            loop=True,
        ),
        transport=websocket_transport(app),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(node_client.run(stop))

    async def fleet_status() -> dict:  # type: ignore[type-arg]
        [status] = (await client.get("/v1/nodes")).json()["items"]
        return status  # type: ignore[no-any-return]

    for _ in range(300):  # until its first heartbeat has landed (at most ~30 s)
        if node_client.report.heartbeats and (await fleet_status())["fps"] is not None:
            break
        await asyncio.sleep(0.1)
    assert (await fleet_status())["online"] is True
    stop.set()
    await asyncio.wait_for(running, 30)
    status = await fleet_status()
    assert status["online"] is False  # now, not offline_after_s (30 s) later
    assert status["fps"] is None and status["latency_ms_p50"] is None
    assert status["state"] is None and status["dark_scene"] is False
    assert "send_fps" in status  # the send rate beside the capture rate
