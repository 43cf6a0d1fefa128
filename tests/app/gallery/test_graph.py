"""A large gallery's in-memory graph (app/gallery/graph.py) on real Postgres + pgvector and a real
usearch index: identify takes its candidates from the graph and re-ranks them in Postgres, so
a face enrolled after the graph was built is found by the next query, a deleted person is never
named, another owner's faces never come up, and a graph full of deleted faces is rebuilt."""

import subprocess
import sys
import uuid

import numpy as np
import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.apikeys.service import create_key
from app.gallery.graph import FACE_GRAPHS, FaceGraph, GraphTuning, build_graph, sign_bits
from app.gallery.matching import SearchTuning, nearest_people
from app.models import Person
from app.security import Scope
from tests.app.gallery.test_matching import add_person, identify_statements, near, unit_vectors

MODEL = "mobilefacenet"
# A graph for any gallery, searched for few candidates (so the graph, not luck, finds the
# person); no late-commit window, so faces enrolled before the build are the graph's alone.
TUNING = SearchTuning(
    graph=GraphTuning(
        min_faces=1, candidates=5, late_commit_s=0, refresh_s=3600, count_check_s=3600
    )
)


@pytest.fixture(autouse=True)
def no_graphs_left_over() -> object:
    FACE_GRAPHS.forget()
    FACE_GRAPHS.configure(True)
    yield
    FACE_GRAPHS.forget()
    FACE_GRAPHS.configure(True)


async def enroll_crowd(
    sessionmaker: async_sessionmaker[AsyncSession], people: int, seed: int
) -> list[tuple[uuid.UUID, np.ndarray]]:
    """`people` people of 3 photos each, committed; returns each person's id and centre."""
    centres = unit_vectors(seed, people, 192)
    crowd = []
    async with sessionmaker() as session:
        for index, centre in enumerate(centres):
            person, _ = await add_person(
                session, f"person {index}", MODEL, near(centre, seed * 1000 + index, 3, noise=0.5)
            )
            crowd.append((person.id, centre))
        await session.commit()
    return crowd


async def wait_for_graph(session: AsyncSession, tuning: SearchTuning) -> FaceGraph:
    """The first query starts the build in the background (and answers from pgvector); the
    query after the build is done gets the graph."""
    assert await FACE_GRAPHS.for_query(session, MODEL, 192, None, tuning.graph) is None
    for gallery in FACE_GRAPHS._galleries.values():
        if gallery.building is not None:
            await gallery.building
    graph = await FACE_GRAPHS.for_query(session, MODEL, 192, None, tuning.graph)
    assert graph is not None
    return graph


async def test_sign_bits_are_pgvectors_binary_quantize(sessionmaker):
    vector = unit_vectors(1, 1, 192)[0]
    async with sessionmaker() as session:
        bits = await session.scalar(
            text("SELECT binary_quantize(CAST(:v AS vector(192)))::text"),
            {"v": "[" + ",".join(f"{v:.7g}" for v in vector) + "]"},
        )
    assert "".join(str(b) for b in np.unpackbits(sign_bits(vector))) == bits


async def test_identify_from_the_graph_names_the_same_people_as_pgvector(engine, sessionmaker):
    crowd = await enroll_crowd(sessionmaker, 40, seed=3)
    async with sessionmaker() as session:
        graph = await wait_for_graph(session, TUNING)
        assert len(graph) == 120
        queries = [near(centre, 500 + i, 1, noise=0.5)[0] for i, (_, centre) in enumerate(crowd)]
        from_graph = []
        for query in queries:
            matches, statements = await identify_statements(
                engine,
                session,
                lambda q=query: nearest_people(
                    session, q, model=MODEL, owner_id=None, limit=2, tuning=TUNING
                ),
            )
            ((statement, parameters),) = statements
            assert "ANY" in statement and len(parameters[2]) == 5  # the graph's 5 candidates
            from_graph.append((matches[0].person_id, matches[0].face_id, matches[0].cosine))
        # pgvector's path (no graph below its min_faces) on the same queries
        from_pgvector = []
        for query in queries:
            (best,) = await nearest_people(session, query, model=MODEL, owner_id=None)
            from_pgvector.append((best.person_id, best.face_id, best.cosine))
    # the right person every time, with the same best face at the same exact cosine
    assert [person for person, _, _ in from_graph] == [person for person, _ in crowd]
    assert from_graph == from_pgvector


