"""A large gallery's in-memory index (app/gallery/memory_index.py) on real Postgres + pgvector and
a real faiss index: identify takes its candidates from the index and re-ranks them in Postgres,
so a face enrolled after the index was built is found by the next query, a deleted person is
never named, another owner's faces never come up, and an index full of deleted faces is
rebuilt."""

import subprocess
import sys
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.apikeys.service import create_key
from app.gallery.matching import SearchTuning, nearest_people
from app.gallery.memory_index import (
    MEMORY_INDEXES,
    MemoryIndex,
    MemoryIndexTuning,
    _faces_statement,
    _rows_to_arrays,
    build_memory_index,
)
from app.models import Person
from app.security import Scope
from tests.app.gallery.test_matching import add_person, identify_statements, near, unit_vectors

MODEL = "mobilefacenet"
# An index for any gallery, searched for few candidates (so the index, not luck, finds the
# person); no late-commit window, so faces enrolled before the build are the index's alone.
TUNING = SearchTuning(
    memory=MemoryIndexTuning(
        min_faces=1,
        shortlist=10,
        candidates=5,
        late_commit_s=0,
        refresh_s=3600,
        count_check_s=3600,
    )
)


@pytest.fixture(autouse=True)
def no_indexes_left_over() -> object:
    MEMORY_INDEXES.forget()
    MEMORY_INDEXES.configure(True)
    yield
    MEMORY_INDEXES.forget()
    MEMORY_INDEXES.configure(True)


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


async def wait_for_index(session: AsyncSession, tuning: SearchTuning) -> MemoryIndex:
    """The first query starts the build in the background (and answers from pgvector); the
    query after the build is done gets the index."""
    assert await MEMORY_INDEXES.for_query(session, MODEL, 192, None, tuning.memory) is None
    for gallery in MEMORY_INDEXES._galleries.values():
        if gallery.building is not None:
            await gallery.building
    index = await MEMORY_INDEXES.for_query(session, MODEL, 192, None, tuning.memory)
    assert index is not None
    return index


async def test_identify_from_the_index_names_the_same_people_as_pgvector(engine, sessionmaker):
    crowd = await enroll_crowd(sessionmaker, 40, seed=3)
    async with sessionmaker() as session:
        index = await wait_for_index(session, TUNING)
        assert len(index) == 120
        queries = [near(centre, 500 + i, 1, noise=0.5)[0] for i, (_, centre) in enumerate(crowd)]
        from_index = []
        for query in queries:
            matches, statements = await identify_statements(
                engine,
                session,
                lambda q=query: nearest_people(
                    session, q, model=MODEL, owner_id=None, limit=2, tuning=TUNING
                ),
            )
            ((statement, parameters),) = statements
            assert "ANY" in statement and len(parameters[2]) == 5  # the index's 5 candidates
            from_index.append((matches[0].person_id, matches[0].face_id, matches[0].cosine))
        # pgvector's path (no index below its min_faces) on the same queries
        from_pgvector = []
        for query in queries:
            (best,) = await nearest_people(session, query, model=MODEL, owner_id=None)
            from_pgvector.append((best.person_id, best.face_id, best.cosine))
    # the right person every time, with the same best face at the same exact cosine
    assert [person for person, _, _ in from_index] == [person for person, _ in crowd]
    assert from_index == from_pgvector


async def test_a_face_enrolled_after_the_build_is_found_by_the_next_query(sessionmaker):
    await enroll_crowd(sessionmaker, 30, seed=4)
    newcomer_centre = unit_vectors(99, 1, 192)[0]
    async with sessionmaker() as session:
        index = await wait_for_index(session, TUNING)
        built = len(index)
    async with sessionmaker() as session:
        newcomer, _ = await add_person(
            session, "newcomer", MODEL, near(newcomer_centre, 7, 2, noise=0.5)
        )
        await session.commit()
    query = near(newcomer_centre, 8, 1, noise=0.5)[0]
    async with sessionmaker() as session:
        # not in the index yet (no refresh due): read from Postgres as a recent face
        matches = await nearest_people(session, query, model=MODEL, owner_id=None, tuning=TUNING)
        assert [m.person_id for m in matches] == [newcomer.id] and len(index) == built
    refreshing = SearchTuning(memory=MemoryIndexTuning(**{**vars(TUNING.memory), "refresh_s": 0}))
    async with sessionmaker() as session:
        matches = await nearest_people(
            session, query, model=MODEL, owner_id=None, tuning=refreshing
        )
        assert [m.person_id for m in matches] == [newcomer.id]
        assert len(index) == built + 2  # the refresh added its two faces, once
        await nearest_people(session, query, model=MODEL, owner_id=None, tuning=refreshing)
        assert len(index) == built + 2
        # and the faces identify reads from Postgres besides the index's are newer than them
        created = await session.scalar(
            text("SELECT max(created_at) FROM person_faces WHERE person_id = :p"),
            {"p": newcomer.id},
        )
        assert index.fresh_since() > created


