"""MQTT bridge against a real mosquitto: events, node states and Home Assistant discovery."""

import asyncio
import contextlib
import json
import re
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt
import pytest
from sqlalchemy import delete, update

from app import streams
from app.events_out.mqtt import MqttBridge, NodeMemory
from app.images import inspect_image
from app.jobs.service import create_job, enqueue_job
from app.models import Node, Person
from app.settings import MqttSettings
from tests.app.events_out.broker import MOSQUITTO, Mosquitto
from tests.app.events_out.helpers import enroll_from_job, wait_for
from tests.conftest import serve_app, shared_image
from tests.processes import self_signed_certificate

OBAMA = "faces/train/obama/obama.jpg"

# Home Assistant's MQTT discovery rules (home-assistant/core, homeassistant/components/mqtt/):
# the topic pattern of discovery.py, and the configuration keys of abbreviations.py (the full
# names that its abbreviations stand for; only those are read from a discovery payload).
HA_TOPIC = re.compile(
    r"(?P<prefix_topic>\w+)/(?P<component>\w+)/"
    r"(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
HA_CONFIG_KEYS = {
    "availability",
    "availability_mode",
    "availability_topic",
    "availability_template",
    "device",
    "device_class",
    "enabled_by_default",
    "entity_category",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "off_delay",
    "payload_available",
    "payload_not_available",
    "payload_off",
    "payload_on",
    "qos",
    "state_class",
    "state_topic",
    "unique_id",
    "unit_of_measurement",
    "value_template",
}
HA_DEVICE_KEYS = {
    "connections",
    "configuration_url",
    "identifiers",
    "name",
    "manufacturer",
    "model",
    "sw_version",
    "suggested_area",
}
# Device classes Home Assistant defines for these platforms (the ones used here among them).
HA_DEVICE_CLASSES = {
    "binary_sensor": {"occupancy", "connectivity", "motion", "presence", "problem"},
    "sensor": {"timestamp", "duration"},
}


@dataclass
class Subscriber:
    """What Home Assistant would see: a persistent-session QoS 1 subscriber to both trees."""

    port: int
    identifier: str = "ha-test"
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.identifier, clean_session=False
                ) as client:
                    await client.subscribe("lookout/#", qos=1)
                    await client.subscribe("homeassistant/#", qos=1)
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.messages.append((str(message.topic), payload, message.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def topics(self) -> set[str]:
        return {t for t, _, _ in self.messages}


@pytest.fixture
def broker(tmp_path):
    if not MOSQUITTO.is_file():
        pytest.fail("mosquitto is missing: run scripts/ensure-system-deps.sh")
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(autouse=True)
async def firehose_groups(redis, clean_state):
    await streams.ensure_firehose_groups(redis)


@contextlib.asynccontextmanager
async def running(*coroutines_of_stop):
    stop = asyncio.Event()
    tasks = [asyncio.create_task(make(stop)) for make in coroutines_of_stop]
    try:
        yield stop
    finally:
        stop.set()  # the bridge says goodbye (offline, retained); the subscriber just listens
        _, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def mqtt_settings(settings, broker):
    mqtt = MqttSettings(
        url=broker.url, reconnect_min_s=0.2, reconnect_max_s=1.0, status_interval_s=60.0
    )
    return settings.model_copy(update={"mqtt": mqtt})


async def node_frame_job(settings, sessionmaker, storage, redis, node_id, tasks):
    image = shared_image(OBAMA)
    info = inspect_image(image, max_pixels=settings.api.max_image_pixels)
    async with sessionmaker.begin() as session:
        job = await create_job(
            session,
            storage,
            image=image,
            info=info,
            tasks=tasks,
            owner_id=None,
            node_id=node_id,
            store_image=False,
        )
    await enqueue_job(redis, job, jobs_maxlen=1000, frame=image, frame_ttl_ms=60_000)
    return job


async def test_a_node_face_gives_the_events_states_and_discovery_home_assistant_reads(
    settings, redis, sessionmaker, storage, make_job, make_node, make_consumer, broker, api_key
):
    enrolment = await make_job(shared_image(OBAMA), tasks=("faces",))
    await make_consumer().run(burst=True)
    obama = await enroll_from_job(sessionmaker, enrolment.id, "obama")
    node = await make_node("gate-cam", tasks=("faces", "identify", "objects"))
    configured = mqtt_settings(settings, broker)
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(configured, sessionmaker, redis, consumer="test-bridge")
    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on("lookout/status") == [b"online"])
        job = await node_frame_job(
            settings, sessionmaker, storage, redis, node.id, ("faces", "identify", "objects")
        )
        await make_consumer().run(burst=True)
        node_topic = f"lookout/node/{node.id}"
        await wait_for(lambda: subscriber.on(f"{node_topic}/count/person"))
        async with serve_app(configured, api_key) as http:
            status = (await http.get("/v1/events/status")).json()["mqtt"]
        assert status["configured"] and status["connected"]
        assert status["broker"] == f"127.0.0.1:{broker.port}"
        assert status["published"] > 0

    events = [json.loads(p) for p in subscriber.on("lookout/events/face/identified")]
    assert [e["data"]["person"]["name"] for e in events] == ["obama"]
    assert events[0]["job"]["id"] == str(job.id)
    assert events[0]["node"] == {"id": str(node.id), "name": "gate-cam"}
    done = [json.loads(p) for p in subscriber.on(f"{node_topic}/events/job/done")]
    assert [e["job"]["id"] for e in done] == [str(job.id)]
    # The node never connected (a frame queued for it here): at connect the bridge turned its
    # states off, then its result turned "person" on.
    assert subscriber.on(f"{node_topic}/person") == [b"OFF", b"ON"]
    assert subscriber.on(f"{node_topic}/unknown_face") == [b"OFF", b"OFF"]
    assert subscriber.on(f"{node_topic}/count/person") == [b"1"]
    seen = json.loads(subscriber.on(f"lookout/person/{obama.id}/seen")[-1])
    assert seen["name"] == "obama" and seen["node_id"] == str(node.id)
    assert seen["time"].endswith("Z")
    node_status = json.loads(subscriber.on(f"{node_topic}/status")[-1])
    assert node_status["name"] == "gate-cam"
    assert set(node_status) >= {"online", "fps", "state"}

    configs = {
        t: json.loads(p) for t, p, _ in subscriber.messages if t.startswith("homeassistant/") and p
    }
    by_entity = {}
    for topic, config in configs.items():
        match = HA_TOPIC.fullmatch(topic)
        assert match, topic
        component = match["component"]
        assert component in HA_DEVICE_CLASSES, topic
        assert set(config) <= HA_CONFIG_KEYS, set(config) - HA_CONFIG_KEYS
        assert set(config["device"]) <= HA_DEVICE_KEYS
        assert config["device"]["identifiers"] and config["unique_id"]
        if "device_class" in config:
            assert config["device_class"] in HA_DEVICE_CLASSES[component], config
        assert config["availability_topic"] == "lookout/status"
        # The state this entity reads was published (and HA would read it from there).
        assert subscriber.on(config["state_topic"]), config["state_topic"]
        by_entity[(component, config["unique_id"])] = config
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    node_key = f"lookout_{node.id}"
    expected = {
        ("binary_sensor", f"{node_key}_person"),
        ("binary_sensor", f"{node_key}_unknown_face"),
        ("binary_sensor", f"{node_key}_online"),
        ("sensor", f"{node_key}_fps"),
        ("sensor", f"{node_key}_count_person"),
        ("sensor", f"lookout_person_{obama.id}_seen_at"),
        ("sensor", f"lookout_person_{obama.id}_seen_by"),
    }
    assert expected <= set(by_entity)
    seen_at = by_entity[("sensor", f"lookout_person_{obama.id}_seen_at")]
    assert seen_at["device_class"] == "timestamp"
    assert seen_at["value_template"] == "{{ value_json.time }}"
    # Where: the node's name, read from the same topic (Home Assistant renders the template
    # with Jinja; the seen payload has node_name, or null for an upload).
    seen_by = by_entity[("sensor", f"lookout_person_{obama.id}_seen_by")]
    assert seen_by["state_topic"] == f"lookout/person/{obama.id}/seen"
    assert seen_by["value_template"] == "{{ value_json.node_name or 'upload' }}"
    assert seen["node_name"] == "gate-cam"
    # A Home Assistant that starts later still finds every config (retained), and the bridge's
    # availability says it is gone now that it stopped.
    late = Subscriber(broker.port, identifier="ha-late")
    async with running(late.run):
        await wait_for(lambda: set(configs) <= late.topics())
        await wait_for(lambda: late.on("lookout/status"))
    retained = {t for t, _, retain in late.messages if retain}
    assert set(configs) <= retained
    assert late.on("lookout/status") == [b"offline"]


async def test_events_published_while_the_broker_restarts_all_arrive_in_order(
    settings, redis, sessionmaker, storage, make_node, make_consumer, broker
):
    node = await make_node("yard-cam", tasks=("faces",))
    configured = mqtt_settings(settings, broker)
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(configured, sessionmaker, redis, consumer="test-bridge")
    done_topic = f"lookout/node/{node.id}/events/job/done"
    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on("lookout/status") == [b"online"])
        first = await node_frame_job(settings, sessionmaker, storage, redis, node.id, ("faces",))
        await make_consumer().run(burst=True)
        await wait_for(lambda: subscriber.on(done_topic))
        broker.stop()
        jobs = [first]
        for _ in range(3):  # the broker is down: these wait in the firehose, unacked
            jobs.append(
                await node_frame_job(settings, sessionmaker, storage, redis, node.id, ("faces",))
            )
            await make_consumer().run(burst=True)
        await wait_for(lambda: not bridge.status.connected)
        lag = (await streams.firehose_groups_lag(redis)).get(streams.MQTT_GROUP)
        assert lag is not None and sum(lag) >= 1  # buffered, not lost
        broker.start()
        await wait_for(lambda: len(subscriber.on(done_topic)) >= 4, timeout_s=40)
    received = [json.loads(p)["job"]["id"] for p in subscriber.on(done_topic)]
    assert list(dict.fromkeys(received)) == [str(j.id) for j in jobs]  # none lost, in order
    assert (await streams.firehose_groups_lag(redis)).get(streams.MQTT_GROUP) == (0, 0)


