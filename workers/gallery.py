"""The gallery step: right after inference, label each face of an `identify` job with the
nearest enrolled person of the job's owner, or as unknown.

The gallery is read from Postgres for every batch, so people enrolled or deleted a moment ago
are seen by the very next batch, with no worker restart. A large gallery's in-memory index
(app/gallery/memory_index.py) only proposes candidates: Postgres re-ranks and filters them, and
adds the faces enrolled since the index was built.
"""

import dataclasses
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.gallery.matching import nearest_people, use_exact_hnsw_filtering
from app.models import Job
from workers.detectors.base import Detection

IDENTIFY_TASK = "identify"


async def identify_faces(
    session: AsyncSession,
    jobs: Sequence[tuple[uuid.UUID, Sequence[Detection]]],
    *,
    match_threshold: float,
) -> list[list[Detection]]:
    """For each (job id, detections): the detections, faces with an identity attribute.

    A face's attributes gain {"identity": {"person_id", "name", "similarity"}} when its nearest
    enrolled face (same model, same owner) is at least `match_threshold` similar (calibrated
    similarity, app/calibration.py), else
    {"identity": None, "unknown": True, "similarity": best or None}; and in both cases the
    reason: "threshold" (the one that applied) and "runner_up" (the next best person, or None).
    """
    await use_exact_hnsw_filtering(session)
    rows = await session.execute(
        select(Job.id, Job.owner_id).where(Job.id.in_([job_id for job_id, _ in jobs]))
    )
    owners = {job_id: owner_id for job_id, owner_id in rows}
    labelled: list[list[Detection]] = []
    for job_id, detections in jobs:
        out = []
        for detection in detections:
            if detection.kind != "face" or detection.embedding is None:
                out.append(detection)
                continue
            matches = await nearest_people(
                session,
                detection.embedding.vector,
                model=detection.embedding.model,
                owner_id=owners.get(job_id),
                limit=2,
            )
            best = matches[0] if matches else None
            second = matches[1] if len(matches) > 1 else None
            attributes = dict(detection.attributes)
            attributes["threshold"] = match_threshold
            attributes["runner_up"] = (
                {
                    "person_id": str(second.person_id),
                    "name": second.name,
                    "similarity": second.similarity,
                }
                if second is not None
                else None
            )
            if best is not None and best.similarity >= match_threshold:
                attributes["identity"] = {
                    "person_id": str(best.person_id),
                    "name": best.name,
                    "similarity": best.similarity,
                }
                attributes.pop("unknown", None)
            else:
                attributes["identity"] = None
                attributes["unknown"] = True
                attributes["similarity"] = best.similarity if best is not None else None
            out.append(dataclasses.replace(detection, attributes=attributes))
        labelled.append(out)
    return labelled
