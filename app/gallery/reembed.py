"""A gallery model upgrade without the photos (`lookout gallery reembed --model NEW`): the
database side. No FastAPI here, no model either (the command runs the embedder in workers/).

Every enrolled face keeps the embedder's aligned crop (person_faces.crop_jpeg), so a new model
can embed it again. The upgrade runs in three steps, each safe to stop and run again:

1. Embed: each face of another model that has a crop gets a *twin* of the new model (same
   person, quality figures, crop and date; `reembedded_from` = the face), in batches, one
   transaction each. Both vectors live side by side; identify compares a face only with
   vectors of the model that embedded it (app/gallery/matching.py), so it goes on working on
   the old ones for the workers that still run the old model.
2. Switch: identify follows the model the workers embed with. Once the workers run the new
   model (LOOKOUT_MODELS__FACE_PACK), every person already has its vectors there.
3. Drop: the old faces that have a twin are deleted in one transaction; each twin takes over
   its face's place (person, and the past job it was promoted from). A face deleted or moved
   during the upgrade takes its twin with it (ON DELETE CASCADE; moves are re-applied here).

Faces without a crop (from a node whose policy keeps none) cannot be embedded again: they are
counted and left as they are.
"""

import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.embedders import embedder_dims


@dataclass(frozen=True)
class Progress:
    """Faces of other models than the target, and how far their re-embedding has come."""

    old_faces: int
    embedded: int  # have a twin of the target model
    without_crop: int  # can never have one

    @property
    def remaining(self) -> int:
        return self.old_faces - self.embedded - self.without_crop


@dataclass(frozen=True)
class FaceCrop:
    face_id: uuid.UUID
    jpeg: bytes


async def progress(session: AsyncSession, model: str) -> Progress:
    row = (
        await session.execute(
            text(
                """
                SELECT count(*) AS old_faces,
                    count(*) FILTER (WHERE EXISTS (
                        SELECT 1 FROM person_faces t
                        WHERE t.reembedded_from = f.id AND t.model = :model)) AS embedded,
                    count(*) FILTER (WHERE f.crop_jpeg IS NULL) AS without_crop
                FROM person_faces f WHERE f.model <> :model
                """
            ),
            {"model": model},
        )
    ).one()
    return Progress(int(row.old_faces), int(row.embedded), int(row.without_crop))


async def faces_to_embed(session: AsyncSession, model: str, limit: int) -> list[FaceCrop]:
    """The next faces of other models with a crop and no twin of `model` yet."""
    rows = await session.execute(
        text(
            """
            SELECT f.id, f.crop_jpeg FROM person_faces f
            WHERE f.model <> :model AND f.crop_jpeg IS NOT NULL
              AND NOT EXISTS (
                SELECT 1 FROM person_faces t WHERE t.reembedded_from = f.id AND t.model = :model)
            ORDER BY f.id
            LIMIT :limit
            """
        ),
        {"model": model, "limit": limit},
    )
    return [FaceCrop(row.id, bytes(row.crop_jpeg)) for row in rows]


async def add_twins(
    session: AsyncSession,
    model: str,
    face_ids: list[uuid.UUID],
    vectors: npt.NDArray[np.float32],
) -> int:
    """Store each face's `model` vector as its twin (a face deleted meanwhile gets none; one
    that already has a twin keeps it). Returns the twins added; the caller commits."""
    dim = embedder_dims()[model]
    if vectors.shape != (len(face_ids), dim):
        raise ValueError(f"{model} makes {dim}-d vectors; got {vectors.shape}")
    result = await session.execute(
        text(
            """
            INSERT INTO person_faces (id, person_id, model, dim, embedding, source_job_id,
                face_px, sharpness, yaw_ratio, crop_jpeg, reembedded_from, created_at)
            SELECT gen_random_uuid(), f.person_id, :model, :dim, CAST(v.vector AS vector),
                f.source_job_id, f.face_px, f.sharpness, f.yaw_ratio, f.crop_jpeg, f.id,
                f.created_at
            FROM unnest(CAST(:ids AS uuid[]), CAST(:vectors AS text[])) AS v(face_id, vector)
            JOIN person_faces f ON f.id = v.face_id
            ON CONFLICT (reembedded_from, model) WHERE reembedded_from IS NOT NULL DO NOTHING
            """
        ),
        {
            "model": model,
            "dim": dim,
            "ids": face_ids,
            "vectors": ["[" + ",".join(f"{x:.7g}" for x in v) + "]" for v in vectors],
        },
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def drop_old_faces(session: AsyncSession, model: str) -> int:
    """Step 3: delete every face that has a `model` twin, the twin taking its place. One
    transaction (the caller commits): identify sees either both or only the new vectors."""
    params = {"model": model}
    # A face moved to another person during the upgrade: its twin follows it there.
    await session.execute(
        text(
            """
            UPDATE person_faces t SET person_id = o.person_id
            FROM person_faces o
            WHERE t.reembedded_from = o.id AND t.model = :model AND t.person_id <> o.person_id
            """
        ),
        params,
    )
    await session.execute(
        text(
            """
            CREATE TEMP TABLE reembed_pairs ON COMMIT DROP AS
            SELECT t.id AS twin, o.id AS origin, o.source_detection_id
            FROM person_faces t JOIN person_faces o ON o.id = t.reembedded_from
            WHERE t.model = :model
            """
        ),
        params,
    )
    # Detached first: deleting the old face would otherwise delete its twin (the cascade).
    await session.execute(
        text(
            "UPDATE person_faces SET reembedded_from = NULL "
            "WHERE id IN (SELECT twin FROM reembed_pairs)"
        )
    )
    deleted = await session.execute(
        text("DELETE FROM person_faces WHERE id IN (SELECT origin FROM reembed_pairs)")
    )
    # The twin is now the face promoted from that past job (a unique link, hence after).
    await session.execute(
        text(
            """
            UPDATE person_faces t SET source_detection_id = p.source_detection_id
            FROM reembed_pairs p
            WHERE t.id = p.twin AND p.source_detection_id IS NOT NULL
            """
        )
    )
    return int(getattr(deleted, "rowcount", 0) or 0)