async def test_a_deleted_person_s_retained_seen_topic_is_cleared(
    settings, redis, sessionmaker, storage, make_job, make_consumer, broker, api_key
):
    """`lookout/person/<id>/seen` is retained (a name, a time, a place): once the person is
    deleted the broker must not keep handing it to every new subscriber."""
    enrolment = await make_job(shared_image(OBAMA), tasks=("faces",))
    await make_consumer().run(burst=True)
    obama = await enroll_from_job(sessionmaker, enrolment.id, "obama")
    configured = mqtt_settings(settings, broker)
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(configured, sessionmaker, redis, consumer="test-bridge")
    seen_topic = f"lookout/person/{obama.id}/seen"
    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on("lookout/status") == [b"online"])
        await make_job(shared_image(OBAMA), tasks=("faces", "identify"))
        await make_consumer().run(burst=True)
        await wait_for(lambda: subscriber.on(seen_topic))
        assert json.loads(subscriber.on(seen_topic)[-1])["name"] == "obama"
        async with serve_app(configured, api_key) as http:
            assert (await http.delete(f"/v1/people/{obama.id}")).status_code == 204
        bridge.refresh_now.set()  # as every status_interval_s
        await wait_for(lambda: subscriber.on(seen_topic)[-1] == b"")
    late = Subscriber(broker.port, identifier="ha-late")
    async with running(late.run):
        await wait_for(lambda: late.on("lookout/status"))
        await asyncio.sleep(0.5)  # retained messages arrive with the subscription
    assert late.on(seen_topic) == []


