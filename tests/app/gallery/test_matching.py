"""Nearest-face SQL (app/gallery/matching.py) on real pgvector: Postgres can answer it from the
model's HNSW index, and embeddings of another model are never compared."""

import numpy as np
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.gallery.matching import nearest_people
from app.models import Person, PersonFace
from app.vectors import hnsw_index_name


def unit_vectors(seed: int, count: int, dim: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


async def add_person(session: AsyncSession, name: str, model: str, vectors: np.ndarray) -> Person:
    person = Person(name=name, owner_id=None)
    session.add(person)
    await session.flush()
    for vector in vectors:
        session.add(
            PersonFace(
                person_id=person.id,
                model=model,
                dim=len(vector),
                embedding=vector,
                face_px=100.0,
                sharpness=100.0,
                yaw_ratio=0.0,
            )
        )
    await session.flush()
    return person


async def test_identify_is_answered_from_the_models_hnsw_index(engine, sessionmaker):
    vectors = unit_vectors(1, 50, 192)
    async with sessionmaker() as session:
        ada = await add_person(session, "ada", "mobilefacenet", vectors)
        searches: list[tuple[str, object]] = []

        def remember(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if "<=>" in statement:
                searches.append((statement, parameters))

        event.listen(engine.sync_engine, "before_cursor_execute", remember)
        try:
            matches = await nearest_people(
                session, vectors[7], model="mobilefacenet", owner_id=None
            )
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", remember)
        assert [m.person_id for m in matches] == [ada.id] and matches[0].cosine > 0.999

        # The very statement identify ran, planned with sequential scans ruled out: only an index
        # whose expression and model predicate match the query can serve it.
        ((statement, parameters),) = searches
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        connection = await session.connection()
        plan = await connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        assert hnsw_index_name("person_faces", "mobilefacenet") in "\n".join(r[0] for r in plan)
        await session.rollback()


async def test_embeddings_of_another_model_are_never_compared(sessionmaker):
    async with sessionmaker() as session:
        await add_person(session, "arc", "w600k_mbf", unit_vectors(2, 3, 512))
        query = unit_vectors(3, 1, 192)[0]
        assert await nearest_people(session, query, model="mobilefacenet", owner_id=None) == []
        stand_in = await add_person(session, "mobile", "mobilefacenet", unit_vectors(4, 1, 192))
        found = await nearest_people(session, query, model="mobilefacenet", owner_id=None)
        assert [m.person_id for m in found] == [stand_in.id]
        await session.rollback()
