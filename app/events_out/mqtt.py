"""MQTT bridge: the firehose's `mqtt` consumer group → the user's broker, with Home Assistant
discovery.

Topics (prefix `mqtt.topic_prefix`, default `lookout`; QoS 1):

    lookout/status                          online | offline (retained; offline is the last will)
    lookout/events/<type…>                  every event, e.g. lookout/events/face/identified
    lookout/node/<node_id>/events/<type…>   the events of one node
    lookout/node/<node_id>/status           {name, online, state, fps, …} (retained)
    lookout/node/<node_id>/person           ON | OFF: the node's latest result has a face or a
                                            person (retained)
    lookout/node/<node_id>/unknown_face     ON | OFF: … has an unknown face (retained)
    lookout/node/<node_id>/count/<label>    objects of that class in its latest result (retained)
    lookout/person/<person_id>/seen         {time, name, similarity, node, job} (retained)
    lookout/label/<label>                   {count, time, node, job} of the latest sighting

Home Assistant discovery (`mqtt.discovery`, prefix `mqtt.discovery_prefix`), retained:
per node a device with binary sensors "person", "unknown face", "online" and sensors "fps"
and one count per object class it has reported; per enrolled person a "seen at" timestamp
sensor. Configs are refreshed every `mqtt.status_interval_s` and on (re)connect; those of
deleted nodes and people are cleared.

An entry is acked only once all its messages are PUBACKed: while the broker is down nothing
is acked, and after the reconnect the bridge publishes its unacked entries first, in order.
"""

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.cancellation import cancel_and_wait
from app.events_out import events
from app.models import Node, Person
from app.nodes.service import is_online
from app.settings import MqttSettings, Settings

log = structlog.get_logger()

# At connect, the retained seen topics arrive at once; this long without one, there are no more.
RECALL_QUIET_S = 0.5