async def test_a_deleted_person_is_never_named_though_the_index_still_holds_their_faces(
    sessionmaker,
):
    crowd = await enroll_crowd(sessionmaker, 30, seed=5)
    gone, centre = crowd[0]
    query = near(centre, 9, 1, noise=0.4)[0]
    async with sessionmaker() as session:
        index = await wait_for_index(session, TUNING)
        found = await nearest_people(session, query, model=MODEL, owner_id=None, tuning=TUNING)
        assert [m.person_id for m in found] == [gone]
        await session.execute(delete(Person).where(Person.id == gone))
        await session.commit()
        found = await nearest_people(
            session, query, model=MODEL, owner_id=None, limit=3, tuning=TUNING
        )
        assert found and gone not in {m.person_id for m in found}
        assert len(index) == 90  # still there: Postgres said no


async def test_each_owner_has_their_own_index(sessionmaker):
    query = unit_vectors(11, 1, 192)[0]
    async with sessionmaker() as session:
        key, _ = await create_key(session, name="mine", scopes=[Scope.write])
        for index in range(20):  # the keys-off owner's people, all nearer to the query
            await add_person(session, f"near {index}", MODEL, near(query, 100 + index, 3, 0.4))
        mine, _ = await add_person(session, "mine", MODEL, near(query, 200, 3, 1.0), key.id)
        await session.commit()
    async with sessionmaker() as session:
        for owner in (None, key.id):
            assert await MEMORY_INDEXES.for_query(session, MODEL, 192, owner, TUNING.memory) is None
        for gallery in MEMORY_INDEXES._galleries.values():
            assert gallery.building is not None
            await gallery.building
        theirs = await MEMORY_INDEXES.for_query(session, MODEL, 192, None, TUNING.memory)
        own = await MEMORY_INDEXES.for_query(session, MODEL, 192, key.id, TUNING.memory)
        assert theirs is not None and own is not None and (len(theirs), len(own)) == (60, 3)
        found = await nearest_people(session, query, model=MODEL, owner_id=key.id, tuning=TUNING)
        assert [m.person_id for m in found] == [mine.id]


async def test_an_index_mostly_of_deleted_faces_is_rebuilt(sessionmaker):
    crowd = await enroll_crowd(sessionmaker, 30, seed=6)
    checking = SearchTuning(memory=MemoryIndexTuning(**{**vars(TUNING.memory), "count_check_s": 0}))
    async with sessionmaker() as session:
        index = await wait_for_index(session, TUNING)
        await session.execute(delete(Person).where(Person.id.in_([p for p, _ in crowd[:10]])))
        await session.commit()
        # the count check sees 60 faces against the index's 90 and builds a new index beside it
        assert await MEMORY_INDEXES.for_query(session, MODEL, 192, None, checking.memory) is index
        (gallery,) = MEMORY_INDEXES._galleries.values()
        assert gallery.building is not None
        await gallery.building
        rebuilt = await MEMORY_INDEXES.for_query(session, MODEL, 192, None, checking.memory)
        assert rebuilt is not None and rebuilt is not index and len(rebuilt) == 60


async def test_a_small_gallery_has_no_index(sessionmaker):
    await enroll_crowd(sessionmaker, 5, seed=7)
    async with sessionmaker() as session:
        assert await MEMORY_INDEXES.for_query(session, MODEL, 192, None) is None
        assert all(g.building is None for g in MEMORY_INDEXES._galleries.values())


async def test_a_process_configured_without_memory_indexes_walks_pgvectors(engine, sessionmaker):
    """settings.gallery.memory_index false (API pods short of memory): no index, at any size."""
    crowd = await enroll_crowd(sessionmaker, 10, seed=9)
    MEMORY_INDEXES.configure(False)
    async with sessionmaker() as session:
        assert await MEMORY_INDEXES.for_query(session, MODEL, 192, None, TUNING.memory) is None
        assert not MEMORY_INDEXES._galleries
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
    index = await build_memory_index(engine, MODEL, 192, None, TUNING.memory)
    assert len(index) == 30 and index.watermark is not None
    person, centre = crowd[0]
    async with sessionmaker() as session:
        faces = set(
            (
                await session.execute(
                    text("SELECT id FROM person_faces WHERE person_id = :p"), {"p": person}
                )
            ).scalars()
        )
    assert len(faces) == 3 and set(index.search(centre, 3)) == faces


