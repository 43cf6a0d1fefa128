"""Unknown people at a million faces: the cards people open, against a gallery that has seen a lot.

The clustering makes an unnamed person of every face seen again and again that nobody named
(app/gallery/clusters.py): at home, the residents, seen thousands of times a day. GET
/v1/people?named=false lists them biggest first, each with its count, first and last seen, its
faces by source and its newest sightings; GET /v1/people/{id} opens one. This bench calls those
very functions (`list_people`, `get_person` + `person_out`, as the routes do) on an embedded
Postgres holding FACES unknown faces in clusters of three sizes (20 residents of 2% of them
each, 600 regulars of 0.05%, the rest passers-by in tens), and beside each, in the same run,
the same answer counted from the sightings as the code before the tallies did (migration 0021:
COUNTED_* below, on the same schema); and what the tallies' triggers cost a write of
sightings (the clustering's assignment), with them and with them disabled. Each call's Postgres
CPU (its backends and parallel workers, psutil) and wall time.

`python -m bench.people_page [FACES]` (default 1,000,000; LOOKOUT_BENCH_PEOPLE_FACES). Writes
the "Unknown people" section of bench/RESULTS.md.
"""

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.service import Principal
from app.db import create_engine, create_sessionmaker, migrate
from app.embedded import start_embedded
from app.gallery.people import (
    LIST_SIGHTINGS,
    MAX_DETAIL_SIGHTINGS,
    get_person,
    list_people,
    person_out,
)
from app.security import Scope
from app.settings import DatabaseSettings, Settings
from bench.harness import load_average, machine, postmaster_pid, stack_dir, write_section
from bench.profiling import cpu_mean, postgres_call, wall_median

DEFAULT_FACES = 1_000_000
CALLS = 10  # of each step, after one call not counted
PAGE = 20  # the API's default page
# (people, share of the faces each): residents, regulars, passers-by
CLUSTERS = ((20, 0.02), (600, 0.0005))
PASSER_BY_FACES = 10
MOVED = 600  # sightings the write step moves to another person and back
# The page and the card as the code before migration 0021 read them (6fa10a0): the ranking by
# counting every unnamed person's sightings, a card by counting its person's.
COUNTED_RANKING = text(
    "SELECT p.id FROM people p LEFT JOIN unknown_faces u ON u.person_id = p.id"
    " WHERE p.owner_id IS NULL AND p.name IS NULL AND p.ignored_at IS NULL GROUP BY p.id"
    " HAVING count(u.detection_id) >= 1"
    " ORDER BY count(u.detection_id) DESC, p.created_at DESC, p.id DESC LIMIT :limit"
)
COUNTED_CARD = [
    text("SELECT count(*), min(seen_at), max(seen_at) FROM unknown_faces WHERE person_id = :id"),
    text(
        "SELECT u.node_id, n.name, count(*) FROM unknown_faces u"
        " LEFT JOIN nodes n ON n.id = u.node_id WHERE u.person_id = :id"
        " GROUP BY u.node_id, n.name ORDER BY count(*) DESC"
    ),
]
# Keys off (`make up`): the one anonymous owner, who sees the people made with keys off.
VIEWER = Principal(owner_id=None, scopes=frozenset({Scope.read}))


@dataclass(frozen=True)
class Step:
    name: str
    # Each (Lookout's way, the way before: counted, or the triggers disabled): Postgres CPU ms
    # a call (mean: psutil counts in ticks of 10 ms) and wall ms a call (median).
    cpu_ms: tuple[float, float]
    wall_ms: tuple[float, float]