async def test_a_seen_topic_left_by_an_earlier_bridge_is_cleared_once_its_person_is_gone(
    settings, redis, sessionmaker, broker
):
    """A bridge that restarted does not remember what it published before; it reads the
    retained seen topics back from the broker at connect, and clears those of people that no
    longer exist (they stayed on the broker for ever)."""
    gone, kept = uuid.uuid4(), None
    async with sessionmaker.begin() as session:
        person = Person(name="still here", owner_id=None)
        session.add(person)
        await session.flush()
        kept = person.id
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="old-bridge") as old:
        for person_id in (gone, kept):
            await old.publish(
                f"lookout/person/{person_id}/seen", json.dumps({"name": "x"}), qos=1, retain=True
            )
    configured = mqtt_settings(settings, broker)
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(configured, sessionmaker, redis, consumer="test-bridge")
    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on(f"lookout/person/{gone}/seen")[-1:] == [b""])
    late = Subscriber(broker.port, identifier="ha-late")
    async with running(late.run):
        await wait_for(lambda: late.on("lookout/status"))
        await asyncio.sleep(0.5)  # retained messages arrive with the subscription
    assert late.on(f"lookout/person/{gone}/seen") == []
    assert json.loads(late.on(f"lookout/person/{kept}/seen")[-1]) == {"name": "x"}


