"""Nearest-face SQL (app/gallery/matching.py) on real pgvector: identify is answered from the
model's gallery index (HNSW over sign bits), re-ranked by exact cosine, one row per person; an
owner filter never leaves it short; embeddings of another model are never compared."""

import uuid

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.service import create_key
from app.gallery.matching import SearchTuning, nearest_people, use_exact_hnsw_filtering
from app.models import Person, PersonFace
from app.security import Scope
from app.vectors import gallery_index_name
from tests.conftest import statements_sent


def unit_vectors(seed: int, count: int, dim: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def near(vector: np.ndarray, seed: int, count: int, noise: float) -> np.ndarray:
    """`count` unit vectors around `vector` (cosine to it falls as `noise` grows)."""
    rows = vector + noise * unit_vectors(seed, count, len(vector))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


async def add_person(
    session: AsyncSession,
    name: str,
    model: str,
    vectors: np.ndarray,
    owner_id: uuid.UUID | None = None,
) -> tuple[Person, list[PersonFace]]:
    person = Person(name=name, owner_id=owner_id)
    session.add(person)
    await session.flush()
    faces = [
        PersonFace(
            person_id=person.id,
            model=model,
            dim=len(vector),
            embedding=vector,
            face_px=100.0,
            sharpness=100.0,
            yaw_ratio=0.0,
        )
        for vector in vectors
    ]
    session.add_all(faces)
    await session.flush()
    return person, faces


async def identify_statements(engine, session, run):  # type: ignore[no-untyped-def]
    """The nearest-neighbour statements `run()` sent, with their parameters."""
    return await statements_sent(engine, run, lambda sql: "<~>" in sql or "<=>" in sql)


async def plan_of(session: AsyncSession, statement: str, parameters: object) -> str:
    connection = await session.connection()
    plan = await connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(r[0] for r in plan)


async def test_identify_is_answered_from_the_models_gallery_index(engine, sessionmaker):
    vectors = unit_vectors(1, 50, 192)
    async with sessionmaker() as session:
        ada, _ = await add_person(session, "ada", "mobilefacenet", vectors)
        matches, searches = await identify_statements(
            engine,
            session,
            lambda: nearest_people(session, vectors[7], model="mobilefacenet", owner_id=None),
        )
        assert [m.person_id for m in matches] == [ada.id] and matches[0].cosine > 0.999

        # The very statement identify ran, planned with sequential scans and sorts ruled out
        # (the candidates' ORDER BY … LIMIT can then only come from an index): only an index
        # whose expression and model predicate match the query can serve it. Without the sort
        # rule, table statistics (ANALYZE, as autovacuum runs it) make a 50-row sort cheaper.
        ((statement, parameters),) = searches
        await session.execute(text("ANALYZE people"))
        await session.execute(text("ANALYZE person_faces"))
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text("SET LOCAL enable_sort = off"))
        assert gallery_index_name("mobilefacenet") in await plan_of(session, statement, parameters)
        await session.rollback()


async def test_each_person_once_with_their_best_face_and_its_exact_cosine(sessionmaker):
    query = unit_vectors(5, 1, 192)[0]
    async with sessionmaker() as session:
        # Ada's three faces are all nearer than Bob's one; Bob must still come second.
        ada, ada_faces = await add_person(
            session, "ada", "mobilefacenet", near(query, 6, 3, noise=0.3)
        )
        bob, _ = await add_person(session, "bob", "mobilefacenet", near(query, 7, 1, noise=1.2))
        await add_person(session, "eve", "mobilefacenet", unit_vectors(8, 20, 192))
        matches = await nearest_people(
            session, query, model="mobilefacenet", owner_id=None, limit=2
        )
        assert [m.person_id for m in matches] == [ada.id, bob.id]
        cosines = {f.id: float(query @ f.embedding) for f in ada_faces}
        best = max(cosines, key=lambda face_id: cosines[face_id])
        assert matches[0].face_id == best
        assert matches[0].cosine == round(cosines[best], 4)
        await session.rollback()


