"""Who is this? Unknown faces grouped into unnamed people, named, merged, corrected (issue 16);
people listed with their faces (issue 12, bug 3). API + a real worker + Postgres/pgvector +
the real models on ../shared/images/faces; the clustering pass is run by the test."""

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator

import cv2
import numpy as np
import pytest
from sqlalchemy import text

from app import streams
from app.gallery.clusters import cluster_loop, cluster_pass
from app.gallery.people import compact_tallies
from app.security import Scope
from tests.conftest import SHARED_IMAGES, bearer, node_token

TRAIN = SHARED_IMAGES / "faces" / "train"
TEST = SHARED_IMAGES / "faces" / "test"

# Photos of people nobody enrolled. Obama: 3 faces (two portraits and the right-hand face of
# obama_and_biden.jpg); Biden: 3 (two portraits, the left-hand face there); three more people
# with 2 photos each; a child in the background of obama_and_biden.jpg.
OBAMA = ["train/obama/obama.jpg", "train/obama/obama2.jpg"]
BIDEN = ["train/biden/biden.jpg", "train/biden/biden2.jpg"]
OTHERS = [
    "train/alex_lacamoire/img1.jpg",
    "train/kit_harington/john1.jpeg",
    "train/kit_harington/john2.jpeg",
    "train/rose_leslie/img1.jpg",
    "train/rose_leslie/img2.jpg",
]
BOTH = "test/obama_and_biden.jpg"


@pytest.fixture
async def worker(make_consumer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(make_consumer(block_ms=50).run(stop))
    yield
    stop.set()
    await task


async def upload(client, relative: str, tasks: str = "faces") -> dict:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/images?wait=30",
        files={
            "image": (
                relative.rsplit("/", 1)[-1],
                (SHARED_IMAGES / "faces" / relative).read_bytes(),
            )
        },
        data={"tasks": tasks},
    )
    assert response.status_code in (200, 201), response.text
    job = response.json()
    assert job["status"] == "done", job
    return job  # type: ignore[no-any-return]


def face_ids(job: dict) -> list[int]:  # type: ignore[type-arg]
    return [d["id"] for d in job["detections"] if d["kind"] == "face"]


def by_x(job: dict) -> list[int]:  # type: ignore[type-arg]
    """The faces of a job, left to right, largest two first then the rest."""
    faces = [d for d in job["detections"] if d["kind"] == "face"]
    big = sorted(faces, key=lambda d: d["box"][2] - d["box"][0], reverse=True)
    return [d["id"] for d in sorted(big[:2], key=lambda d: d["box"][0])] + [
        d["id"] for d in big[2:]
    ]


async def identify(client, relative: str) -> list[dict]:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/identify",
        files={"image": ("q.jpg", (SHARED_IMAGES / "faces" / relative).read_bytes(), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    return response.json()["faces"]  # type: ignore[no-any-return]


def largest_name(faces: list[dict]) -> str | None:  # type: ignore[type-arg]
    face = max(faces, key=lambda f: f["box"][2] - f["box"][0])
    return face["identity"]["name"] if face["identity"] else None


async def unnamed(client) -> list[dict]:  # type: ignore[no-untyped-def]
    response = await client.get("/v1/people", params={"named": "false"})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def members(person: dict) -> set[int]:  # type: ignore[type-arg]
    return {s["face_id"] for s in person["sightings"]}


async def scalar(engine, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql), params)).scalar_one())


async def scalar_text(engine, sql: str) -> str:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return str((await connection.execute(text(sql))).scalar_one())


async def upload_everyone(client) -> tuple[set[int], set[int], set[int]]:  # type: ignore[no-untyped-def]
    obama = {i for p in OBAMA for i in face_ids(await upload(client, p))}
    biden = {i for p in BIDEN for i in face_ids(await upload(client, p))}
    both = by_x(await upload(client, BOTH))
    biden.add(both[0])
    obama.add(both[1])
    others = {i for p in OTHERS for i in face_ids(await upload(client, p))} | set(both[2:])
    return obama, biden, others


# --- issue 12, bug 3: the list carries the faces the dashboard draws -----------------------------