QOS = 1
MANUFACTURER = "Lookout"
# A node's binary sensor "person" is ON when its latest result has any of these.
PERSON_LABELS = ("face", "person")


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker_url(url: str) -> Broker:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ValueError(f"LOOKOUT_MQTT__URL must look like mqtt://host:1883, not {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return Broker(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def _slug(value: str) -> str:
    """A topic level / discovery id: [a-zA-Z0-9_-] only (HA's discovery topic rule)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in value)


@dataclass
class Topics:
    prefix: str
    discovery_prefix: str

    @property
    def availability(self) -> str:
        return f"{self.prefix}/status"

    def event(self, event_type: str) -> str:
        return f"{self.prefix}/events/{event_type.replace('.', '/')}"

    def node(self, node_id: str, leaf: str) -> str:
        return f"{self.prefix}/node/{node_id}/{leaf}"

    def person_seen(self, person_id: str) -> str:
        return f"{self.prefix}/person/{person_id}/seen"

    def label(self, label: str) -> str:
        return f"{self.prefix}/label/{_slug(label)}"

    def discovery(self, component: str, node_key: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{_slug(node_key)}/{_slug(object_id)}/config"


@dataclass
class BridgeStatus:
    broker: str
    connected: bool = False
    since: str | None = None
    last_error: str | None = None
    published: int = 0

    def as_json(self) -> str:
        return json.dumps(self.__dict__)


@dataclass
class NodeMemory:
    """What this bridge has announced for a node: its object classes with a count sensor."""

    name: str
    labels: set[str] = field(default_factory=set)


class MqttBridge:
    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        *,
        consumer: str | None = None,
    ) -> None:
        if settings.mqtt.url is None:
            raise ValueError("MQTT is not configured (LOOKOUT_MQTT__URL)")
        self.settings = settings
        self.config: MqttSettings = settings.mqtt
        self.broker = parse_broker_url(settings.mqtt.url)
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.consumer = consumer or streams.consumer_name()
        self.topics = Topics(self.config.topic_prefix.rstrip("/"), self.config.discovery_prefix)
        self.status = BridgeStatus(broker=self.broker.address)
        self.nodes: dict[str, NodeMemory] = {}
        self.discovery_topics: set[str] = set()  # retained configs published by this bridge
        # What each config topic holds on the broker, as this connection published it: a
        # refresh sends only what changed (every named person's config again, every 30 s, was
        # a publish per person per refresh). Emptied at each connect: a broker restarted
        # without persistence has lost them.
        self.configs_sent: dict[str, str] = {}
        # People whose retained "seen" topic (a name, a time, a place) is on the broker: those
        # this bridge published, and those found there at connect (_recall_seen). Cleared once
        # the person is deleted (refresh), so the broker does not keep it.
        self.seen_people: set[str] = set()
        self.refresh_now = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        tls: ssl.SSLContext | None = ssl.create_default_context() if self.broker.tls else None
        return aiomqtt.Client(
            self.broker.host,
            port=self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=f"{self.config.client_id}-{uuid.uuid4().hex[:8]}",
            keepalive=self.config.keepalive_s,
            tls_context=tls,
            will=aiomqtt.Will(self.topics.availability, "offline", qos=QOS, retain=True),
            timeout=10,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish, reconnect with backoff; until `stop`. Never raises on outages."""
        delay_s = self.config.reconnect_min_s
        while not stop.is_set():
            try:
                async with self._client() as client:
                    delay_s = self.config.reconnect_min_s
                    await self._set_status(connected=True, error=None)
                    log.info("mqtt_connected", broker=self.broker.address)
                    await self._serve(client, stop)
                    # Leaving on purpose: say so (the will covers the other cases).
                    await client.publish(self.topics.availability, "offline", qos=QOS, retain=True)
                    await self._set_status(connected=False, error=None)
                    return
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, RedisError, SQLAlchemyError, OSError) as exc:
                log.warning("mqtt_disconnected", error=repr(exc), retry_in_s=round(delay_s, 1))
                with contextlib.suppress(RedisError, OSError):
                    await self._set_status(connected=False, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
            delay_s = min(self.config.reconnect_max_s, delay_s * 2)

    async def _set_status(self, *, connected: bool, error: str | None) -> None:
        if connected != self.status.connected:
            self.status.since = events.event_time(time.time())
        self.status.connected = connected
        if error is not None:
            self.status.last_error = error
        if connected:
            self.status.published = 0
        await self._store_status()

    async def _store_status(self) -> None:
        await self.redis.set(
            streams.MQTT_STATUS,
            self.status.as_json(),
            ex=int(self.config.status_interval_s * 3 + 30),
        )

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        await client.publish(self.topics.availability, "online", qos=QOS, retain=True)
        self.configs_sent.clear()
        await self._recall_seen(client)
        await self.refresh(client)
        consume = asyncio.create_task(self._consume(client, stop))
        refresh = asyncio.create_task(self._refresh_loop(client, stop))
        try:
            done, _ = await asyncio.wait({consume, refresh}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((consume, refresh))
        for task in done:
            task.result()  # an MqttError ends this connection; run() reconnects

    async def _recall_seen(self, client: aiomqtt.Client) -> None:
        """Remember the people whose retained seen topic is on the broker already (published
        before this bridge started), so that refresh clears those of people deleted since. The
        broker sends retained messages on subscribe; RECALL_QUIET_S without one ends it."""
        wildcard = self.topics.person_seen("+")
        await client.subscribe(wildcard, qos=QOS)
        try:
            while True:
                async with asyncio.timeout(RECALL_QUIET_S):
                    message = await anext(client.messages)
                parts = str(message.topic).split("/")
                if not message.retain or not message.payload or len(parts) < 2:
                    continue
                with contextlib.suppress(ValueError):
                    self.seen_people.add(str(uuid.UUID(parts[-2])))
        except TimeoutError:
            pass
        finally:
            await client.unsubscribe(wildcard)

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: Any, *, retain: bool = False
    ) -> None:
        body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        await client.publish(topic, body, qos=QOS, retain=retain)
        self.status.published += 1

    # --- events --------------------------------------------------------------------------

    async def _consume(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Until stopped; a failure (the broker lost) ends it, and the reconnect starts it
        again with this consumer's unacked entries."""
        reader = streams.FirehoseReader(
            self.redis,
            streams.MQTT_GROUP,
            count=self.settings.events.read_count,
            consumer=self.consumer,
        )
        while not stop.is_set():
            for entry_id, entry in await reader.read(block_ms=1000):
                if entry is not None:
                    await self.publish_entry(client, entry_id, entry)
                # Acked one by one: a broker lost mid-batch leaves only the rest pending.
                await reader.ack([entry_id])

    async def publish_entry(
        self, client: aiomqtt.Client, entry_id: streams.StreamId, entry: dict[str, Any]
    ) -> None:
        outbound = events.from_firehose(entry_id, entry, public_url=self.settings.events.public_url)
        for event in outbound:
            await self._publish(client, self.topics.event(event["type"]), event)
            node = event.get("node")
            if node is not None and node.get("id"):
                node_id = str(node["id"])
                await self._publish(
                    client,
                    self.topics.node(node_id, "events/" + event["type"].replace(".", "/")),
                    event,
                )
            data = event["data"]
            if event["type"] == "face.identified":
                person = data["person"]
                self.seen_people.add(str(person["id"]))
                await self._publish(
                    client,
                    self.topics.person_seen(str(person["id"])),
                    {
                        "time": event["time"],
                        "name": person.get("name"),
                        "similarity": data.get("similarity"),
                        "node_id": node.get("id") if node else None,
                        "node_name": node.get("name") if node else None,
                        "job_id": (event.get("job") or {}).get("id"),
                    },
                    retain=True,
                )
            elif event["type"] == "object.detected":
                await self._publish(
                    client,
                    self.topics.label(data["label"]),
                    {
                        "count": data["count"],
                        "time": event["time"],
                        "node_id": node.get("id") if node else None,
                        "job_id": (event.get("job") or {}).get("id"),
                    },
                )
        await self._publish_node_states(client, outbound)

    async def _publish_node_states(
        self, client: aiomqtt.Client, outbound: Sequence[events.OutboundEvent]
    ) -> None:
        """The Home Assistant states of a node after its result (or status change)."""
        done = next((e for e in outbound if e["type"] == "job.done"), None)
        if done is not None and done.get("node"):
            node = done["node"]
            node_id = str(node["id"])
            counts: dict[str, int] = {
                e["data"]["label"]: int(e["data"]["count"])
                for e in outbound
                if e["type"] == "object.detected"
            }
            all_counts: dict[str, int] = done["data"].get("counts") or {}
            seen_person = any(all_counts.get(label, 0) > 0 for label in PERSON_LABELS)
            unknown = any(e["type"] == "face.unknown" for e in outbound)
            await self._publish(
                client,
                self.topics.node(node_id, "person"),
                "ON" if seen_person else "OFF",
                retain=True,
            )
            await self._publish(
                client,
                self.topics.node(node_id, "unknown_face"),
                "ON" if unknown else "OFF",
                retain=True,
            )
            memory = self.nodes.setdefault(
                node_id, NodeMemory(name=str(node.get("name") or node_id))
            )
            for label in sorted(set(counts) - memory.labels):
                memory.labels.add(label)
                if self.config.discovery:
                    await self._publish_config(
                        client, *self._count_config(node_id, memory.name, label)
                    )
            for label in sorted(memory.labels):
                await self._publish(
                    client,
                    self.topics.node(node_id, f"count/{_slug(label)}"),
                    str(counts.get(label, 0)),
                    retain=True,
                )
        if any(e["type"].startswith("node.") for e in outbound):
            self.refresh_now.set()  # the node's status topic, from Postgres

    # --- status and discovery ------------------------------------------------------------

    async def _refresh_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh_now.wait(), self.config.status_interval_s)
            self.refresh_now.clear()
            if not stop.is_set():
                await self.refresh(client)

    async def refresh(self, client: aiomqtt.Client) -> None:
        """Node status topics and every discovery config, from Postgres."""
        async with self.sessionmaker() as session:
            nodes = list(await session.scalars(select(Node).where(Node.revoked_at.is_(None))))
            # Unnamed people (clusters of unknown faces) get no "seen at" sensor until named.
            people = list(
                await session.execute(
                    select(Person.id, Person.name).where(Person.name.is_not(None))
                )
            )
        # Only named people are identified (and names are never taken away): the rest are gone.
        for deleted in sorted(self.seen_people - {str(p.id) for p in people}):
            await self._publish(client, self.topics.person_seen(deleted), "", retain=True)
            self.seen_people.discard(deleted)
        configs: list[tuple[str, dict[str, Any]]] = []
        for node in nodes:
            node_id = str(node.id)
            memory = self.nodes.setdefault(node_id, NodeMemory(name=node.name))
            memory.name = node.name
            await self._publish(
                client,
                self.topics.node(node_id, "status"),
                {
                    "name": node.name,
                    "online": is_online(node, offline_after_s=self.settings.nodes.offline_after_s),
                    "state": node.state.value if node.state is not None else None,
                    "fps": node.fps,
                    "latency_ms_p50": node.latency_ms_p50,
                    "dark_scene": node.dark_scene,
                    "last_seen_at": node.last_seen_at.isoformat() if node.last_seen_at else None,
                },
                retain=True,
            )
            configs.extend(self._node_configs(node_id, node.name))
            configs.extend(self._count_config(node_id, node.name, label) for label in memory.labels)
        configs.extend(self._person_config(str(p.id), p.name) for p in people if p.name)
        if self.config.discovery:
            wanted = {topic for topic, _ in configs}
            for topic, config in configs:
                await self._publish_config(client, topic, config)
            for gone in sorted(self.discovery_topics - wanted):
                await self._publish(client, gone, "", retain=True)  # HA removes the entity
                self.discovery_topics.discard(gone)
                self.configs_sent.pop(gone, None)
        await self._store_status()

    async def _publish_config(
        self, client: aiomqtt.Client, topic: str, config: dict[str, Any]
    ) -> None:
        body = json.dumps(config, separators=(",", ":"))
        if self.configs_sent.get(topic) == body:
            return  # the broker holds it already (retained)
        await self._publish(client, topic, body, retain=True)
        self.configs_sent[topic] = body
        self.discovery_topics.add(topic)

    def _availability(self) -> dict[str, Any]:
        return {
            "availability_topic": self.topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
        }

    def _node_device(self, node_id: str, name: str) -> dict[str, Any]:
        return {
            "identifiers": [f"lookout_node_{_slug(node_id)}"],
            "name": f"Lookout {name}",
            "manufacturer": MANUFACTURER,
            "model": "edge node",
        }

    def _node_configs(self, node_id: str, name: str) -> list[tuple[str, dict[str, Any]]]:
        key = f"lookout_{node_id}"
        device = self._node_device(node_id, name)
        common = {**self._availability(), "device": device}
        status = self.topics.node(node_id, "status")
        return [
            (
                self.topics.discovery("binary_sensor", key, "person"),
                {
                    **common,
                    "name": "Person",
                    "unique_id": f"lookout_{node_id}_person",
                    "state_topic": self.topics.node(node_id, "person"),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "device_class": "occupancy",
                },
            ),
            (
                self.topics.discovery("binary_sensor", key, "unknown_face"),
                {
                    **common,
                    "name": "Unknown face",
                    "unique_id": f"lookout_{node_id}_unknown_face",
                    "state_topic": self.topics.node(node_id, "unknown_face"),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "icon": "mdi:face-recognition",
                },
            ),
            (
                self.topics.discovery("binary_sensor", key, "online"),
                {
                    **common,
                    "name": "Online",
                    "unique_id": f"lookout_{node_id}_online",
                    "state_topic": status,
                    "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "device_class": "connectivity",
                    "json_attributes_topic": status,
                },
            ),
            (
                self.topics.discovery("sensor", key, "fps"),
                {
                    **common,
                    "name": "FPS",
                    "unique_id": f"lookout_{node_id}_fps",
                    "state_topic": status,
                    "value_template": "{{ value_json.fps if value_json.fps is not none else 0 }}",
                    "unit_of_measurement": "fps",
                    "state_class": "measurement",
                    "icon": "mdi:speedometer",
                },
            ),
        ]

    def _count_config(self, node_id: str, name: str, label: str) -> tuple[str, dict[str, Any]]:
        slug = _slug(label)
        return (
            self.topics.discovery("sensor", f"lookout_{node_id}", f"count_{slug}"),
            {
                **self._availability(),
                "device": self._node_device(node_id, name),
                "name": f"{label.capitalize()} count",
                "unique_id": f"lookout_{node_id}_count_{slug}",
                "state_topic": self.topics.node(node_id, f"count/{slug}"),
                "unit_of_measurement": label,
                "state_class": "measurement",
                "icon": "mdi:counter",
            },
        )

    def _person_config(self, person_id: str, name: str) -> tuple[str, dict[str, Any]]:
        topic = self.topics.person_seen(person_id)
        return (
            self.topics.discovery("sensor", f"lookout_person_{person_id}", "seen_at"),
            {
                **self._availability(),
                "device": {
                    "identifiers": [f"lookout_person_{_slug(person_id)}"],
                    "name": f"{name} (Lookout)",
                    "manufacturer": MANUFACTURER,
                    "model": "enrolled person",
                },
                "name": "Seen at",
                "unique_id": f"lookout_person_{person_id}_seen_at",
                "state_topic": topic,
                "value_template": "{{ value_json.time }}",
                "device_class": "timestamp",
                "json_attributes_topic": topic,
                "icon": "mdi:account-eye",
            },
        )