async def test_a_face_enrolled_after_the_build_is_found_by_the_next_query(sessionmaker):
    await enroll_crowd(sessionmaker, 30, seed=4)
    newcomer_centre = unit_vectors(99, 1, 192)[0]
    async with sessionmaker() as session:
        graph = await wait_for_graph(session, TUNING)
        built = len(graph)
    async with sessionmaker() as session:
        newcomer, _ = await add_person(
            session, "newcomer", MODEL, near(newcomer_centre, 7, 2, noise=0.5)
        )
        await session.commit()
    query = near(newcomer_centre, 8, 1, noise=0.5)[0]
    async with sessionmaker() as session:
        # not in the graph yet (no refresh due): read from Postgres as a recent face
        matches = await nearest_people(session, query, model=MODEL, owner_id=None, tuning=TUNING)
        assert [m.person_id for m in matches] == [newcomer.id] and len(graph) == built
    refreshing = SearchTuning(graph=GraphTuning(**{**vars(TUNING.graph), "refresh_s": 0}))
    async with sessionmaker() as session:
        matches = await nearest_people(
            session, query, model=MODEL, owner_id=None, tuning=refreshing
        )
        assert [m.person_id for m in matches] == [newcomer.id]
        assert len(graph) == built + 2  # the refresh added its two faces, once
        await nearest_people(session, query, model=MODEL, owner_id=None, tuning=refreshing)
        assert len(graph) == built + 2
        # and the faces identify reads from Postgres besides the graph's are newer than them
        created = await session.scalar(
            text("SELECT max(created_at) FROM person_faces WHERE person_id = :p"),
            {"p": newcomer.id},
        )
        assert graph.fresh_since() > created


async def test_a_deleted_person_is_never_named_though_the_graph_still_holds_their_faces(
    sessionmaker,
):
    crowd = await enroll_crowd(sessionmaker, 30, seed=5)
    gone, centre = crowd[0]
    query = near(centre, 9, 1, noise=0.4)[0]
    async with sessionmaker() as session:
        graph = await wait_for_graph(session, TUNING)
        found = await nearest_people(session, query, model=MODEL, owner_id=None, tuning=TUNING)
        assert [m.person_id for m in found] == [gone]
        await session.execute(delete(Person).where(Person.id == gone))
        await session.commit()
        found = await nearest_people(
            session, query, model=MODEL, owner_id=None, limit=3, tuning=TUNING
        )
        assert found and gone not in {m.person_id for m in found}
        assert len(graph) == 90  # still there: Postgres said no


async def test_each_owner_has_their_own_graph(sessionmaker):
    query = unit_vectors(11, 1, 192)[0]
    async with sessionmaker() as session:
        key, _ = await create_key(session, name="mine", scopes=[Scope.write])
        for index in range(20):  # the keys-off owner's people, all nearer to the query
            await add_person(session, f"near {index}", MODEL, near(query, 100 + index, 3, 0.4))
        mine, _ = await add_person(session, "mine", MODEL, near(query, 200, 3, 1.0), key.id)
        await session.commit()
    async with sessionmaker() as session:
        for owner in (None, key.id):
            assert await FACE_GRAPHS.for_query(session, MODEL, 192, owner, TUNING.graph) is None
        for gallery in FACE_GRAPHS._galleries.values():
            assert gallery.building is not None
            await gallery.building
        theirs = await FACE_GRAPHS.for_query(session, MODEL, 192, None, TUNING.graph)
        own = await FACE_GRAPHS.for_query(session, MODEL, 192, key.id, TUNING.graph)
        assert theirs is not None and own is not None and (len(theirs), len(own)) == (60, 3)
        found = await nearest_people(session, query, model=MODEL, owner_id=key.id, tuning=TUNING)
        assert [m.person_id for m in found] == [mine.id]


