"""Face thumbnails: which aligned crops a finished job keeps (issue 16).

An upload's faces keep their crops; a node frame's faces keep theirs only when the node's
policy allows it both when the frame arrived and when its job finishes
(`nodes.store_face_crops`, default false: the frame and anything cut from it stay off disk, as
the frame itself does). Crops live in Postgres beside the detection (face_crops), so they go
with it, its job and its retention in the same transaction: no file to forget.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, Node


async def crop_keepers(session: AsyncSession, jobs: Sequence[Job]) -> set[uuid.UUID]:
    """The ids of these just-finished jobs whose faces' crops may be kept: every upload, and a
    node's frames where its policy allows. The caller writes them (app/jobs/results.py), in the
    result's transaction."""
    node_ids = {job.node_id for job in jobs if job.node_id is not None}
    allowed_since: dict[uuid.UUID, datetime | None] = {}
    if node_ids:
        rows = await session.execute(
            select(Node.id, Node.face_crops_since).where(
                Node.id.in_(node_ids), Node.store_face_crops.is_(True)
            )
        )
        allowed_since = {node_id: since for node_id, since in rows}

    def keeps(job: Job) -> bool:
        if job.node_id is None:
            return True
        if job.node_id not in allowed_since:
            return False
        since = allowed_since[job.node_id]  # a frame queued before crops were allowed: none
        return since is None or job.created_at >= since

    return {job.id for job in jobs if keeps(job)}
