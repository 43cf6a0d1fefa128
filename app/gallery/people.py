"""People as the API shows them, and the corrections an operator makes (issue 16): name an
unnamed person, merge people, move a face to another person or back to unknown, delete a face,
ignore a cluster, thumbnails. No FastAPI here; callers own the commit.

Two kinds of face belong to a person:
- enrolled faces (person_faces): the gallery; identify matches against these.
- sightings (unknown_faces): faces of past jobs that got no identity, placed with the person
  by the clustering or by hand. A named person's sightings that pass the enrollment quality
  checks are enrolled too (source_detection_id links them; each face once).

Privacy: deleting a face or a person deletes the face's embeddings (the job's and the
gallery's copies), its crop and its cluster membership; the job keeps only the box.
"""

import base64
import json
import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.service import Principal
from app.db import held_rows
from app.errors import Conflict, InvalidInput, NotFound
from app.events_out import service as webhook_deliveries
from app.gallery import matching
from app.gallery.quality import QualityThresholds, assess_face
from app.gallery.schemas import (
    EnrolledFaceOut,
    MovedOut,
    PersonDetail,
    PersonOut,
    PersonPage,
    SightingOut,
    SourceCount,
)
from app.models import (
    Detection,
    FaceCrop,
    FaceEmbedding,
    Job,
    Node,
    Person,
    PersonFace,
    PersonMerge,
    SightingTally,
    UnknownFace,
)
from app.pagination import decode_cursor, encode_cursor
from app.settings import Settings
from app.storage import Storage

# Sightings shown per person in a list (the detail shows up to MAX_DETAIL_SIGHTINGS).
LIST_SIGHTINGS = 12
MAX_DETAIL_SIGHTINGS = 500


def _visible(person: Person | None, viewer: Principal) -> bool:
    return person is not None and (viewer.sees_every_person or person.owner_id == viewer.owner_id)


async def get_person(session: AsyncSession, person_id: uuid.UUID, viewer: Principal) -> Person:
    """The person if `viewer` may see it; another owner's person is NotFound, like a missing one."""
    person = await session.get(Person, person_id, populate_existing=True)
    if person is None or not _visible(person, viewer):
        raise NotFound(f"no person with id {person_id}")
    return person


def named(name: str) -> ColumnElement[bool]:
    """The person called `name`: names are unique per owner whatever their case (the unique
    index on lower(name), ux_people_owner_name), so they are found the same way."""
    return func.lower(Person.name) == name.lower()


async def person_named(
    session: AsyncSession, owner_id: uuid.UUID | None, name: str
) -> Person | None:
    """The owner's person called `name`, whatever its case: at most one (ux_people_owner_name
    covers owner-less people too)."""
    return await session.scalar(
        select(Person).where(Person.owner_id.is_not_distinct_from(owner_id), named(name))
    )


def name_taken(name: str) -> Conflict:
    return Conflict(f"a person named {name!r} already exists; pick another name or merge")