async def test_a_graph_mostly_of_deleted_faces_is_rebuilt(sessionmaker):
    crowd = await enroll_crowd(sessionmaker, 30, seed=6)
    checking = SearchTuning(graph=GraphTuning(**{**vars(TUNING.graph), "count_check_s": 0}))
    async with sessionmaker() as session:
        graph = await wait_for_graph(session, TUNING)
        await session.execute(delete(Person).where(Person.id.in_([p for p, _ in crowd[:10]])))
        await session.commit()
        # the count check sees 60 faces against the graph's 90 and builds a new graph beside it
        assert await FACE_GRAPHS.for_query(session, MODEL, 192, None, checking.graph) is graph
        (gallery,) = FACE_GRAPHS._galleries.values()
        assert gallery.building is not None
        await gallery.building
        rebuilt = await FACE_GRAPHS.for_query(session, MODEL, 192, None, checking.graph)
        assert rebuilt is not None and rebuilt is not graph and len(rebuilt) == 60


async def test_a_small_gallery_has_no_graph(sessionmaker):
    await enroll_crowd(sessionmaker, 5, seed=7)
    async with sessionmaker() as session:
        assert await FACE_GRAPHS.for_query(session, MODEL, 192, None) is None
        assert all(g.building is None for g in FACE_GRAPHS._galleries.values())


async def test_a_process_configured_without_graphs_walks_pgvectors(engine, sessionmaker):
    """settings.gallery.memory_graph false (API pods short of memory): no graph, at any size."""
    crowd = await enroll_crowd(sessionmaker, 10, seed=9)
    FACE_GRAPHS.configure(False)
    async with sessionmaker() as session:
        assert await FACE_GRAPHS.for_query(session, MODEL, 192, None, TUNING.graph) is None
        assert not FACE_GRAPHS._galleries
        person, centre = crowd[0]
        matches, statements = await identify_statements(
            engine,
            session,
            lambda: nearest_people(session, centre, model=MODEL, owner_id=None, tuning=TUNING),
        )
        assert [m.person_id for m in matches] == [person]
        ((statement, _),) = statements
        assert "<~>" in statement and "ANY" not in statement  # pgvector's walk


async def test_build_reads_the_gallery_from_postgres(engine: AsyncEngine, sessionmaker):
    crowd = await enroll_crowd(sessionmaker, 10, seed=8)
    graph = await build_graph(engine, MODEL, 192, None, TUNING.graph)
    assert len(graph) == 30 and graph.watermark is not None
    person, centre = crowd[0]
    async with sessionmaker() as session:
        faces = set(
            (
                await session.execute(
                    text("SELECT id FROM person_faces WHERE person_id = :p"), {"p": person}
                )
            ).scalars()
        )
    assert len(faces) == 3 and set(graph.search(centre, 3)) == faces


def test_the_graph_library_loads_beside_the_models_runtime() -> None:
    """Workers load the graph library and onnxruntime in one process, in either order. usearch
    (tried first) crashed the interpreter when onnxruntime was imported after it (a segfault in
    libstdc++); faiss does not."""
    for first, second in (
        ("app.gallery.graph", "onnxruntime"),
        ("onnxruntime", "app.gallery.graph"),
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import {first}, {second}, cv2, onnxruntime; "
                "print(onnxruntime.get_available_providers())",
            ],
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, (first, second, done.returncode, done.stderr[-500:])
        assert b"CPUExecutionProvider" in done.stdout
