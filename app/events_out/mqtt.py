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
    lookout/person/<person_id>/seen         {time, name, similarity, node_id, node_name,
                                            job_id} (retained)
    lookout/label/<label>                   {count, time, node_id, job_id} of the latest sighting

Home Assistant discovery (`mqtt.discovery`, prefix `mqtt.discovery_prefix`), retained:
per node a device with binary sensors "person", "unknown face", "online" and sensors "fps"
and one count per object class it has reported; per enrolled person a "seen at" timestamp
sensor and a "last seen by" sensor (the node's name). Configs are refreshed every
`mqtt.status_interval_s` and on (re)connect; those of deleted nodes and people are cleared.
Each refresh says `online` again (the last will of a bridge replica that died, or of this
bridge's own lost connection, would otherwise leave every entity unavailable) and turns the
states of a node gone offline to OFF and 0, once.

An entry is acked only once all its messages are PUBACKed: while the broker is down nothing
is acked, and after the reconnect the bridge publishes its unacked entries first, in order.
Entries older than `mqtt.max_event_age_s` by then update the retained states only: their
events are not published, so that no automation acts on them late.
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
    """What this bridge has announced for a node: its object classes with a count sensor, the
    count topics on the broker (those it published, and those found there at connect), and
    whether its states were turned off since it went offline."""

    name: str
    labels: set[str] = field(default_factory=set)
    count_topics: set[str] = field(default_factory=set)  # the <label> levels, slugged
    cleared: bool = False


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
        self.tls_context = self._tls()
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
        self.stale_skipped = 0  # entries whose events were too old to publish, not yet logged

    def _tls(self) -> ssl.SSLContext | None:
        """For mqtts://: the system's CAs, or LOOKOUT_MQTT__TLS_CA_FILE's; a client certificate
        if configured. A file that cannot be read stops the bridge at start, saying which."""
        if not self.broker.tls:
            return None
        ca = self.config.tls_ca_file
        try:
            context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
            if self.config.tls_cert_file is not None:
                context.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"LOOKOUT_MQTT__TLS_CA_FILE / __TLS_CERT_FILE / __TLS_KEY_FILE: {exc}"
            ) from exc
        return context

    def _client(self) -> aiomqtt.Client:
        tls = self.tls_context
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
        self.configs_sent.clear()
        await self._recall_retained(client)
        await self.refresh(client)  # says `online`
        consume = asyncio.create_task(self._consume(client, stop))
        refresh = asyncio.create_task(self._refresh_loop(client, stop))
        try:
            done, _ = await asyncio.wait({consume, refresh}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((consume, refresh))
        for task in done:
            task.result()  # an MqttError ends this connection; run() reconnects

    async def _recall_retained(self, client: aiomqtt.Client) -> None:
        """Read back what an earlier bridge left retained on the broker: the people with a seen
        topic (refresh clears those of people deleted since), each node's status and count
        topics (counts are set to 0 with the node's next result, or when it goes offline,
        though this bridge has not seen those classes yet; a node revoked since is cleared by
        refresh), and the discovery configs that name this bridge's availability topic (those
        of people and nodes gone since are removed by refresh; another Lookout's on the same
        broker are left alone). The broker sends retained messages on subscribe;
        RECALL_QUIET_S without one ends it."""
        wildcards = [
            self.topics.person_seen("+"),
            self.topics.node("+", "status"),
            self.topics.node("+", "count/+"),
        ]
        if self.config.discovery:
            wildcards.append(f"{self.topics.discovery_prefix}/+/+/+/config")
        for wildcard in wildcards:
            await client.subscribe(wildcard, qos=QOS)
        try:
            while True:
                async with asyncio.timeout(RECALL_QUIET_S):
                    message = await anext(client.messages)
                parts = str(message.topic).split("/")
                if not message.retain or not message.payload or len(parts) < 3:
                    continue
                with contextlib.suppress(ValueError):
                    if str(message.topic).startswith(self.topics.discovery_prefix + "/"):
                        self._recall_config(str(message.topic), message.payload)
                    elif parts[-1] == "seen":
                        self.seen_people.add(str(uuid.UUID(parts[-2])))
                    elif parts[-1] == "status":
                        node_id = str(uuid.UUID(parts[-2]))
                        self.nodes.setdefault(node_id, NodeMemory(name=node_id))
                    elif parts[-2] == "count":
                        node_id = str(uuid.UUID(parts[-3]))
                        memory = self.nodes.setdefault(node_id, NodeMemory(name=node_id))
                        memory.count_topics.add(parts[-1])
        except TimeoutError:
            pass
        finally:
            for wildcard in wildcards:
                await client.unsubscribe(wildcard)

    def _recall_config(self, topic: str, payload: Any) -> None:
        """A retained discovery config: this bridge's instance's (its entities are available on
        this bridge's availability topic) is remembered, so that refresh removes it once its
        node or person is gone; a node's count sensor brings its label back (refresh keeps it,
        as the bridge that published it would have)."""
        try:
            config = json.loads(payload)
        except (TypeError, ValueError):
            return
        if not isinstance(config, dict):
            return
        if config.get("availability_topic") != self.topics.availability:
            return  # another Lookout's, or another integration's
        self.discovery_topics.add(topic)
        state = str(config.get("state_topic", "")).split("/")
        label = config.get("unit_of_measurement")
        if len(state) >= 4 and state[-2] == "count" and isinstance(label, str):
            node_id = str(uuid.UUID(state[-3]))
            self.nodes.setdefault(node_id, NodeMemory(name=node_id)).labels.add(label)

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
        live = self._is_live(entry_id)
        for event in outbound:
            node = event.get("node")
            if live:
                await self._publish(client, self.topics.event(event["type"]), event)
            if live and node is not None and node.get("id"):
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
            elif event["type"] == "object.detected" and live:
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

    def _is_live(self, entry_id: streams.StreamId) -> bool:
        """Whether the entry is recent enough to publish as events (its stream id is the
        firehose's clock, in ms)."""
        if self.config.max_event_age_s == 0:
            return True
        age_s = time.time() - int(entry_id.split(b"-", 1)[0]) / 1000
        if age_s > self.config.max_event_age_s:
            self.stale_skipped += 1
            return False
        if self.stale_skipped:  # one line for a backlog, once the bridge has caught up
            log.info(
                "mqtt_stale_events_skipped",
                entries=self.stale_skipped,
                max_event_age_s=self.config.max_event_age_s,
            )
            self.stale_skipped = 0
        return True

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
            memory = self.nodes.setdefault(
                node_id, NodeMemory(name=str(node.get("name") or node_id))
            )
            for label in sorted(set(counts) - memory.labels):
                memory.labels.add(label)
                memory.count_topics.add(_slug(label))
                if self.config.discovery:
                    await self._publish_config(
                        client, *self._count_config(node_id, memory.name, label)
                    )
            await self._publish_states(
                client,
                node_id,
                memory,
                person=seen_person,
                unknown=unknown,
                counts={_slug(label): count for label, count in counts.items()},
            )
            memory.cleared = False
        if any(e["type"].startswith("node.") for e in outbound):
            self.refresh_now.set()  # the node's status topic, from Postgres

    async def _publish_states(
        self,
        client: aiomqtt.Client,
        node_id: str,
        memory: NodeMemory,
        *,
        person: bool,
        unknown: bool,
        counts: dict[str, int],
    ) -> None:
        """A node's retained Home Assistant states: person, unknown face, and a count on every
        count topic it has (`counts` by topic level; the others 0)."""
        await self._publish(
            client, self.topics.node(node_id, "person"), "ON" if person else "OFF", retain=True
        )
        await self._publish(
            client,
            self.topics.node(node_id, "unknown_face"),
            "ON" if unknown else "OFF",
            retain=True,
        )
        for level in sorted(memory.count_topics):
            await self._publish(
                client,
                self.topics.node(node_id, f"count/{level}"),
                str(counts.get(level, 0)),
                retain=True,
            )

    # --- status and discovery ------------------------------------------------------------

    async def _refresh_loop(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh_now.wait(), self.config.status_interval_s)
            self.refresh_now.clear()
            if not stop.is_set():
                await self.refresh(client)

    async def refresh(self, client: aiomqtt.Client) -> None:
        """`online`, node status topics and every discovery config, from Postgres."""
        await client.publish(self.topics.availability, "online", qos=QOS, retain=True)
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
        # A node revoked (or deleted) since: its retained states go from the broker, as its
        # discovery configs do below.
        for gone in sorted(set(self.nodes) - {str(n.id) for n in nodes}):
            memory = self.nodes.pop(gone)
            leaves = ["status", "person", "unknown_face"]
            leaves += [f"count/{level}" for level in sorted(memory.count_topics)]
            for leaf in leaves:
                await self._publish(client, self.topics.node(gone, leaf), "", retain=True)
        configs: list[tuple[str, dict[str, Any]]] = []
        for node in nodes:
            node_id = str(node.id)
            memory = self.nodes.setdefault(node_id, NodeMemory(name=node.name))
            memory.name = node.name
            online = is_online(node, offline_after_s=self.settings.nodes.offline_after_s)
            if not online and not memory.cleared:
                # A node gone offline sees nothing: its states say so (once), rather than its
                # last result's "person: ON" for ever.
                await self._publish_states(
                    client, node_id, memory, person=False, unknown=False, counts={}
                )
                memory.cleared = True
            await self._publish(
                client,
                self.topics.node(node_id, "status"),
                {
                    "name": node.name,
                    "online": online,
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
        for person in people:
            if person.name:
                configs.extend(self._person_configs(str(person.id), person.name))
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

    def _person_configs(self, person_id: str, name: str) -> list[tuple[str, dict[str, Any]]]:
        """Two sensors on the person's seen topic: when (a timestamp) and where (the node's
        name, as Double Take's per-person camera sensor: "Alice: Front door" with no template
        in Home Assistant)."""
        topic = self.topics.person_seen(person_id)
        common = {
            **self._availability(),
            "device": {
                "identifiers": [f"lookout_person_{_slug(person_id)}"],
                "name": f"{name} (Lookout)",
                "manufacturer": MANUFACTURER,
                "model": "enrolled person",
            },
            "state_topic": topic,
            "json_attributes_topic": topic,
        }
        key = f"lookout_person_{person_id}"
        return [
            (
                self.topics.discovery("sensor", key, "seen_at"),
                {
                    **common,
                    "name": "Seen at",
                    "unique_id": f"{key}_seen_at",
                    "value_template": "{{ value_json.time }}",
                    "device_class": "timestamp",
                    "icon": "mdi:account-eye",
                },
            ),
            (
                self.topics.discovery("sensor", key, "seen_by"),
                {
                    **common,
                    "name": "Last seen by",
                    "unique_id": f"{key}_seen_by",
                    # An upload has no node: its sighting reads "upload".
                    "value_template": "{{ value_json.node_name or 'upload' }}",
                    "icon": "mdi:cctv",
                },
            ),
        ]