async def flush_name(session: AsyncSession, name: str) -> None:
    """Flush a new or changed name; a clash with another of the owner's people is 409."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if "ux_people_owner_name" in str(exc.orig):
            raise name_taken(name) from exc
        raise


# --- how a person looks in the API -------------------------------------------------------------


def enrolled_face(face: PersonFace) -> EnrolledFaceOut:
    return EnrolledFaceOut(
        id=face.id,
        model=face.model,
        source_job_id=face.source_job_id,
        source_face_id=face.source_detection_id,
        face_px=face.face_px,
        sharpness=face.sharpness,
        yaw_ratio=face.yaw_ratio,
        created_at=face.created_at,
        thumbnail_url=f"/v1/people/{face.person_id}/faces/{face.id}/thumbnail",
    )


async def person_out(
    session: AsyncSession, person: Person, *, sightings_limit: int = MAX_DETAIL_SIGHTINGS
) -> PersonDetail:
    enrolled = list(
        await session.execute(
            select(PersonFace, PersonFace.crop_jpeg.is_not(None))
            # A face's twin of a model upgrade in progress (app/gallery/reembed.py) is the same
            # face: shown once, as the face it was embedded from, until the upgrade drops that.
            .where(PersonFace.person_id == person.id, PersonFace.reembedded_from.is_(None))
            .order_by(PersonFace.created_at, PersonFace.id)
        )
    )
    enrolled_sources = {f.source_detection_id for f, _ in enrolled if f.source_detection_id}
    # First and last seen: the two ends of the person's sightings in their index (0020).
    first_seen, last_seen = (
        await session.execute(
            select(func.min(UnknownFace.seen_at), func.max(UnknownFace.seen_at)).where(
                UnknownFace.person_id == person.id
            )
        )
    ).one()
    # How many and from where: the person's tallies (a few rows), not their every sighting.
    tallied = func.sum(SightingTally.sightings)
    sources = [
        SourceCount(node_id=node_id, node_name=node_name, faces=count)
        for node_id, node_name, count in await session.execute(
            select(SightingTally.node_id, Node.name, tallied)
            .outerjoin(Node, Node.id == SightingTally.node_id)
            .where(SightingTally.person_id == person.id)
            .group_by(SightingTally.node_id, Node.name)
            .having(tallied > 0)
            .order_by(tallied.desc())
        )
    ]
    has_crop = select(FaceCrop.detection_id).where(
        FaceCrop.detection_id == UnknownFace.detection_id
    )
    sightings = await session.execute(
        select(UnknownFace, has_crop.exists())
        .where(UnknownFace.person_id == person.id)
        .order_by(UnknownFace.seen_at.desc(), UnknownFace.detection_id.desc())
        .limit(sightings_limit)
    )
    thumbnails = {f.id: crop for f, crop in enrolled}
    enrolled_out = []
    for face, _ in enrolled:
        out = enrolled_face(face)
        if not thumbnails[face.id]:
            out.thumbnail_url = None
        enrolled_out.append(out)
    return PersonDetail(
        id=person.id,
        name=person.name,
        named=person.name is not None,
        ignored=person.ignored_at is not None,
        created_at=person.created_at,
        face_count=len(enrolled_out),
        faces=enrolled_out,
        sighting_count=sum(source.faces for source in sources),
        first_seen=first_seen,
        last_seen=last_seen,
        sources=sources,
        sightings=[
            SightingOut(
                face_id=u.detection_id,
                job_id=u.job_id,
                seen_at=u.seen_at,
                node_id=u.node_id,
                manual=u.manual,
                enrolled=u.detection_id in enrolled_sources,
                thumbnail_url=f"/v1/faces/{u.detection_id}/thumbnail" if crop else None,
            )
            for u, crop in sightings
        ],
    )


# Each (person, node) written more than once folded into one row, and the rows of people gone
# (deleted or merged away: no foreign key removes them) dropped. One statement: rows the
# triggers add meanwhile are not in its snapshot and stay; a second compaction at once waits
# for this one's deletions and then passes over them.
_COMPACT_TALLIES = text(
    """
    WITH due AS (
        SELECT t.person_id, t.node_id FROM sighting_tallies t
        GROUP BY t.person_id, t.node_id
        HAVING count(*) > 1 OR NOT EXISTS (SELECT 1 FROM people p WHERE p.id = t.person_id)
    ), taken AS (
        DELETE FROM sighting_tallies t USING due
        WHERE t.person_id = due.person_id AND t.node_id IS NOT DISTINCT FROM due.node_id
        RETURNING t.person_id, t.node_id, t.sightings
    )
    INSERT INTO sighting_tallies (person_id, node_id, sightings)
    SELECT taken.person_id, taken.node_id, sum(taken.sightings) FROM taken
    WHERE EXISTS (SELECT 1 FROM people p WHERE p.id = taken.person_id)
    GROUP BY taken.person_id, taken.node_id
    HAVING sum(taken.sightings) <> 0
    """
)


async def compact_tallies(session: AsyncSession) -> None:
    """Keep the sighting tallies about one row a person and source (the maintenance pass)."""
    await session.execute(_COMPACT_TALLIES)


async def list_people(
    session: AsyncSession,
    viewer: Principal,
    *,
    named: bool,
    ignored: bool,
    name: str | None,
    limit: int,
    cursor: str | None,
    min_unnamed_faces: int = 1,
) -> PersonPage:
    """Named people newest first (keyset on created_at, id); unnamed people biggest first
    (most sightings, then newest; the cursor is an offset, as sizes change between pages), those
    left with fewer than `min_unnamed_faces` (clusters.min_person_faces) not listed.
    `name`: case-insensitive substring (named people only). Each item carries its enrolled
    faces and its newest sightings."""
    query = select(Person)
    if not viewer.sees_every_person:
        query = query.where(Person.owner_id.is_not_distinct_from(viewer.owner_id))
    if named:
        query = query.where(Person.name.is_not(None)).order_by(
            Person.created_at.desc(), Person.id.desc()
        )
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(Person.name.ilike(f"%{escaped}%", escape="\\"))
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            query = query.where(
                func.row(Person.created_at, Person.id) < func.row(created_at, last_id)
            )
        offset = 0
    else:
        # Ranked by their tallies (migration 0021): a few rows a person, not their every
        # sighting counted at each call.
        tallies = (
            select(SightingTally.person_id, func.sum(SightingTally.sightings).label("sightings"))
            .group_by(SightingTally.person_id)
            .subquery()
        )
        query = (
            query.join(tallies, tallies.c.person_id == Person.id)
            .where(Person.name.is_(None), tallies.c.sightings >= min_unnamed_faces)
            .where(Person.ignored_at.is_not(None) if ignored else Person.ignored_at.is_(None))
            .order_by(tallies.c.sightings.desc(), Person.created_at.desc(), Person.id.desc())
        )
        offset = _decode_offset(cursor) if cursor is not None else 0
        query = query.offset(offset)
    people = list(await session.scalars(query.limit(limit + 1)))
    items: list[PersonOut] = [
        await person_out(session, p, sightings_limit=LIST_SIGHTINGS) for p in people[:limit]
    ]
    next_cursor = None
    if len(people) > limit:
        next_cursor = encode_cursor(people[limit - 1]) if named else _encode_offset(offset + limit)
    return PersonPage(items=items, next_cursor=next_cursor)


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset|{offset}".encode()).decode().rstrip("=")


def _decode_offset(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        label, offset = raw.split("|")
        # Postgres binds OFFSET as an integer: past 2³¹ the driver refused it (a 500).
        if label != "offset" or not 0 <= int(offset) < 2**31:
            raise ValueError(raw)
        return int(offset)
    except ValueError as exc:
        raise InvalidInput("invalid cursor: pass back next_cursor from the previous page") from exc


# --- enrolling sightings -------------------------------------------------------------------------


def thresholds(settings: Settings) -> QualityThresholds:
    gallery = settings.gallery
    return QualityThresholds(
        min_face_px=gallery.min_face_px,
        min_sharpness=gallery.min_sharpness,
        max_yaw_ratio=gallery.max_yaw_ratio,
        max_roll_deg=gallery.max_roll_deg,
    )


async def enroll_sightings(
    session: AsyncSession, settings: Settings, person: Person, face_ids: Sequence[int] | None
) -> int:
    """Enroll the person's sightings (all, or `face_ids`) that pass the enrollment quality
    checks and are not enrolled yet; near-duplicates of a face the person has are skipped.
    Returns how many joined the gallery. Only named people have a gallery."""
    if person.name is None:
        return 0
    query = (
        select(UnknownFace, Detection, FaceEmbedding, FaceCrop.jpeg)
        .join(Detection, Detection.id == UnknownFace.detection_id)
        .join(FaceEmbedding, FaceEmbedding.detection_id == UnknownFace.detection_id)
        .outerjoin(FaceCrop, FaceCrop.detection_id == UnknownFace.detection_id)
        .where(
            UnknownFace.person_id == person.id,
            ~select(PersonFace.id)
            .where(PersonFace.source_detection_id == UnknownFace.detection_id)
            .exists(),
        )
        .order_by(UnknownFace.detection_id)
    )
    if face_ids is not None:
        query = query.where(UnknownFace.detection_id.in_(list(face_ids)))
    enrolled = 0
    for unknown, detection, embedding, jpeg in await session.execute(query):
        quality = assess_face(
            detection.box,
            detection.landmarks or [],
            float(detection.attributes.get("sharpness", 0.0)),
            thresholds(settings),
        )
        if not quality.usable:
            continue
        nearest = await matching.nearest_face_of_person(
            session, embedding.embedding, model=embedding.model, person_id=person.id
        )
        if nearest is not None and nearest[1] >= settings.gallery.duplicate_threshold:
            continue
        session.add(
            PersonFace(
                id=uuid.uuid4(),
                person_id=person.id,
                model=embedding.model,
                dim=embedding.dim,
                embedding=embedding.embedding,
                source_job_id=unknown.job_id,
                source_detection_id=unknown.detection_id,
                face_px=quality.face_px,
                sharpness=quality.sharpness,
                yaw_ratio=quality.yaw_ratio,
                crop_jpeg=jpeg,
            )
        )
        await session.flush()  # the next face's duplicate check sees this one
        enrolled += 1
    return enrolled


# --- corrections -------------------------------------------------------------------------------


async def update_person(
    session: AsyncSession,
    settings: Settings,
    person_id: uuid.UUID,
    viewer: Principal,
    *,
    name: str | None,
    ignored: bool | None,
) -> PersonDetail:
    """Rename; name an unnamed person (its sightings join the gallery); ignore a cluster."""
    person = await get_person(session, person_id, viewer)
    if ignored is not None:
        person.ignored_at = func.now() if ignored else None
    if name is not None:
        was_unnamed = person.name is None
        person.name = name
        await flush_name(session, name)
        if was_unnamed:
            person.ignored_at = None
            await session.flush()
            await enroll_sightings(session, settings, person, None)
    await session.flush()
    await session.refresh(person)
    return await person_out(session, person)


async def merge_people(
    session: AsyncSession,
    settings: Settings,
    target_id: uuid.UUID,
    source_ids: Sequence[uuid.UUID],
    viewer: Principal,
) -> PersonDetail:
    """Move every face (enrolled and sightings) of `source_ids` to the target, then delete them.
    A named target enrolls the sightings it receives (quality checks apply)."""
    target = await get_person(session, target_id, viewer)
    sources = [await get_person(session, s, viewer) for s in dict.fromkeys(source_ids)]
    if any(s.id == target.id for s in sources):
        raise InvalidInput("a person cannot be merged into itself")
    if any(s.owner_id != target.owner_id for s in sources):
        raise InvalidInput("people of different API keys cannot be merged")
    if target.name is None and any(s.name is not None for s in sources):
        raise InvalidInput("merge the unnamed person into the named one, not the other way")
    ids = [s.id for s in sources]
    await lock_people(session, ids)
    moved = list(
        await session.scalars(
            update(UnknownFace)
            .where(UnknownFace.person_id.in_(ids))
            .values(person_id=target.id)
            .returning(UnknownFace.detection_id)
        )
    )
    await session.execute(
        update(PersonFace).where(PersonFace.person_id.in_(ids)).values(person_id=target.id)
    )
    # Faces past jobs identified as them (or named as runner-up) are the target's now, by its
    # id, so that deleting the target later forgets them too. The name stays the one the job
    # recorded, as a rename leaves it.
    await session.execute(
        _REPOINT_NAMED,
        {"names": [str(i) for i in ids], "target": json.dumps({"person_id": str(target.id)})},
    )
    # And a job that found them before this commits and writes after it (app/jobs/results.py)
    # names the target too: where they went is kept, with those merged into them before.
    await session.execute(
        update(PersonMerge).where(PersonMerge.into_id.in_(ids)).values(into_id=target.id)
    )
    session.add_all(PersonMerge(person_id=i, into_id=target.id) for i in ids)
    await session.flush()
    await session.execute(delete(Person).where(Person.id.in_(ids)))
    await session.flush()
    await enroll_sightings(session, settings, target, moved)
    return await person_out(session, target)


# identity and runner_up of the merged people's faces → the target's id (name and similarity
# kept). Each WHERE is its index's expression (ix_detections_identity_person, …_runner_up_…).
_REPOINT_NAMED = text(
    """
    UPDATE detections SET attributes = attributes
        || CASE WHEN (attributes -> 'identity' ->> 'person_id') = ANY(CAST(:names AS text[]))
           THEN jsonb_build_object('identity', attributes -> 'identity' || CAST(:target AS jsonb))
           ELSE '{}'::jsonb END
        || CASE WHEN (attributes -> 'runner_up' ->> 'person_id') = ANY(CAST(:names AS text[]))
           THEN jsonb_build_object('runner_up', attributes -> 'runner_up' || CAST(:target AS jsonb))
           ELSE '{}'::jsonb END
    WHERE (attributes -> 'identity' ->> 'person_id') = ANY(CAST(:names AS text[]))
       OR (attributes -> 'runner_up' ->> 'person_id') = ANY(CAST(:names AS text[]))
    """
)


async def _sighting(session: AsyncSession, face_id: int, viewer: Principal) -> tuple[Job, int]:
    """The job of face `face_id` if the viewer may see it (NotFound otherwise)."""
    row = (
        await session.execute(
            select(Job, Detection.id)
            .join(Detection, Detection.job_id == Job.id)
            .where(Detection.id == face_id, Detection.kind == "face")
        )
    ).first()
    if row is None or not (viewer.sees_every_job or row[0].owner_id == viewer.owner_id):
        raise NotFound(f"no face with id {face_id}")
    return row[0], row[1]


async def move_face(
    session: AsyncSession,
    settings: Settings,
    storage: Storage,
    face_id: int,
    person_id: uuid.UUID | None,
    viewer: Principal,
) -> MovedOut:
    """Place a face of a past job with `person_id`, or back to unknown (None: "not this
    person"); the clustering never moves it again. Its gallery copy, if any, goes; a named
    target enrolls it (quality checks apply)."""
    job, _ = await _sighting(session, face_id, viewer)
    target = await get_person(session, person_id, viewer) if person_id is not None else None
    if target is not None and target.owner_id != job.owner_id:
        raise InvalidInput("the face and the person belong to different API keys")
    unknown = await session.get(UnknownFace, face_id)
    if unknown is None:
        embedding = await session.get(FaceEmbedding, face_id)
        if embedding is None:
            raise InvalidInput(f"face {face_id} has no embedding (deleted): it cannot be moved")
        unknown = UnknownFace(
            detection_id=face_id,
            job_id=job.id,
            owner_id=job.owner_id,
            model=embedding.model,
            node_id=job.node_id,
            seen_at=job.created_at,
        )
        session.add(unknown)
    unknown.person_id = target.id if target is not None else None
    unknown.manual = True
    await session.execute(delete(PersonFace).where(PersonFace.source_detection_id == face_id))
    await record_placement(session, storage, face_id, target)
    await session.flush()
    enrolled = 0
    if target is not None:
        enrolled = await enroll_sightings(session, settings, target, [face_id])
    return MovedOut(face_id=face_id, person_id=unknown.person_id, enrolled=enrolled > 0)


async def move_enrolled_face(
    session: AsyncSession,
    settings: Settings,
    storage: Storage,
    person_id: uuid.UUID,
    face_id: uuid.UUID,
    target_id: uuid.UUID | None,
    viewer: Principal,
) -> PersonDetail:
    """Move an enrolled face: one from a past job moves as that face does (move_face); an
    uploaded photo's face goes to another named person, or (None) is deleted."""
    person = await get_person(session, person_id, viewer)
    face = await session.get(PersonFace, face_id)
    if face is None or face.person_id != person.id:
        raise NotFound(f"person {person_id} has no face {face_id}")
    if face.source_detection_id is not None:
        await move_face(session, settings, storage, face.source_detection_id, target_id, viewer)
    elif target_id is None:
        await session.delete(face)
    else:
        target = await get_person(session, target_id, viewer)
        if target.name is None or target.owner_id != person.owner_id:
            raise InvalidInput("an enrolled photo moves only to a named person of the same key")
        face.person_id = target.id
    await session.flush()
    return await person_out(session, person)


async def record_placement(
    session: AsyncSession, storage: Storage, face_id: int, person: Person | None
) -> None:
    """A face of a past job placed by hand (moved, promoted) is its new person's in that job's
    result too: a named person's identity marked `manual`, with no similarity (no match made
    it); an unknown face's, placed out of a person or with an unnamed one. A record that
    already names that person stays as the match made it. So deleting the person the job
    took it for leaves it be, and deleting the one it was given to forgets it."""
    detection = await session.get(Detection, face_id)
    if detection is None:
        return
    attributes = dict(detection.attributes or {})
    identity = attributes.get("identity")
    recorded = identity.get("person_id") if isinstance(identity, dict) else None
    if person is not None and person.name is not None:
        if recorded == str(person.id):
            return
        attributes["identity"] = {
            "person_id": str(person.id),
            "name": person.name,
            "similarity": None,
            "manual": True,
        }
        attributes.pop("unknown", None)
    elif recorded is None:
        return
    else:
        attributes["identity"] = None
        attributes["unknown"] = True
    detection.attributes = attributes
    await _forget_drawings(session, storage, [detection.job_id])


async def forget_faces(session: AsyncSession, face_ids: Sequence[int]) -> None:
    """Delete what identifies these faces of past jobs: their embeddings (the job's, the
    gallery copies, the clustering's), their crops. Their boxes stay in their jobs."""
    ids = list(face_ids)
    if not ids:
        return
    await session.execute(delete(PersonFace).where(PersonFace.source_detection_id.in_(ids)))
    await session.execute(delete(UnknownFace).where(UnknownFace.detection_id.in_(ids)))
    await session.execute(delete(FaceCrop).where(FaceCrop.detection_id.in_(ids)))
    await session.execute(delete(FaceEmbedding).where(FaceEmbedding.detection_id.in_(ids)))
    await session.flush()


async def delete_sighting(session: AsyncSession, face_id: int, viewer: Principal) -> None:
    await _sighting(session, face_id, viewer)
    await forget_faces(session, [face_id])


async def delete_person(
    session: AsyncSession, storage: Storage, person_id: uuid.UUID, viewer: Principal
) -> None:
    person = await get_person(session, person_id, viewer)
    await delete_people(session, storage, [person.id])


# pg_advisory_xact_lock key: one deletion or merge of people at a time in the deployment. Each
# rewrites the detections naming its people as identity, then (a deletion) those naming them as
# runner-up: two at once, a face of each naming the other's person second, would each hold a row
# the other wants next (a deadlock, and one of them failed). They are rare; a turn each is cheap.
REMOVAL_LOCK_KEY = 0x6C6B_7064  # "lkpd"


async def lock_people(session: AsyncSession, person_ids: Sequence[uuid.UUID]) -> None:
    """Lock these people's rows for their deletion (or merge away), before anything else of it,
    after any other deletion or merge has committed (REMOVAL_LOCK_KEY): a worker
    finishing a job that identified one of them waits for the lock (app/jobs/results.py
    _vanished_people), then finds them gone; one that finished first has committed its faces,
    which the deletion's later statements then see and forget."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REMOVAL_LOCK_KEY})
    await session.execute(
        select(Person.id).where(Person.id.in_(person_ids)).order_by(Person.id).with_for_update()
    )


async def existing_people(session: AsyncSession, person_ids: Collection[str]) -> set[str]:
    """Which of these people (ids as text) still exist, locked against their deletion until the
    caller commits: a deletion locks them first (lock_people), so either it has committed when
    this returns (they are not in the answer) or it waits for the caller and then sees what the
    caller wrote about them (and forgets it)."""
    return await held_rows(session, "people", person_ids)


# The merged-into people locked FOR KEY SHARE, as existing_people locks: a deletion of one of
# them waits for the caller's commit and then forgets what it wrote naming them.
_MERGED_INTO = text(
    """
    SELECT CAST(m.person_id AS text), CAST(m.into_id AS text)
    FROM person_merges m JOIN people p ON p.id = m.into_id
    WHERE m.person_id = ANY(CAST(:ids AS uuid[]))
    FOR KEY SHARE OF p
    """
)


async def merged_into(session: AsyncSession, person_ids: Collection[str]) -> dict[str, str]:
    """Of these people gone (ids as text), those merged into someone who still exists, and
    into whom; held like existing_people until the caller commits."""
    if not person_ids:
        return {}
    rows = await session.execute(_MERGED_INTO, {"ids": sorted(person_ids)})
    return {gone: into for gone, into in rows.all()}


async def delete_people(
    session: AsyncSession, storage: Storage, person_ids: Sequence[uuid.UUID]
) -> None:
    """Delete these people with everything that identifies their faces: enrolled embeddings and
    crops (CASCADE); their sightings' and promoted faces' embeddings, crops and cluster
    membership (forget_faces), so none of them clusters again as a new unnamed person; and the
    faces past jobs identified as them, which stay in their jobs as an unknown face's box (their
    name goes from the result and from any processed image drawn with it). Every delete of a
    person comes here, the compatible APIs' too; the caller has checked the viewer's access.
    Other faces that named them as their runner-up lose that name too."""
    ids = list(dict.fromkeys(person_ids))
    if not ids:
        return
    await lock_people(session, ids)
    sightings = await session.scalars(
        select(UnknownFace.detection_id).where(UnknownFace.person_id.in_(ids))
    )
    promoted = await session.scalars(
        select(PersonFace.source_detection_id).where(
            PersonFace.person_id.in_(ids), PersonFace.source_detection_id.is_not(None)
        )
    )
    identified = await _unname_identified(session, storage, ids)
    # A face that was someone else's (or nobody's) keeps its identity; only the deleted
    # person's name and id go from its runner-up.
    await session.execute(_FORGET_RUNNER_UP, {"names": [str(i) for i in ids]})
    await forget_faces(
        session, sorted({*sightings, *(p for p in promoted if p is not None), *identified})
    )
    await session.execute(delete(Person).where(Person.id.in_(ids)))
    await webhook_deliveries.forget_people(session, ids)
    await session.flush()


# The expression is ix_detections_identity_person's (migration 0011), written out so that the
# index serves it.
_UNNAME_IDENTIFIED = text(
    """
    UPDATE detections
    SET attributes = attributes || '{"identity": null, "unknown": true}'::jsonb
    WHERE (attributes -> 'identity' ->> 'person_id') = ANY(CAST(:names AS text[]))
      AND NOT EXISTS (  -- promoted to someone else since: that person's face now
        SELECT 1 FROM person_faces f
        WHERE f.source_detection_id = detections.id AND f.person_id <> ALL(CAST(:ids AS uuid[]))
      )
    RETURNING id, job_id
    """
)


# ix_detections_runner_up_person's expression (migration 0013), written out likewise.
_FORGET_RUNNER_UP = text(
    """
    UPDATE detections SET attributes = attributes || '{"runner_up": null}'::jsonb
    WHERE (attributes -> 'runner_up' ->> 'person_id') = ANY(CAST(:names AS text[]))
    """
)


async def _unname_identified(
    session: AsyncSession, storage: Storage, person_ids: Sequence[uuid.UUID]
) -> list[int]:
    """Faces past jobs identified as these people become unknown faces; their ids. The
    processed images cached for their jobs show the name: deleted, drawn again on request."""
    params = {"names": [str(i) for i in person_ids], "ids": list(person_ids)}
    rows = (await session.execute(_UNNAME_IDENTIFIED, params)).all()
    await _forget_drawings(session, storage, {job_id for _, job_id in rows})
    return [detection_id for detection_id, _ in rows]


async def _forget_drawings(
    session: AsyncSession, storage: Storage, job_ids: Collection[uuid.UUID]
) -> None:
    """The processed images cached for these jobs show names that changed: deleted, drawn
    again on request. Called after the detections' UPDATE: a drawing under way holds its
    detections FOR SHARE (app/jobs/service.py get_processed_image), so that UPDATE waited for it
    and the key it committed is read here; one asked for after waits for this commit. The job
    rows are not locked here: a job's DELETE locks its row, then its detections."""
    if not job_ids:
        return
    drawn = await session.scalars(
        select(Job.processed_image_key).where(
            Job.id.in_(job_ids), Job.processed_image_key.is_not(None)
        )
    )
    for key in drawn:
        if key is not None:
            storage.delete(key)