async def test_people_list_carries_each_person_s_faces_with_thumbnails(client, worker):
    person = (await client.post("/v1/people", json={"name": "obama"})).json()
    photos = [
        ("images", (p.name, p.read_bytes(), "image/jpeg"))
        for p in sorted((TRAIN / "obama").iterdir())
    ]
    assert (await client.post(f"/v1/people/{person['id']}/faces", files=photos)).status_code == 200

    [listed] = (await client.get("/v1/people")).json()["items"]
    assert listed["face_count"] == 2 and len(listed["faces"]) == 2
    face = listed["faces"][0]
    thumbnail = await client.get(face["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    crop = cv2.imdecode(np.frombuffer(thumbnail.content, np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (112, 112, 3)  # the embedder's aligned input
    # The face the list names can be deleted (what the dashboard's × does).
    deleted = await client.delete(f"/v1/people/{person['id']}/faces/{face['id']}")
    assert deleted.status_code == 204
    [listed] = (await client.get("/v1/people")).json()["items"]
    assert [f["id"] for f in listed["faces"]] == [listed["faces"][0]["id"]] != [face["id"]]
    assert (await client.get(face["thumbnail_url"])).status_code == 404


# --- clustering ----------------------------------------------------------------------------------


async def test_unknown_faces_form_unnamed_people_one_per_person(
    client, worker, settings, sessionmaker, engine
):
    obama, biden, others = await upload_everyone(client)
    report = await cluster_pass(settings, sessionmaker)
    assert report.faces_seen == len(obama | biden | others)

    clusters = await unnamed(client)
    assert len(clusters) == 2, clusters
    biggest = [members(c) for c in clusters]
    assert obama in biggest and biden in biggest  # pure and complete
    for cluster in clusters:
        assert cluster["named"] is False and cluster["name"] is None
        assert cluster["sighting_count"] == 3 and cluster["face_count"] == 0
        assert cluster["first_seen"] <= cluster["last_seen"]
        assert cluster["sources"] == [{"node_id": None, "node_name": None, "faces": 3}]
        for sighting in cluster["sightings"]:
            assert (await client.get(sighting["thumbnail_url"])).status_code == 200
    # The others (two photos each, below core_faces=3) wait unclustered: in no person.
    assert await scalar(
        engine, "SELECT count(*) FROM unknown_faces WHERE person_id IS NULL"
    ) == len(others)

    # Idempotent: a second pass takes nothing and changes nothing.
    again = await cluster_pass(settings, sessionmaker)
    assert again.faces_seen == 0
    assert [members(c) for c in await unnamed(client)] == biggest


async def test_unnamed_people_are_listed_biggest_first_a_page_at_a_time(
    client, worker, settings, sessionmaker
):
    """?named=false: most sightings first (ranked by the sighting tallies, migration 0021),
    paged by its cursor, people left with one face not listed."""
    obama, biden, _ = await upload_everyone(client)
    await cluster_pass(settings, sessionmaker)
    ids = {frozenset(members(c)): c["id"] for c in await unnamed(client)}
    obama_id, biden_id = ids[frozenset(obama)], ids[frozenset(biden)]
    # Biden's first face to Obama's person: 4 against 2.
    moved = await client.post(f"/v1/faces/{min(biden)}/move", json={"person_id": obama_id})
    assert moved.status_code == 200, moved.text

    first = (await client.get("/v1/people", params={"named": "false", "limit": 1})).json()
    assert [(p["id"], p["sighting_count"]) for p in first["items"]] == [(obama_id, 4)]
    second = (
        await client.get(
            "/v1/people", params={"named": "false", "limit": 1, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [(p["id"], p["sighting_count"]) for p in second["items"]] == [(biden_id, 2)]
    assert second["next_cursor"] is None

    # Down to one face, below clusters.min_person_faces (2): Biden is no longer listed.
    moved = await client.post(f"/v1/faces/{max(biden)}/move", json={"person_id": obama_id})
    assert moved.status_code == 200, moved.text
    listed = [(p["id"], p["sighting_count"]) for p in await unnamed(client)]
    assert listed == [(obama_id, 5)]


# Each (person, node)'s sightings: by the tallies (migration 0021), people gone left out; and
# counted from the sightings themselves.
TALLIED = (
    "SELECT t.person_id::text, t.node_id::text, sum(t.sightings) FROM sighting_tallies t"
    " JOIN people p ON p.id = t.person_id GROUP BY 1, 2 HAVING sum(t.sightings) <> 0"
)
COUNTED = (
    "SELECT person_id::text, node_id::text, count(*) FROM unknown_faces"
    " WHERE person_id IS NOT NULL GROUP BY 1, 2"
)


async def by_person_and_node(engine, sql: str) -> dict[tuple[str, str | None], int]:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return {(p, n): int(c) for p, n, c in (await connection.execute(text(sql))).all()}


async def tallied(engine) -> dict[tuple[str, str | None], int]:  # type: ignore[no-untyped-def]
    return await by_person_and_node(engine, TALLIED)


async def counted(engine) -> dict[tuple[str, str | None], int]:  # type: ignore[no-untyped-def]
    return await by_person_and_node(engine, COUNTED)


async def test_sighting_tallies_follow_every_change_to_the_sightings(
    client, worker, settings, sessionmaker, engine
):
    """The people pages read counts and sources from tallies kept by triggers: they must agree
    with the sightings after each way a sighting joins, moves or goes (clustering, a move by
    hand, a merge, a forgotten face, a deleted job's cascade, a deleted person), and folding
    them (the maintenance pass) must keep the sums and drop the people gone."""
    obama, biden, _ = await upload_everyone(client)
    await cluster_pass(settings, sessionmaker)
    ids = {frozenset(members(c)): c["id"] for c in await unnamed(client)}
    obama_id, biden_id = ids[frozenset(obama)], ids[frozenset(biden)]
    assert await tallied(engine) == await counted(engine)
    assert sum((await tallied(engine)).values()) == 6

    def moved(face_id: int, person_id: str | None) -> object:
        return client.post(f"/v1/faces/{face_id}/move", json={"person_id": person_id})

    assert (await moved(min(biden), obama_id)).status_code == 200
    assert (await moved(max(obama), None)).status_code == 200
    assert await tallied(engine) == await counted(engine)
    assert (await client.delete(f"/v1/faces/{min(obama)}")).status_code == 204
    assert await tallied(engine) == await counted(engine)
    merged = await client.post(f"/v1/people/{obama_id}/merge", json={"person_ids": [biden_id]})
    assert merged.status_code == 200, merged.text
    tallies = await tallied(engine)
    assert tallies == await counted(engine)
    [(person, count)] = [(p, c) for (p, _), c in tallies.items()]
    assert (person, count) == (obama_id, merged.json()["sighting_count"])

    # A deleted job takes its sightings along (a cascade: jobs → unknown_faces).
    job_id = await scalar_text(
        engine, "SELECT job_id::text FROM unknown_faces WHERE person_id IS NOT NULL LIMIT 1"
    )
    before_job = sum((await counted(engine)).values())
    assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 204
    assert sum((await counted(engine)).values()) < before_job
    assert await tallied(engine) == await counted(engine)
    assert (await client.get(f"/v1/people/{obama_id}")).json()["sighting_count"] == sum(
        (await counted(engine)).values()
    )

    # Folded: one row a person and source, the sums kept; a deleted person's rows dropped.
    before = await tallied(engine)
    async with sessionmaker.begin() as session:
        await compact_tallies(session)
    assert await tallied(engine) == before
    assert await scalar(engine, "SELECT count(*) FROM sighting_tallies") == len(before)
    assert (await client.delete(f"/v1/people/{obama_id}")).status_code == 204
    async with sessionmaker.begin() as session:
        await compact_tallies(session)
    assert await scalar(engine, "SELECT count(*) FROM sighting_tallies") == 0


async def test_the_loop_places_each_job_s_faces_as_its_result_reaches_the_firehose(
    client, worker, settings, sessionmaker, engine, redis
):
    """The clustering reads results through its own firehose group: it polled every 10 s with
    a scan of every face embedding (1.1 s of Postgres at a million faces, each time). A sweep
    at its start takes the faces no result announced (trimmed before it read them)."""
    await streams.ensure_firehose_groups(redis)  # as the API does at start
    # Biden's photos, whose results the clustering never reads: taken by the sweep at its start.
    biden = {i for p in BIDEN for i in face_ids(await upload(client, p))}
    lost = await streams.read_firehose_group(
        redis, streams.CLUSTERS_GROUP, "elsewhere", count=100, block_ms=None, pending=False
    )
    assert lost
    await streams.ack_firehose(redis, streams.CLUSTERS_GROUP, [entry_id for entry_id, _ in lost])

    async def until(check) -> None:  # type: ignore[no-untyped-def]
        for _ in range(300):
            if await check():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the clustering loop did not get there in 30 s")

    async def biden_seen() -> bool:
        return await scalar(engine, "SELECT count(*) FROM unknown_faces") == len(biden)

    hourly = settings.model_copy(
        update={"clusters": settings.clusters.model_copy(update={"sweep_interval_s": 3600.0})}
    )
    loop = asyncio.create_task(cluster_loop(hourly, sessionmaker, redis))
    try:
        await until(biden_seen)
        assert await unnamed(client) == []  # two faces, below core_faces: noise for now

        # Then each result as it comes, with no sweep: Obama's three faces make a person, and
        # the photo of both gives Biden his third face, which makes his two a person too.
        obama = {i for p in OBAMA for i in face_ids(await upload(client, p))}
        both = by_x(await upload(client, BOTH))
        biden.add(both[0])
        obama.add(both[1])

        async def two_people() -> bool:
            return sorted(map(members, await unnamed(client)), key=min) == sorted(
                [obama, biden], key=min
            )

        await until(two_people)
        pending = await redis.xpending(streams.FIREHOSE, streams.CLUSTERS_GROUP)
        assert pending["pending"] == 0  # acked once placed
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_batch_that_fails_but_not_for_an_outage_does_not_stop_the_loop(
    client, worker, settings, sessionmaker, engine, redis
):
    """Postgres refuses one job's faces (a trigger: an error that is not an outage). The loop
    reads its own unacked entries first and retried a failing sweep every second: one such job
    stopped all clustering. Now the failure is logged, the entry acked, the next job placed; a
    later sweep takes the refused job's face once Postgres takes it."""
    await streams.ensure_firehose_groups(redis)
    refused = await upload(client, OBAMA[0])
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE test_refused (job_id uuid)"))
        await connection.execute(
            text("INSERT INTO test_refused VALUES (CAST(:job AS uuid))"), {"job": refused["id"]}
        )
        await connection.execute(
            text(
                "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.job_id IN (SELECT job_id FROM test_refused) THEN "
                "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON unknown_faces "
                "FOR EACH ROW EXECUTE FUNCTION test_refuse()"
            )
        )
    hourly = settings.model_copy(
        update={"clusters": settings.clusters.model_copy(update={"sweep_interval_s": 3600.0})}
    )
    loop = asyncio.create_task(cluster_loop(hourly, sessionmaker, redis))
    try:
        taken = await upload(client, OBAMA[1])  # after the failed sweep and the failed entry

        async def placed() -> bool:
            return (
                await scalar(
                    engine,
                    "SELECT count(*) FROM unknown_faces WHERE job_id = :job",
                    job=uuid.UUID(taken["id"]),
                )
                == 1
            )

        for _ in range(300):
            if await placed():
                break
            await asyncio.sleep(0.1)
        assert await placed(), "the loop stopped at the refused job"
        assert await scalar(engine, "SELECT count(*) FROM unknown_faces") == 1
        assert (await redis.xpending(streams.FIREHOSE, streams.CLUSTERS_GROUP))["pending"] == 0
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER test_refuse ON unknown_faces"))
            await connection.execute(text("DROP FUNCTION test_refuse()"))
            await connection.execute(text("DROP TABLE test_refused"))
    assert (await cluster_pass(settings, sessionmaker)).faces_seen == 1  # the refused job's


async def test_a_pass_over_some_jobs_takes_only_their_faces(client, worker, settings, sessionmaker):
    """What the loop runs for the jobs of the results it read: their faces, not every face."""
    announced = await upload(client, OBAMA[0])
    other = await upload(client, OBAMA[1])
    report = await cluster_pass(settings, sessionmaker, [uuid.UUID(announced["id"])])
    assert report.faces_seen == len(face_ids(announced)) == 1
    assert (await cluster_pass(settings, sessionmaker)).faces_seen == len(face_ids(other)) == 1


async def test_naming_merging_and_moving_change_what_identify_answers(
    client, worker, settings, sessionmaker
):
    obama, biden, _ = await upload_everyone(client)
    await cluster_pass(settings, sessionmaker)
    clusters = {frozenset(members(c)): c["id"] for c in await unnamed(client)}
    obama_id, biden_id = clusters[frozenset(obama)], clusters[frozenset(biden)]

    assert largest_name(await identify(client, "test/obama1.jpg")) is None
    named = await client.patch(f"/v1/people/{obama_id}", json={"name": "Barack"})
    assert named.status_code == 200, named.text
    assert named.json()["named"] and named.json()["face_count"] >= 2
    assert all(f["thumbnail_url"] for f in named.json()["faces"])
    faces = await identify(client, "test/obama1.jpg")
    face = max(faces, key=lambda f: f["box"][2] - f["box"][0])
    assert face["identity"]["name"] == "Barack"
    assert face["threshold"] == settings.gallery.match_threshold
    assert face["similarity"] >= face["threshold"]
    assert face["runner_up"] is None  # nobody else is named yet
    assert (await unnamed(client))[0]["id"] == biden_id  # no longer among the unnamed

    # Merge Biden's cluster into Barack: Biden's photos now identify as Barack.
    assert largest_name(await identify(client, BIDEN[0])) is None
    merged = await client.post(f"/v1/people/{obama_id}/merge", json={"person_ids": [biden_id]})
    assert merged.status_code == 200, merged.text
    assert members(merged.json()) == obama | biden
    assert (await client.get(f"/v1/people/{biden_id}")).status_code == 404
    assert largest_name(await identify(client, BIDEN[0])) == "Barack"

    # Not this person: Biden's faces go back to unknown, and identify stops naming him Barack.
    for face_id in sorted(biden):
        moved = await client.post(f"/v1/faces/{face_id}/move", json={"person_id": None})
        assert moved.status_code == 200, moved.text
        assert moved.json() == {"face_id": face_id, "person_id": None, "enrolled": False}
    assert largest_name(await identify(client, BIDEN[0])) is None
    # Moved by hand: the next pass leaves them where they were put (it adds the unknown faces
    # of the identify calls above: obama1.jpg's, taken before Barack had a name, joins him).
    await cluster_pass(settings, sessionmaker)
    barack = members((await client.get(f"/v1/people/{obama_id}")).json())
    assert obama < barack and not barack & biden

    # Move one into a new named person: identify follows it, with Barack as the runner-up.
    joe = (await client.post("/v1/people", json={"name": "Joe"})).json()
    first = min(biden)
    moved = await client.post(f"/v1/faces/{first}/move", json={"person_id": joe["id"]})
    assert moved.json()["enrolled"] is True
    faces = await identify(client, BIDEN[0])
    face = max(faces, key=lambda f: f["box"][2] - f["box"][0])
    assert face["identity"]["name"] == "Joe"


async def test_names_are_unique_per_key_and_a_face_is_promoted_once(client, worker, make_key, app):
    import httpx

    assert (await client.post("/v1/people", json={"name": "Obama"})).status_code == 201
    clash = await client.post("/v1/people", json={"name": "obama "})
    assert clash.status_code == 409 and clash.json()["error"] == "conflict"
    other = (await client.post("/v1/people", json={"name": "Someone"})).json()
    renamed = await client.patch(f"/v1/people/{other['id']}", json={"name": "OBAMA"})
    assert renamed.status_code == 409
    # Another key may have its own Obama.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://lookout.test",
        headers={"X-API-Key": await make_key("other")},
    ) as second:
        assert (await second.post("/v1/people", json={"name": "Obama"})).status_code == 201

    job = await upload(client, "test/obama1.jpg")
    [face_id] = face_ids(job)
    first = await client.post(f"/v1/faces/{face_id}/promote", json={"name": "Barack"})
    assert first.status_code == 200, first.text
    second_time = await client.post(f"/v1/faces/{face_id}/promote", json={"person_id": other["id"]})
    assert second_time.status_code == 409, second_time.text


async def test_search_answers_only_faces_above_min_similarity(client, worker):
    for path in [*OBAMA, *BIDEN]:
        await upload(client, path)
    response = await client.post(
        "/v1/faces/search",
        files={"image": ("q.jpg", (TEST / "obama1.jpg").read_bytes(), "image/jpeg")},
    )
    body = response.json()
    assert body["min_similarity"] == body["threshold"]
    assert len(body["results"]) == 2  # the two Obama photos, not Biden's
    loose = await client.post(
        "/v1/faces/search?min_similarity=-1",
        files={"image": ("q.jpg", (TEST / "obama1.jpg").read_bytes(), "image/jpeg")},
    )
    # Everyone (Biden too), but not the first search's own face: gallery calls are questions
    # about a photo, not sightings (app.models.JobPurpose).
    assert len(loose.json()["results"]) == 4


async def test_an_ignored_cluster_is_hidden_and_keeps_its_faces(
    client, worker, settings, sessionmaker
):
    for path in OBAMA:
        await upload(client, path)
    await upload(client, BOTH)
    await cluster_pass(settings, sessionmaker)
    [cluster] = [c for c in await unnamed(client) if len(c["sightings"]) == 3]
    ignored = await client.patch(f"/v1/people/{cluster['id']}", json={"ignored": True})
    assert ignored.status_code == 200 and ignored.json()["ignored"] is True
    assert cluster["id"] not in {c["id"] for c in await unnamed(client)}
    hidden = (await client.get("/v1/people?named=false&ignored=true")).json()["items"]
    assert [c["id"] for c in hidden] == [cluster["id"]]
    # A new sighting joins the ignored cluster instead of starting a new one.
    await upload(client, "test/obama1.jpg")
    await cluster_pass(settings, sessionmaker)
    hidden = (await client.get("/v1/people?named=false&ignored=true")).json()["items"]
    assert hidden[0]["sighting_count"] == 4


async def test_identify_calls_are_sightings_but_comparisons_are_not_clustered(
    client, worker, settings, sessionmaker
):
    """Double Take sends every camera snapshot to recognize: the unknown faces of identify
    calls are clustered. Verify and search compare photos the caller holds: not sightings."""
    for _ in range(2):
        for a, b in (BIDEN, OBAMA):
            verified = await client.post(
                "/v1/verify",
                files={
                    "image_a": ("a.jpg", (SHARED_IMAGES / "faces" / a).read_bytes()),
                    "image_b": ("b.jpg", (SHARED_IMAGES / "faces" / b).read_bytes()),
                },
            )
            assert verified.status_code == 200, verified.text
        searched = await client.post(
            "/v1/faces/search",
            files={"image": ("q.jpg", (SHARED_IMAGES / "faces" / BIDEN[0]).read_bytes())},
        )
        assert searched.status_code == 200, searched.text
    assert (await cluster_pass(settings, sessionmaker)).faces_seen == 0
    assert await unnamed(client) == []

    identified = [await identify(client, path) for path in [*OBAMA, BOTH]]
    report = await cluster_pass(settings, sessionmaker)
    assert report.faces_seen == sum(len(faces) for faces in identified) == 5
    [obama] = await unnamed(client)  # his two portraits and his face in obama_and_biden.jpg
    assert obama["sighting_count"] == 3


# --- node policy ---------------------------------------------------------------------------


async def test_node_faces_cluster_but_keep_crops_only_where_the_policy_allows(
    client, worker, settings, sessionmaker, make_node, engine
):
    quiet = await make_node("cam-quiet")
    keeper = await make_node("cam-keeper")
    patched = await client.patch(f"/v1/nodes/{keeper.id}", json={"store_face_crops": True})
    assert patched.status_code == 200 and patched.json()["store_face_crops"] is True

    async def frame(node, relative: str) -> int:  # type: ignore[no-untyped-def]
        headers = {**bearer(node_token(settings, node.id)), "content-type": "image/jpeg"}
        response = await client.post(
            "/v1/nodes/me/frames?wait=30",
            content=(SHARED_IMAGES / "faces" / relative).read_bytes(),
            headers=headers,
        )
        assert response.status_code == 200, response.text
        [face] = [d for d in response.json()["detections"] if d["kind"] == "face"]
        return int(face["id"])

    quiet_faces = [await frame(quiet, p) for p in OBAMA]
    kept = await frame(keeper, "test/obama1.jpg")
    await cluster_pass(settings, sessionmaker)

    [cluster] = await unnamed(client)
    assert members(cluster) == {*quiet_faces, kept}
    pictures = {s["face_id"]: s["thumbnail_url"] for s in cluster["sightings"]}
    assert pictures[kept] is not None
    assert all(pictures[f] is None for f in quiet_faces)
    assert {(s["node_name"], s["faces"]) for s in cluster["sources"]} == {
        ("cam-quiet", 2),
        ("cam-keeper", 1),
    }
    for face_id in quiet_faces:
        assert (await client.get(f"/v1/faces/{face_id}/thumbnail")).status_code == 404
    assert await scalar(engine, "SELECT count(*) FROM face_crops") == 1


async def test_a_frame_queued_before_its_node_allowed_crops_keeps_none(
    client, settings, make_node, make_consumer, engine
):
    """The policy applies from the node's next frame: a frame accepted under "no crops" and
    still queued when crops were allowed kept its crops (the policy was read when its job
    finished). Frames after the change keep theirs."""
    node = await make_node("cam-late")
    headers = {**bearer(node_token(settings, node.id)), "content-type": "image/jpeg"}
    photo = (SHARED_IMAGES / "faces" / "test" / "obama1.jpg").read_bytes()

    async def queue_frame() -> str:
        response = await client.post("/v1/nodes/me/frames", content=photo, headers=headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async def crops_of(job_id: str) -> int:
        return await scalar(
            engine, f"SELECT count(*) FROM face_crops WHERE job_id = '{uuid.UUID(job_id)}'"
        )

    before = await queue_frame()
    allowed = await client.patch(f"/v1/nodes/{node.id}", json={"store_face_crops": True})
    assert allowed.status_code == 200 and allowed.json()["store_face_crops"] is True
    after = await queue_frame()
    await make_consumer().run(burst=True)  # both run now, under "crops allowed"
    assert await crops_of(before) == 0
    assert await crops_of(after) == 1
    # The other way: accepted under "crops", refused before it ran: none either.
    waiting = await queue_frame()
    refused = await client.patch(f"/v1/nodes/{node.id}", json={"store_face_crops": False})
    assert refused.status_code == 200
    await make_consumer().run(burst=True)
    assert await crops_of(waiting) == 0


# --- privacy -------------------------------------------------------------------------------


def needles(blob: bytes) -> list[str]:
    middle = (len(blob) // 2) // 3 * 3
    chunk = blob[middle : middle + 48]
    return [chunk.hex(), base64.b64encode(chunk).decode()]


async def tables_holding(engine, blob: bytes) -> list[str]:  # type: ignore[no-untyped-def]
    found = []
    async with engine.connect() as connection:
        tables = (
            await connection.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            )
        ).scalars()
        for table in list(tables):
            for needle in needles(blob):
                hits = await connection.scalar(
                    text(f'SELECT count(*) FROM "{table}" AS r WHERE strpos(r::text, :n) > 0'),
                    {"n": needle},
                )
                if hits:
                    found.append(table)
                    break
    return found


async def redis_holding(redis, blob: bytes) -> list[str]:  # type: ignore[no-untyped-def]
    wanted = [blob[len(blob) // 2 : len(blob) // 2 + 48], *(n.encode() for n in needles(blob))]
    found = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            parts = [await redis.get(key) or b""]
        elif kind == "stream":
            parts = [b for _, f in await redis.xrange(key) for item in f.items() for b in item]
        elif kind == "hash":
            parts = [b for item in (await redis.hgetall(key)).items() for b in item]
        else:
            parts = []
        if any(n in p for p in parts for n in wanted):
            found.append(key.decode())
    return found


def storage_holding(storage, blob: bytes) -> list[str]:  # type: ignore[no-untyped-def]
    chunk = blob[len(blob) // 2 : len(blob) // 2 + 48]
    if not storage.root.exists():
        return []
    return [str(p) for p in storage.root.rglob("*") if p.is_file() and chunk in p.read_bytes()]


async def vectors_like(engine, embedding: str) -> int:  # type: ignore[no-untyped-def]
    """Rows of every embedding table holding this vector (or one within 1e-6 of it)."""
    total = 0
    for table in ("face_embeddings", "person_faces"):
        total += await scalar(
            engine,
            f"SELECT count(*) FROM {table} WHERE dim = 192 AND "
            "(embedding::vector(192) <=> CAST(:v AS vector(192))) < 1e-6",
            v=embedding,
        )
    return total


async def test_deleting_a_person_or_a_face_deletes_embeddings_crops_and_membership(
    client, worker, settings, sessionmaker, engine, redis, storage
):
    obama, biden, _ = await upload_everyone(client)
    await cluster_pass(settings, sessionmaker)
    clusters = {frozenset(members(c)): c["id"] for c in await unnamed(client)}
    obama_id = clusters[frozenset(obama)]
    await client.patch(f"/v1/people/{obama_id}", json={"name": "Barack"})

    async def evidence(face_id: int) -> tuple[bytes, str]:
        crop = (await client.get(f"/v1/faces/{face_id}/thumbnail")).content
        async with engine.connect() as connection:
            vector = await connection.scalar(
                text("SELECT embedding::text FROM face_embeddings WHERE detection_id = :d"),
                {"d": face_id},
            )
        return crop, str(vector)

    obama_evidence = [await evidence(f) for f in sorted(obama)]
    one_biden = min(biden)
    biden_evidence = await evidence(one_biden)
    for crop, vector in [*obama_evidence, biden_evidence]:
        assert await tables_holding(engine, crop), "the scan must see a kept crop"
        assert await vectors_like(engine, vector) >= 1

    assert (await client.delete(f"/v1/people/{obama_id}")).status_code == 204
    assert (await client.delete(f"/v1/faces/{one_biden}")).status_code == 204

    for crop, vector in [*obama_evidence, biden_evidence]:
        assert await tables_holding(engine, crop) == []
        assert await redis_holding(redis, crop) == []
        assert storage_holding(storage, crop) == []
        assert await vectors_like(engine, vector) == 0
    for face_id in [*obama, one_biden]:
        assert (
            await scalar(
                engine, "SELECT count(*) FROM unknown_faces WHERE detection_id = :d", d=face_id
            )
            == 0
        )
        assert (await client.get(f"/v1/faces/{face_id}/thumbnail")).status_code == 404
    # Nothing of them clusters again, and the rest of Biden's cluster is still there.
    await cluster_pass(settings, sessionmaker)
    remaining = [members(c) for c in await unnamed(client)]
    assert remaining == [biden - {one_biden}] or remaining == []
    assert all(not (m & obama) for m in remaining)


async def test_an_unnamed_person_left_with_one_face_is_not_listed(
    client, worker, settings, sessionmaker
):
    """clusters.min_person_faces (2): documented, and read nowhere; a cluster whose faces were
    deleted or moved away down to one was listed still, as a one-face "person"."""
    _, biden, _ = await upload_everyone(client)
    await cluster_pass(settings, sessionmaker)
    [cluster] = [c for c in await unnamed(client) if members(c) == biden]
    for face_id in sorted(biden)[:-2]:
        assert (await client.delete(f"/v1/faces/{face_id}")).status_code == 204
    assert any(c["id"] == cluster["id"] for c in await unnamed(client))  # two faces: listed
    assert (await client.delete(f"/v1/faces/{sorted(biden)[-2]}")).status_code == 204
    assert all(c["id"] != cluster["id"] for c in await unnamed(client))
    assert settings.clusters.min_person_faces == 2


@pytest.mark.parametrize("api", ["lookout", "compreface", "deepstack"])
async def test_a_person_deleted_through_any_api_takes_their_sightings_along(
    client, worker, settings, sessionmaker, engine, api
):
    """The CompreFace and DeepStack deletes are the gallery's: a named person's sightings
    (their embeddings, crops, membership) go with them, and do not cluster again as a new
    unnamed person (they did, through both compatible APIs)."""
    obama, _, _ = await upload_everyone(client)
    await cluster_pass(settings, sessionmaker)
    clusters = {frozenset(members(c)): c["id"] for c in await unnamed(client)}
    obama_id = clusters[frozenset(obama)]
    assert (
        await client.patch(f"/v1/people/{obama_id}", json={"name": "Barack"})
    ).status_code == 200

    if api == "lookout":
        deleted = await client.delete(f"/v1/people/{obama_id}")
        assert deleted.status_code == 204
    elif api == "compreface":
        deleted = await client.delete("/api/v1/recognition/subjects/Barack")
        assert deleted.status_code == 200 and deleted.json() == {"subject": "Barack"}
    else:
        deleted = await client.post("/v1/vision/face/delete", data={"userid": "barack"})
        assert deleted.status_code == 200 and deleted.json()["success"] is True

    assert (await client.get(f"/v1/people/{obama_id}")).status_code == 404
    for face_id in obama:
        for table in ("face_embeddings", "face_crops", "unknown_faces"):
            sql = f"SELECT count(*) FROM {table} WHERE detection_id = :d"
            assert await scalar(engine, sql, d=face_id) == 0, (table, face_id)
    await cluster_pass(settings, sessionmaker)
    assert all(not (members(c) & obama) for c in await unnamed(client))


async def test_moving_or_deleting_another_key_s_face_is_404(client, worker, make_key, app):
    import httpx

    [face_id] = face_ids(await upload(client, "test/obama1.jpg"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://lookout.test",
        headers={"X-API-Key": await make_key("other", scopes=(Scope.read, Scope.write))},
    ) as other:
        assert (await other.delete(f"/v1/faces/{face_id}")).status_code == 404
        moved = await other.post(f"/v1/faces/{face_id}/move", json={"person_id": None})
        assert moved.status_code == 404
        assert (await other.get(f"/v1/faces/{face_id}/thumbnail")).status_code == 404
    assert (await client.get(f"/v1/faces/{face_id}/thumbnail")).status_code == 200
