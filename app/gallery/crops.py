"""Face thumbnails: which aligned crops a finished job keeps (issue 16).

An upload's faces keep their crops; a node frame's faces keep theirs only when the node's
policy allows (`nodes.store_face_crops`, default false: the frame and anything cut from it stay
off disk, as the frame itself does). Crops live in Postgres beside the detection (face_crops),
so they go with it, its job and its retention in the same transaction: no file to forget.
"""

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, Node


async def crop_keepers(session: AsyncSession, jobs: Sequence[Job]) -> set[uuid.UUID]:
    """The ids of these just-finished jobs whose faces' crops may be kept: every upload, and a
    node's frames where its policy allows. The caller writes them (app/jobs/results.py), in the
    result's transaction."""
    node_ids = {job.node_id for job in jobs if job.node_id is not None}
    allowed_nodes: set[uuid.UUID] = set()
    if node_ids:
        allowed_nodes = set(
            await session.scalars(
                select(Node.id).where(Node.id.in_(node_ids), Node.store_face_crops.is_(True))
            )
        )
    return {job.id for job in jobs if job.node_id is None or job.node_id in allowed_nodes}