async def test_the_shortlist_is_rescored_by_cosine_not_handed_on_in_hamming_order(sessionmaker):
    """Hamming distance estimates the angle loosely: among faces at similar cosines its order
    is not cosine's. The 4-bit codes re-score the shortlist, so the two faces nearest by cosine
    are handed on to Postgres though others come before them by Hamming distance."""
    rng = np.random.default_rng(12)
    query = unit_vectors(30, 1, 192)[0]

    def at_cosine(cosines: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(cosines), 192)).astype(np.float32)
        noise -= np.outer(noise @ query, query)  # orthogonal to the query
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        return (np.outer(cosines, query) + np.sqrt(1 - cosines**2)[:, None] * noise).astype(
            np.float32
        )

    nearest = at_cosine(np.array([0.75, 0.75]))
    crowd = at_cosine(rng.uniform(0.45, 0.6, 200))
    async with sessionmaker() as session:
        target, _ = await add_person(session, "nearest", MODEL, nearest)
        await add_person(session, "crowd", MODEL, crowd)
        await session.commit()
    narrow = SearchTuning(memory=MemoryIndexTuning(**{**vars(TUNING.memory), "candidates": 2}))
    async with sessionmaker() as session:
        index = await wait_for_index(session, narrow)
        assert len(index) == 202
        # By the index's own sign bits, crowd faces come before the nearest two.
        codes = np.unpackbits(index._bits.sa_encode(np.vstack([nearest, crowd, query])), axis=1)
        hamming = np.count_nonzero(codes[:-1] != codes[-1], axis=1)
        assert np.count_nonzero(hamming[2:] <= hamming[:2].max()) >= 2
        (best,) = await nearest_people(session, query, model=MODEL, owner_id=None, tuning=narrow)
        assert set(index.search(query, 2)) == set(
            (
                await session.execute(
                    text("SELECT id FROM person_faces WHERE person_id = :p"), {"p": target.id}
                )
            ).scalars()
        )
    assert best.person_id == target.id and best.cosine > 0.7


def test_codes_trained_on_a_single_face_still_rank_the_faces_added_later() -> None:
    """A gallery emptied between its count and its build starts an index with one face or
    none; the 4-bit codes' range is trained on the first faces added, and must not collapse
    to a point (every later face would then get the same code and the re-score would be
    arbitrary)."""
    tuning = MemoryIndexTuning(shortlist=40, candidates=2)
    index = MemoryIndex(192, tuning)
    now = datetime.now(UTC)
    first = unit_vectors(21, 1, 192)
    index.add([uuid.uuid4()], first, [now])
    later = unit_vectors(22, 30, 192)
    ids = [uuid.uuid4() for _ in later]
    index.add(ids, later * 3.0, [now] * len(ids))  # not unit length: compared by cosine anyway
    for n in (0, 7, 29):
        query = near(later[n], 100 + n, 1, noise=0.3)[0]
        assert index.search(query, 2)[0] == ids[n]


async def test_the_build_reads_each_embedding_exactly(engine: AsyncEngine, sessionmaker):
    """The build reads pgvector's binary form (vector_send): the same float32s as stored."""
    vectors = unit_vectors(13, 3, 192)
    async with sessionmaker() as session:
        await add_person(session, "exact", MODEL, vectors)
        await session.commit()
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(_faces_statement(192, None, since=False)), {"model": MODEL}
            )
        ).all()
    ids, read, _ = _rows_to_arrays(list(rows), 192)
    assert len(ids) == 3 and read.dtype == np.float32
    assert sorted(map(tuple, read.tolist())) == sorted(map(tuple, vectors.tolist()))


def test_the_index_library_loads_beside_the_models_runtime() -> None:
    """Workers load faiss and onnxruntime in one process, in either order. usearch (tried for
    an HNSW graph first) crashed the interpreter when onnxruntime was imported after it (a
    segfault in libstdc++); faiss does not."""
    for first, second in (
        ("app.gallery.memory_index", "onnxruntime"),
        ("onnxruntime", "app.gallery.memory_index"),
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