async def test_a_refresh_sends_only_the_discovery_configs_that_changed(
    settings, redis, sessionmaker, make_node, broker
):
    """Every refresh (each status_interval_s) sent every config again, retained: a publish per
    named person and node entity every 30 s, for ever. A refresh now sends the node's status
    and only the configs that changed; a new connection sends them all."""
    node = await make_node("porch")
    async with sessionmaker.begin() as session:
        ann, bob = Person(name="Ann", owner_id=None), Person(name="Bob", owner_id=None)
        session.add_all([ann, bob])
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(mqtt_settings(settings, broker), sessionmaker, redis, consumer="test")
    status = f"lookout/node/{node.id}/status"

    def configs() -> list[tuple[str, bytes]]:
        return [(t, p) for t, p, _ in subscriber.messages if t.startswith("homeassistant/") and p]

    async def refreshed() -> None:
        """One refresh, and all it sent received: a refresh sends the node's status before its
        configs, so the next refresh's status (one connection, in order) comes after them."""
        for _ in range(2):
            before = len(subscriber.on(status))
            bridge.refresh_now.set()
            await wait_for(lambda: len(subscriber.on(status)) > before)

    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on(status))
        await refreshed()  # the connect's refresh, received whole
        first = configs()
        people = {t for t, p in first if b"Ann" in p or b"Bob" in p}
        assert len(people) == 4 and len(first) > 4  # two per person, and the node's entities
        await refreshed()
        assert configs() == first  # nothing changed: nothing sent again
        async with sessionmaker.begin() as session:
            (await session.get(Person, bob.id)).name = "Robert"
        await refreshed()
        renamed = configs()[len(first) :]
        assert len(renamed) == 2 and {t for t, _ in renamed} <= people, renamed
        assert all(json.loads(b)["device"]["name"] == "Robert (Lookout)" for _, b in renamed)
        # A broker restarted without persistence lost them all: the new connection sends all.
        sent = len(configs())
        broker.stop()
        bridge.refresh_now.set()  # its next publish finds the broker gone
        await wait_for(lambda: not bridge.status.connected)
        broker.start()
        await wait_for(lambda: len(configs()) >= sent + len(first), timeout_s=40)
        assert {t for t, _ in configs()[sent:]} == {t for t, _ in first}


async def test_online_is_said_again_after_another_bridge_s_last_will(
    settings, redis, sessionmaker, broker
):
    """Two `lookout events` replicas share the availability topic, and a connection this bridge
    lost may have its last will fire after the reconnect: a retained `offline` left by either
    made every Home Assistant entity unavailable while events kept flowing. Each refresh says
    `online` again."""
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(mqtt_settings(settings, broker), sessionmaker, redis, consumer="test")
    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on("lookout/status") == [b"online"])
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="dead-replica") as other:
            await other.publish("lookout/status", "offline", qos=1, retain=True)
        await wait_for(lambda: subscriber.on("lookout/status")[-1:] == [b"offline"])
        bridge.refresh_now.set()  # as every status_interval_s
        await wait_for(lambda: subscriber.on("lookout/status")[-1:] == [b"online"])