def cluster_sizes(faces: int) -> list[int]:
    """Every unnamed person's face count: the residents and regulars, then passers-by."""
    sizes = [max(1, int(faces * share)) for people, share in CLUSTERS for _ in range(people)]
    sizes += [PASSER_BY_FACES] * ((faces - sum(sizes)) // PASSER_BY_FACES)
    return sizes


async def fill(settings: Settings, faces: int) -> tuple[uuid.UUID, int, int]:
    """The people, their unknown faces (a detection of a finished job each, six a job, seen
    over a month), VACUUM ANALYZE; the biggest person's id and face count, the faces written."""
    sizes = cluster_sizes(faces)
    people = [uuid.uuid4() for _ in sizes]
    engine = create_engine(settings.database)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO people (id, created_at) SELECT p.id, now() - p.n * interval "
                    "'1 second' FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS p(id, n)"
                ),
                {"ids": people},
            )
            await connection.execute(
                text(
                    "INSERT INTO jobs (id, status, purpose, tasks, content_type, width, height,"
                    " counts, attempts) SELECT gen_random_uuid(), 'done', 'detect',"
                    " ARRAY['faces'], 'image/jpeg', 640, 480, '{}', 1"
                    " FROM generate_series(1, :n)"
                ),
                {"n": -(-sum(sizes) // 6)},
            )
            # Each face: its person (by its place in `sizes`), its job (six a job), a sighting
            # at a random moment of the month.
            await connection.execute(
                text(
                    "CREATE TEMP TABLE faces ON COMMIT DROP AS"
                    " SELECT nextval(pg_get_serial_sequence('detections', 'id'))::int AS id,"
                    " p.id AS person_id, (row_number() OVER () - 1) / 6 AS job"
                    " FROM unnest(CAST(:ids AS uuid[]), CAST(:sizes AS int[])) AS p(id, size),"
                    " generate_series(1, p.size)"
                ),
                {"ids": people, "sizes": sizes},
            )
            await connection.execute(
                text(
                    "CREATE TEMP TABLE numbered_jobs ON COMMIT DROP AS"
                    " SELECT id, row_number() OVER () - 1 AS job FROM jobs"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO detections (id, job_id, kind, label, score, box, attributes)"
                    " SELECT f.id, j.id, 'face', 'face', 0.9, ARRAY[0, 0, 64, 64], '{}'"
                    " FROM faces f JOIN numbered_jobs j USING (job)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO unknown_faces (detection_id, job_id, person_id, manual, model,"
                    " seen_at) SELECT f.id, j.id, f.person_id, false, 'mobilefacenet',"
                    " now() - random() * interval '30 days'"
                    " FROM faces f JOIN numbered_jobs j USING (job)"
                )
            )
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return people[0], sizes[0], sum(sizes)


async def measure(
    settings: Settings, biggest: uuid.UUID, biggest_faces: int, postgres: int
) -> dict[str, list[tuple[float, float]]]:
    """Each step's calls, Lookout's way and the way before, alternately: (Postgres CPU ms,
    wall ms) of each."""
    engine = create_engine(settings.database)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        second = (await session.execute(COUNTED_RANKING, {"limit": 2})).scalars().all()[1]
        moved = list(
            (
                await session.execute(
                    text(
                        "SELECT detection_id FROM unknown_faces WHERE person_id = :id"
                        " ORDER BY detection_id LIMIT :n"
                    ),
                    {"id": biggest, "n": MOVED},
                )
            ).scalars()
        )

    async def page() -> None:
        async with sessionmaker() as session:
            found = await list_people(
                session, VIEWER, named=False, ignored=False, name=None, limit=PAGE, cursor=None
            )
        assert len(found.items) == PAGE
        assert found.items[0].sighting_count == biggest_faces  # the biggest first

    async def counted_card(session: AsyncSession, person: uuid.UUID, sightings: int) -> int:
        stats = (await session.execute(COUNTED_CARD[0], {"id": person})).one()
        (await session.execute(COUNTED_CARD[1], {"id": person})).all()
        await newest_sightings(session, person, sightings)
        return int(stats[0])

    async def counted_page() -> None:
        async with sessionmaker() as session:
            ids = (await session.execute(COUNTED_RANKING, {"limit": PAGE + 1})).scalars().all()
            counts = [await counted_card(session, person, LIST_SIGHTINGS) for person in ids[:PAGE]]
        assert counts[0] == biggest_faces

    async def card() -> None:
        async with sessionmaker() as session:
            found = await person_out(session, await get_person(session, biggest, VIEWER))
        assert found.sighting_count == biggest_faces

    async def counted_biggest() -> None:
        async with sessionmaker() as session:
            await get_person(session, biggest, VIEWER)
            assert await counted_card(session, biggest, MAX_DETAIL_SIGHTINGS) == biggest_faces

    async def write() -> None:
        # To the second biggest and back, as a clustering batch assigns faces: the tallies net
        # to nothing, so they stay right while their triggers are off.
        async with sessionmaker.begin() as session:
            for person in (second, biggest):
                await session.execute(
                    text(
                        "UPDATE unknown_faces SET person_id = :person"
                        " WHERE detection_id = ANY(:ids)"
                    ),
                    {"person": person, "ids": moved},
                )

    async def triggers(enabled: bool) -> None:
        """Outside the timed calls: the ALTER's own work is not the triggers'."""
        async with sessionmaker.begin() as session:
            state = "ENABLE" if enabled else "DISABLE"
            await session.execute(text(f"ALTER TABLE unknown_faces {state} TRIGGER USER"))

    async def nothing() -> None:
        pass

    # Each way: (before its timed call, the call, after it), none of the three timed but the call.
    Way = tuple[Callable[[], Awaitable[None]], ...]
    steps: dict[str, tuple[Way, Way]] = {
        "page": ((nothing, page, nothing), (nothing, counted_page, nothing)),
        "card": ((nothing, card, nothing), (nothing, counted_biggest, nothing)),
        "write": (
            (nothing, write, nothing),
            (lambda: triggers(False), write, lambda: triggers(True)),
        ),
    }
    calls: dict[str, list[tuple[float, float]]] = {}
    try:
        for name, ways in steps.items():
            for way, (before, step, after) in enumerate(ways):
                await before()
                await step()
                await after()
                calls[f"{name} {way}"] = []
            for _ in range(CALLS):
                for way, (before, step, after) in enumerate(ways):
                    await before()
                    calls[f"{name} {way}"].append(await postgres_call(step, postgres))
                    await after()
    finally:
        await engine.dispose()
    return calls


async def newest_sightings(session: AsyncSession, person: uuid.UUID, limit: int) -> None:
    """A card's newest sightings (as many as the card shows), read the same way either way
    (the index's end)."""
    await session.execute(
        text(
            "SELECT u.*, EXISTS (SELECT 1 FROM face_crops c WHERE c.detection_id ="
            " u.detection_id) FROM unknown_faces u WHERE u.person_id = :id"
            " ORDER BY u.seen_at DESC, u.detection_id DESC LIMIT :limit"
        ),
        {"id": person, "limit": limit},
    )


STEPS = {
    "page": (
        f"a page of unnamed people, biggest first (GET /v1/people?named=false, {PAGE})",
        "counted",
    ),
    "card": ("the biggest one's card (GET /v1/people/{id})", "counted"),
    "write": (
        f"{MOVED} sightings moved to another person and back (as the clustering assigns)",
        "triggers disabled",
    ),
}


def run(faces: int) -> tuple[list[Step], int, int]:
    with stack_dir("lookout-bench-people-") as tmp:
        data = Path(tmp) / "data"
        services = start_embedded(data)
        try:
            migrate(services.database_url)
            settings = Settings(
                env="dev", data_dir=data, database=DatabaseSettings(url=services.database_url)
            )
            biggest, biggest_faces, written = asyncio.run(fill(settings, faces))
            postgres = postmaster_pid(data / "postgres")
            assert postgres is not None
            calls = asyncio.run(measure(settings, biggest, biggest_faces, postgres))
        finally:
            services.stop()
    steps = [
        Step(
            name,
            (cpu_mean(calls[f"{name} 0"]), cpu_mean(calls[f"{name} 1"])),
            (wall_median(calls[f"{name} 0"]), wall_median(calls[f"{name} 1"])),
        )
        for name in STEPS
    ]
    return steps, written, biggest_faces


def write_results(
    steps: list[Step], faces: int, biggest_faces: int, measured: str, load_before: str
) -> None:
    people = len(cluster_sizes(faces))
    lines = [
        "## Unknown people (bench/people_page.py)",
        "",
        f"Measured {measured}. The gallery's functions behind the people pages, called on an "
        f"embedded Postgres holding {faces:,} unknown faces of {people:,} unnamed people (20 "
        f"residents of {biggest_faces:,} sightings each, 600 regulars of "
        f"{max(1, int(faces * CLUSTERS[1][1])):,}, the rest passers-by of {PASSER_BY_FACES}; "
        "keys off, `make up`'s one owner). Beside each, in the same run and alternating with "
        "it: the same answer counted from the sightings, as before the tallies (migration "
        "0021; the queries of 6fa10a0, on the same schema), and for the write, the tallies' "
        f"triggers disabled. {CALLS} calls each (one more before, not counted): Postgres CPU "
        "(its backends and parallel workers, psutil) their mean, wall time their median.",
        "",
        *machine([]),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| call | Postgres CPU, ms a call | the way before | ÷ | wall, ms a call |",
        "|---|---:|---:|---:|---:|",
    ]
    for step in steps:
        label, before = STEPS[step.name]
        ratio = step.cpu_ms[0] / step.cpu_ms[1] if step.cpu_ms[1] else float("nan")
        lines.append(
            f"| {label} | {step.cpu_ms[0]:.1f} | {step.cpu_ms[1]:.1f} ({before}) | {ratio:.2f} "
            f"| {step.wall_ms[0]:.1f} |"
        )
    lines += [
        "",
        "A page is the ranking and a card for each of its 20 people, the biggest first: with "
        "the tallies, the ranking sums a few rows a person and a card reads its person's "
        "(count and sources), the two ends of its sightings' index (first and last seen, "
        "migration 0020) and the index's newest entries; counted, the ranking counts every "
        "unnamed person's sightings and each card its person's. The write is what every "
        "change to the sightings pays for the tallies (a statement's trigger writing a row a "
        "person and source it changed). Wall time is Lookout's call, its Python included (the "
        "cards' models); the way before is SQL alone, so only its Postgres CPU compares. "
        f"psutil reads CPU in ticks of 10 ms: 0.0 is no tick in {CALLS} calls.",
    ]
    write_section("people_page", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    faces = (
        int(args[0]) if args else int(os.environ.get("LOOKOUT_BENCH_PEOPLE_FACES") or DEFAULT_FACES)
    )
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    steps, written, biggest_faces = run(faces)
    for step in steps:
        print(step, flush=True)
    write_results(steps, written, biggest_faces, measured, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
