"""Unknown people at a million faces: the cards people open, against a gallery that has seen a lot.

The clustering makes an unnamed person of every face seen again and again that nobody named
(app/gallery/clusters.py): at home, the residents, seen thousands of times a day. GET
/v1/people?named=false lists them biggest first, each with its count, first and last seen, its
faces by source and its newest sightings; GET /v1/people/{id} opens one. This bench calls those
very functions (`list_people`, `get_person` + `person_out`, as the routes do) on an embedded
Postgres holding FACES unknown faces in clusters of three sizes (20 residents of 2% of them
each, 600 regulars of 0.05%, the rest passers-by in tens), with the sightings' index of
migration 0020 and, in the same run, with person_id's own index instead (as before it), and
reports each call's Postgres CPU (its backends and parallel workers, psutil) and wall time.

`python -m bench.people_page [FACES]` (default 1,000,000; LOOKOUT_BENCH_PEOPLE_FACES). Writes
the "Unknown people" section of bench/RESULTS.md.
"""

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from app.apikeys.service import Principal
from app.db import create_engine, create_sessionmaker, migrate
from app.embedded import start_embedded
from app.gallery.people import get_person, list_people, person_out
from app.security import Scope
from app.settings import DatabaseSettings, Settings
from bench.harness import load_average, machine, postmaster_pid, stack_dir, write_section
from bench.profiling import postgres_cpu_s

DEFAULT_FACES = 1_000_000
CALLS = 10  # of each step, after one call not counted
PAGE = 20  # the API's default page
# (people, share of the faces each): residents, regulars, passers-by
CLUSTERS = ((20, 0.02), (600, 0.0005))
PASSER_BY_FACES = 10
INDEX = (
    "CREATE INDEX ix_unknown_faces_person_seen ON unknown_faces "
    "(person_id, seen_at, detection_id) INCLUDE (node_id)"
)
BEFORE_INDEX = "CREATE INDEX ix_unknown_faces_person_id ON unknown_faces (person_id)"
# Keys off (`make up`): the one anonymous owner, who sees the people made with keys off.
VIEWER = Principal(owner_id=None, scopes=frozenset({Scope.read}))


@dataclass(frozen=True)
class Step:
    name: str
    # Each (with 0020's index, with person_id's instead): Postgres CPU ms a call (mean: psutil
    # counts in ticks of 10 ms) and wall ms a call (median).
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
    """Each step's calls: (Postgres CPU ms, wall ms) of each."""
    engine = create_engine(settings.database)
    sessionmaker = create_sessionmaker(engine)

    async def page() -> None:
        async with sessionmaker() as session:
            found = await list_people(
                session, VIEWER, named=False, ignored=False, name=None, limit=PAGE, cursor=None
            )
        assert len(found.items) == PAGE
        assert found.items[0].sighting_count == biggest_faces  # the biggest first

    async def card() -> None:
        async with sessionmaker() as session:
            found = await person_out(session, await get_person(session, biggest, VIEWER))
        assert found.sighting_count == biggest_faces

    steps: dict[str, Callable[[], Awaitable[None]]] = {"page": page, "card": card}
    calls: dict[str, list[tuple[float, float]]] = {}
    try:
        for name, step in steps.items():
            await step()
            calls[name] = []
            for _ in range(CALLS):
                cpu_before, started = postgres_cpu_s(postgres), time.perf_counter()
                await step()
                wall_ms = 1000 * (time.perf_counter() - started)
                calls[name].append((1000 * (postgres_cpu_s(postgres) - cpu_before), wall_ms))
    finally:
        await engine.dispose()
    return calls


async def set_index(settings: Settings, present: bool) -> None:
    """present: as migration 0020 leaves it; else person_id's own index, as before it."""
    made, dropped = (
        (INDEX, "ix_unknown_faces_person_id")
        if present
        else (BEFORE_INDEX, "ix_unknown_faces_person_seen")
    )
    engine = create_engine(settings.database)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(made))
            await connection.execute(text(f"DROP INDEX {dropped}"))
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE unknown_faces"))
    finally:
        await engine.dispose()


STEPS = {
    "page": f"a page of unnamed people, biggest first (GET /v1/people?named=false, {PAGE})",
    "card": "the biggest one's card (GET /v1/people/{id})",
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
            with_index = asyncio.run(measure(settings, biggest, biggest_faces, postgres))
            asyncio.run(set_index(settings, present=False))
            without = asyncio.run(measure(settings, biggest, biggest_faces, postgres))
            asyncio.run(set_index(settings, present=True))
        finally:
            services.stop()
    steps = [
        Step(
            name,
            (_mean(with_index[name], 0), _mean(without[name], 0)),
            (_median(with_index[name], 1), _median(without[name], 1)),
        )
        for name in STEPS
    ]
    return steps, written, biggest_faces


def _mean(calls: list[tuple[float, float]], index: int) -> float:
    return statistics.fmean(call[index] for call in calls)


def _median(calls: list[tuple[float, float]], index: int) -> float:
    return statistics.median(call[index] for call in calls)


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
        f"{max(1, int(faces * CLUSTERS[1][1])):,}, the rest passers-by of {PASSER_BY_FACES}): "
        "with the sightings' index of migration 0020 and, in the same run, with person_id's "
        f"own index instead (as before it). {CALLS} calls each (one more before, not counted): "
        "Postgres CPU (its backends and parallel workers, psutil) their mean, wall time "
        "their median. Keys off (`make up`'s one anonymous owner).",
        "",
        *machine([]),
        f"- Load average before {load_before}, after {load_average()}",
        "",
        "| call | Postgres CPU, ms a call | with person_id's index | wall, ms a call "
        "| with person_id's index |",
        "|---|---:|---:|---:|---:|",
    ]
    for step in steps:
        lines.append(
            f"| {STEPS[step.name]} | {step.cpu_ms[0]:.1f} | {step.cpu_ms[1]:.1f} | "
            f"{step.wall_ms[0]:.1f} | {step.wall_ms[1]:.1f} |"
        )
    lines += [
        "",
        "A page is the ranking (every unnamed person's sightings counted, from the index alone "
        "with 0020's) and a card for each of its people: count, first and last seen, faces by "
        "source (from the index alone with 0020's) and the newest sightings (the index's end "
        "with 0020's; every sighting of the person sorted without). The page's first people "
        "are the biggest, so it pays for the most sightings. What is left grows with the faces "
        "kept: the ranking counts every unnamed person's sightings at each call.",
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