async def delete_enrolled_face(
    session: AsyncSession, person_id: uuid.UUID, face_id: uuid.UUID, viewer: Principal
) -> None:
    """Delete one enrolled face; one promoted from a past job is forgotten there too."""
    await get_person(session, person_id, viewer)
    if not await delete_enrolled_faces(session, [face_id], person_id=person_id):
        raise NotFound(f"person {person_id} has no face {face_id}")


async def delete_enrolled_faces(
    session: AsyncSession,
    face_ids: Sequence[uuid.UUID],
    *,
    person_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Delete these enrolled faces (only `person_id`'s, when given); those promoted from a past
    job are forgotten there too (forget_faces). The ids deleted; the caller checked access."""
    query = delete(PersonFace).where(PersonFace.id.in_(list(face_ids)))
    if person_id is not None:
        query = query.where(PersonFace.person_id == person_id)
    deleted = (
        await session.execute(query.returning(PersonFace.id, PersonFace.source_detection_id))
    ).all()
    await forget_faces(session, [source for _, source in deleted if source is not None])
    await session.flush()
    return [face_id for face_id, _ in deleted]


async def sighting_thumbnail(session: AsyncSession, face_id: int, viewer: Principal) -> bytes:
    await _sighting(session, face_id, viewer)
    jpeg = await session.scalar(select(FaceCrop.jpeg).where(FaceCrop.detection_id == face_id))
    if jpeg is None:
        raise NotFound(f"face {face_id} has no thumbnail (none kept, or it was deleted)")
    return bytes(jpeg)


async def enrolled_thumbnail(
    session: AsyncSession, person_id: uuid.UUID, face_id: uuid.UUID, viewer: Principal
) -> bytes:
    await get_person(session, person_id, viewer)
    jpeg = await session.scalar(
        select(PersonFace.crop_jpeg).where(
            PersonFace.id == face_id, PersonFace.person_id == person_id
        )
    )
    if jpeg is None:
        raise NotFound(f"person {person_id} has no face {face_id} with a thumbnail")
    return bytes(jpeg)
