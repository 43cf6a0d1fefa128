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

from app.models import FaceCrop, Job, Node


async def record_face_crops(
    session: AsyncSession,
    jobs: Sequence[Job],
    crops: dict[uuid.UUID, Sequence[tuple[int, bytes | None]]],
) -> int:
    """Store the (detection id, JPEG) crops of these just-finished jobs that may be kept;
    returns how many. The caller owns the transaction (the result write's)."""
    if not any(jpeg is not None for job_crops in crops.values() for _, jpeg in job_crops):
        return 0  # no face kept a crop: no need to ask the nodes' policies
    node_ids = {job.node_id for job in jobs if job.node_id is not None}
    allowed_nodes: set[uuid.UUID] = set()
    if node_ids:
        allowed_nodes = set(
            await session.scalars(
                select(Node.id).where(Node.id.in_(node_ids), Node.store_face_crops.is_(True))
            )
        )
    rows = [
        FaceCrop(detection_id=detection_id, job_id=job.id, jpeg=jpeg)
        for job in jobs
        if job.node_id is None or job.node_id in allowed_nodes
        for detection_id, jpeg in crops.get(job.id, ())
        if jpeg is not None
    ]
    session.add_all(rows)
    return len(rows)