async def test_an_offline_node_s_states_turn_off_and_counts_left_on_the_broker_are_reset(
    settings, redis, sessionmaker, storage, make_node, make_consumer, broker
):
    """A node that went offline with a person in view said "person: ON" for ever, and a bridge
    that restarted never reset the count topics of classes it had not seen yet (car: 1)."""
    node = await make_node("drive-cam", tasks=("faces", "objects"))  # never connected: offline
    node_topic = f"lookout/node/{node.id}"
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="old-bridge") as old:
        for leaf, value in (("person", "ON"), ("unknown_face", "ON"), ("count/car", "1")):
            await old.publish(f"{node_topic}/{leaf}", value, qos=1, retain=True)
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(mqtt_settings(settings, broker), sessionmaker, redis, consumer="test")
    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on(f"{node_topic}/count/car")[-1:] == [b"0"])
        assert subscriber.on(f"{node_topic}/person")[-1:] == [b"OFF"]
        assert subscriber.on(f"{node_topic}/unknown_face")[-1:] == [b"OFF"]
        # Its next result sets the counts it has, and 0 for the class left on the broker.
        await node_frame_job(settings, sessionmaker, storage, redis, node.id, ("faces", "objects"))
        await make_consumer().run(burst=True)
        await wait_for(lambda: subscriber.on(f"{node_topic}/count/person")[-1:] == [b"1"])
        assert subscriber.on(f"{node_topic}/person")[-1:] == [b"ON"]
        assert subscriber.on(f"{node_topic}/count/car")[-1:] == [b"0"]
        published = len(subscriber.messages)
        # Still offline: the next refresh turns its states off again, once.
        for _ in range(2):
            before = len(subscriber.on(f"{node_topic}/status"))
            bridge.refresh_now.set()
            await wait_for(lambda: len(subscriber.on(f"{node_topic}/status")) > before)
        assert subscriber.on(f"{node_topic}/person")[-1:] == [b"OFF"]
        assert subscriber.on(f"{node_topic}/count/person")[-1:] == [b"0"]
        cleared = [t for t, _, _ in subscriber.messages[published:] if t == f"{node_topic}/person"]
        assert len(cleared) == 1


async def test_events_too_old_when_the_broker_returns_update_states_but_are_not_published(
    settings, redis, sessionmaker, storage, make_node, make_consumer, broker
):
    """An automation on `face/unknown` or `job/done` must not fire an hour late: entries older
    than mqtt.max_event_age_s by the time the broker is back set the retained states only."""
    node = await make_node("back-door", tasks=("faces",))
    configured = mqtt_settings(settings, broker)
    configured = configured.model_copy(
        update={"mqtt": configured.mqtt.model_copy(update={"max_event_age_s": 1.0})}
    )
    subscriber = Subscriber(broker.port)
    bridge = MqttBridge(configured, sessionmaker, redis, consumer="test-bridge")
    node_topic = f"lookout/node/{node.id}"
    done_topic = f"{node_topic}/events/job/done"
    async with running(subscriber.run, bridge.run):
        await wait_for(lambda: subscriber.on("lookout/status") == [b"online"])
        broker.stop()
        stale = await node_frame_job(settings, sessionmaker, storage, redis, node.id, ("faces",))
        await make_consumer().run(burst=True)
        await wait_for(lambda: not bridge.status.connected)  # its publish found the broker gone
        await asyncio.sleep(1.5)  # older than max_event_age_s before the broker is back
        broker.start()
        await wait_for(lambda: subscriber.on(f"{node_topic}/person")[-1:] == [b"ON"], timeout_s=40)
        fresh = await node_frame_job(settings, sessionmaker, storage, redis, node.id, ("faces",))
        await make_consumer().run(burst=True)
        await wait_for(lambda: subscriber.on(done_topic))
    received = [json.loads(p)["job"]["id"] for p in subscriber.on(done_topic)]
    assert received == [str(fresh.id)], (stale.id, received)
    assert not any(str(stale.id).encode() in p for p in subscriber.on("lookout/events/job/done"))
    assert (await streams.firehose_groups_lag(redis)).get(streams.MQTT_GROUP) == (0, 0)