async def test_an_owner_is_found_behind_other_owners_nearer_faces(engine, sessionmaker):
    """A third of the gallery is another owner's, and all of its faces are nearer to the query
    than any of this owner's: the index hands over the other owner's faces first, the owner filter
    rejects them, and the scan goes on (hnsw.iterative_scan) until this owner's people turn up,
    instead of answering that nobody matched."""
    query = unit_vectors(11, 1, 192)[0]
    async with sessionmaker() as session:
        key, _ = await create_key(session, name="mine", scopes=[Scope.write])
        for index in range(30):  # the keys-off owner's people, nearer to the query
            await add_person(
                session, f"near {index}", "mobilefacenet", near(query, 100 + index, 5, noise=0.4)
            )
        mine = []
        for index in range(60):  # this key's people: the first one clearly its nearest
            person, _ = await add_person(
                session,
                f"mine {index}",
                "mobilefacenet",
                near(query, 200 + index, 5, noise=0.8 if index == 0 else 1.5),
                owner_id=key.id,
            )
            mine.append(person.id)
        await session.execute(text("ANALYZE person_faces"))
        await session.execute(text("ANALYZE people"))
        tight = SearchTuning(ef_search=10, candidates=10)
        matches, searches = await identify_statements(
            engine,
            session,
            lambda: nearest_people(
                session, query, model="mobilefacenet", owner_id=key.id, limit=2, tuning=tight
            ),
        )
        assert len(matches) == 2 and matches[0].person_id == mine[0]
        assert {m.person_id for m in matches} <= set(mine)
        ((statement, parameters),) = searches
        assert gallery_index_name("mobilefacenet") in await plan_of(session, statement, parameters)
        await session.rollback()


async def test_embeddings_of_another_model_are_never_compared(sessionmaker):
    async with sessionmaker() as session:
        await add_person(session, "arc", "w600k_mbf", unit_vectors(2, 3, 512))
        query = unit_vectors(3, 1, 192)[0]
        assert await nearest_people(session, query, model="mobilefacenet", owner_id=None) == []
        await add_person(session, "bgr", "mobilefacenet_bgr", unit_vectors(9, 3, 192))
        assert await nearest_people(session, query, model="mobilefacenet", owner_id=None) == []
        stand_in, _ = await add_person(session, "mobile", "mobilefacenet", unit_vectors(4, 1, 192))
        found = await nearest_people(session, query, model="mobilefacenet", owner_id=None)
        assert [m.person_id for m in found] == [stand_in.id]
        await session.rollback()


async def test_the_walk_widens_for_a_large_gallery(sessionmaker):
    """hnsw.ef_search is set per query from the model's gallery size (the index's row estimate):
    a larger graph needs a wider walk to find a face as often."""
    tuning = SearchTuning(ef_search=60, ef_search_large=240, large_gallery=30)
    query = unit_vectors(20, 1, 192)[0]
    async with sessionmaker() as session:
        await add_person(session, "few", "mobilefacenet", unit_vectors(21, 20, 192))
        await session.execute(text("ANALYZE person_faces"))
        await nearest_people(session, query, model="mobilefacenet", owner_id=None, tuning=tuning)
        assert await session.scalar(text("SHOW hnsw.ef_search")) == "60"
        await session.rollback()
    async with sessionmaker() as session:
        await add_person(session, "many", "mobilefacenet", unit_vectors(22, 40, 192))
        await session.execute(text("ANALYZE person_faces"))
        await nearest_people(session, query, model="mobilefacenet", owner_id=None, tuning=tuning)
        assert await session.scalar(text("SHOW hnsw.ef_search")) == "240"
        await session.rollback()


async def test_similarity_searches_are_planned_for_their_own_model(sessionmaker):
    """Drivers prepare statements, and Postgres may give a prepared statement a generic plan
    after five runs; a generic plan cannot match the bound model to the partial index's
    `model = '…'`, so it sorts every face instead. The searches' transactions plan per value."""
    vectors = unit_vectors(2, 50, 192)
    async with sessionmaker() as session:
        await add_person(session, "ada", "mobilefacenet", vectors)
        await session.execute(text("ANALYZE person_faces"))
        await session.execute(
            text(
                "PREPARE search(text, vector(192)) AS SELECT id FROM person_faces f "
                "WHERE f.model = $1 ORDER BY "
                "(binary_quantize(f.embedding::vector(192))::bit(192)) <~> "
                "binary_quantize($2)::bit(192) LIMIT 5"
            )
        )
        query = "[" + ",".join(f"{v:.7g}" for v in vectors[0]) + "]"

        async def plan() -> str:
            rows = await session.execute(
                text(f"EXPLAIN EXECUTE search('mobilefacenet', '{query}')")
            )
            return "\n".join(r[0] for r in rows)

        # Only an index can then order the rows (as in the test above).
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text("SET LOCAL enable_sort = off"))
        await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        assert gallery_index_name("mobilefacenet") not in await plan()  # what could happen

        await use_exact_hnsw_filtering(session)  # what every search transaction runs first
        assert (await session.execute(text("SHOW plan_cache_mode"))).scalar() == (
            "force_custom_plan"
        )
        assert gallery_index_name("mobilefacenet") in await plan()
        await session.rollback()