async def test_a_broker_with_a_self_signed_certificate_is_trusted_with_its_ca_file(
    settings, redis, sessionmaker, tmp_path
):
    """mqtts:// verified the broker against the system's CAs only: the self-signed broker of a
    home installation could not be used. LOOKOUT_MQTT__TLS_CA_FILE names the CA to trust."""
    certificates = tmp_path / "certs"
    self_signed_certificate(certificates)
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    tls_broker = Mosquitto(broker_dir, certificates=certificates)
    tls_broker.start()
    try:
        plain = mqtt_settings(settings, tls_broker)
        refused = MqttBridge(plain, sessionmaker, redis, consumer="test-bridge")
        async with running(refused.run):
            await wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in (refused.status.last_error or ""))
        assert not refused.status.connected
        trusting = plain.model_copy(
            update={
                "mqtt": plain.mqtt.model_copy(
                    update={"tls_ca_file": certificates / "fullchain.pem"}
                )
            }
        )
        bridge = MqttBridge(trusting, sessionmaker, redis, consumer="test-bridge")
        ca = ssl.create_default_context(cafile=str(certificates / "fullchain.pem"))
        async with running(bridge.run):
            await wait_for(lambda: bridge.status.connected)
            async with aiomqtt.Client("localhost", tls_broker.port, tls_context=ca) as reader:
                await reader.subscribe("lookout/status", qos=1)
                async with asyncio.timeout(10):
                    message = await anext(reader.messages)
            assert message.payload == b"online"
        with pytest.raises(ValueError, match="TLS_CA_FILE"):
            MqttBridge(
                plain.model_copy(
                    update={
                        "mqtt": plain.mqtt.model_copy(update={"tls_ca_file": tmp_path / "nope"})
                    }
                ),
                sessionmaker,
                redis,
            )
    finally:
        tls_broker.stop()


async def retained_now(port: int, identifier: str) -> dict[str, bytes]:
    """What the broker keeps retained (non-empty), as a subscriber arriving now gets it."""
    late = Subscriber(port, identifier=identifier)
    async with running(late.run):
        await wait_for(lambda: late.on("lookout/status"))
        await asyncio.sleep(0.5)  # retained messages arrive with the subscription
    kept: dict[str, bytes] = {}
    for topic, payload, retain in late.messages:
        if retain:
            kept[topic] = payload
    return {topic: payload for topic, payload in kept.items() if payload}


async def test_configs_and_states_of_people_and_nodes_gone_while_the_bridge_was_down_are_cleared(
    settings, redis, sessionmaker, make_node, broker
):
    """A person deleted and a node revoked while `lookout events` was stopped: the next bridge
    reads their retained discovery configs and node states back from the broker and clears
    them (they named the person, and Home Assistant kept showing the node). Another Lookout's
    configs on the same broker (another availability topic) are left alone, and so are those of
    the nodes still there, their count sensors too (the new bridge has seen no class yet)."""
    async with sessionmaker.begin() as session:
        person = Person(name="gone person", owner_id=None)
        session.add(person)
        await session.flush()
        person_id = person.id
    node = await make_node("back-door", tasks=("faces",))
    live = await make_node("yard", tasks=("objects",))
    configured = mqtt_settings(settings, broker)
    first = MqttBridge(configured, sessionmaker, redis, consumer="first-bridge")
    first.nodes[str(live.id)] = NodeMemory(name="yard", labels={"dog"})  # it counted dogs
    async with running(first.run):
        await wait_for(lambda: any(str(person_id) in t for t in first.discovery_topics))
    dogs = f"homeassistant/sensor/lookout_{live.id}/count_dog/config"
    foreign = "homeassistant/sensor/lookout_person_other/seen_at/config"
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="other-lookout") as other:
        body = {"availability_topic": "staging/status", "name": "someone else's"}
        await other.publish(foreign, json.dumps(body), qos=1, retain=True)
    before = await retained_now(broker.port, "ha-before")
    assert any(str(person_id) in topic for topic in before)
    assert f"lookout/node/{node.id}/status" in before
    assert dogs in before
    async with sessionmaker.begin() as session:
        await session.execute(delete(Person).where(Person.id == person_id))
        await session.execute(
            update(Node).where(Node.id == node.id).values(revoked_at=datetime.now(UTC))
        )
    second = MqttBridge(configured, sessionmaker, redis, consumer="second-bridge")
    refreshed = asyncio.Event()
    refresh = second.refresh

    async def refresh_then_say(client: aiomqtt.Client) -> None:
        await refresh(client)
        refreshed.set()

    second.refresh = refresh_then_say  # type: ignore[method-assign]
    async with running(second.run):
        await asyncio.wait_for(refreshed.wait(), 30)  # the one at connect, after the recall
    after = await retained_now(broker.port, "ha-after")
    assert not [t for t in after if str(person_id) in t or str(node.id) in t]
    assert not [t for t, p in after.items() if b"gone person" in p or b"back-door" in p]
    assert foreign in after
    assert dogs in after and json.loads(after[dogs]) == json.loads(before[dogs])
    assert f"lookout/node/{live.id}/status" in after
