"""Bulk enrollment (POST /v1/people/import): photos laid out as `person name/photo.jpg`, in a zip
or as many files, enrolled through the workers in batches. No FastAPI here.

- The request only checks the archive and records the import (its photos wait on disk, in
  data_dir/imports); an ImportRunner in the API process runs it in the background.
- Photos go to the workers as ordinary jobs, `import_batch` per batch, the next batch queued
  while the previous one is finished, so the workers never wait for the import.
- Each photo is enrolled on the gallery's terms (one usable face, quality, near-duplicates);
  unlike POST /v1/people/{id}/faces it is not all or nothing: a refused photo is counted and
  listed with its reason, the rest go in.
- One transaction per batch: its faces, the people it creates, its jobs' deletion and the
  import's counters commit together, so the counters are the truth after a crash and a
  restarted API resumes the import after its last committed batch.
- One database session at a time per import, `import_concurrency` imports per API process: a
  100,000-photo import holds a couple of connections, never the pool.
"""

import asyncio
import contextlib
import io
import os
import uuid
import zipfile
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import structlog
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import streams
from app.apikeys.service import Principal
from app.cancellation import cancel_and_wait
from app.commits import commit
from app.errors import AppError, Conflict, InvalidInput, NotFound
from app.gallery import service
from app.gallery.schemas import DuplicateOut, ImportOut, ImportProblemOut, PersonName
from app.images import accept_image
from app.jobs import service as jobs
from app.models import ImportStatus, Job, JobPurpose, PeopleImport, Person
from app.settings import Settings
from app.storage import Storage

log = structlog.get_logger()

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Refusals kept with the import (the counters count them all).
MAX_PROBLEMS = 500
# The lock a running import holds (per import, in Redis), renewed well within its life.
LOCK_TTL_S = 60.0
_NAME = TypeAdapter(PersonName)


class InvalidArchive(InvalidInput):
    code = "invalid_archive"


@dataclass(frozen=True)
class ImportPhoto:
    member: str  # its name in the archive
    person: str  # the folder it sits in: the person's name
    label: str  # "person/file.jpg", how the import's report names it


def imports_storage(settings: Settings) -> Storage:
    """Where imports' archives wait until they are over: a folder of the image volume (which
    every API process shares, so any of them can resume an import), beside the images, not
    among them: the image store's TTL and size cap sweep its top level only."""
    return Storage(settings.storage_dir / "imports")


# --- the archive -------------------------------------------------------------------------------


def archive_from_files(files: Sequence[tuple[str, bytes]]) -> bytes:
    """Many uploaded files → one archive. Each file's name must be `person/photo.jpg` (only
    the last folder counts); the archive stores them as they are (photos do not compress)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files:
            if "\x00" in name:  # a zip entry's name ends at its first NUL
                raise InvalidArchive(f"{name!r}: a file name cannot hold a NUL character")
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if len(parts) < 2:
                raise InvalidArchive(
                    f"{name!r}: name each file after its person's folder, e.g. "
                    "'ada/photo1.jpg' (curl: -F 'images=@photo1.jpg;filename=ada/photo1.jpg')"
                )
            archive.writestr("/".join(parts[-2:]), data)
    return buffer.getvalue()


# Decompressed in steps of this many bytes: the photo's size as the archive's directory states
# it (checked against the upload limit) ends the read, whatever the compressed data holds.
_READ_STEP = 1 << 20


def read_photo(archive: zipfile.ZipFile, name: str) -> bytes:
    """A photo's bytes, decompressed step by step (ZipFile.read inflates up to 2 GiB in one
    call whatever size the directory states: a 1 MB zip took the API to 2.2 GB of memory).
    Only stored and deflated entries, what zip tools write: bzip2 and LZMA decompress a whole
    read at once (a 1.6 KB entry to 2 GB), so they are refused (NotImplementedError)."""
    member = archive.getinfo(name)
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise NotImplementedError(
            f"compression method {member.compress_type} is not accepted: zip the photos "
            "stored or deflated (what zip tools do by default)"
        )
    parts = []
    with archive.open(member) as source:
        while chunk := source.read(_READ_STEP):
            parts.append(chunk)
    return b"".join(parts)


def photos_in_archive(data: bytes | Path, settings: Settings) -> list[ImportPhoto]:
    """The archive's photos, in the order an import runs them (by person, then file).

    Raises InvalidArchive (422) naming the problem: not a zip, no photos, a photo outside a
    person's folder, a folder name that cannot be a name, too many photos, a photo over the
    upload size limit (checked from the archive's directory: nothing is decompressed here).
    Files that are not photos (a README, .DS_Store, __MACOSX/) are skipped.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise InvalidArchive(f"the archive is not a readable zip file ({exc})") from exc
    photos = []
    for member in members:
        if not member.filename:  # zipfile cuts a name at a NUL: "\0ada/1.jpg" has none left
            raise InvalidArchive("an entry of the archive has no name (it starts with a NUL)")
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if member.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in path.parts):
            continue
        if path.suffix.lower() not in PHOTO_SUFFIXES:
            continue
        if len(path.parts) < 2:
            raise InvalidArchive(
                f"{member.filename!r} is not in a person's folder: lay photos out as "
                "'person name/photo.jpg'"
            )
        if member.file_size > settings.api.max_upload_bytes:
            raise InvalidArchive(
                f"{member.filename!r} is larger than the limit of "
                f"{settings.api.max_upload_bytes} bytes"
            )
        try:
            person = _NAME.validate_python(path.parts[-2])
        except ValidationError as exc:
            raise InvalidArchive(
                f"the folder {path.parts[-2]!r} cannot be a person's name: {exc.errors()[0]['msg']}"
            ) from exc
        photos.append(ImportPhoto(member.filename, person, f"{path.parts[-2]}/{path.name}"))
    if not photos:
        raise InvalidArchive(
            "the archive holds no photos (.jpg, .jpeg, .png, .webp, .bmp, .gif, .tif, .tiff) in "
            "person folders"
        )
    if len(photos) > settings.gallery.import_max_photos:
        raise InvalidArchive(
            f"{len(photos)} photos in one import; at most {settings.gallery.import_max_photos}: "
            "split it (lookout people import does)"
        )
    return sorted(photos, key=lambda p: (p.person.casefold(), p.member))


async def create_import(
    session: AsyncSession, settings: Settings, archive: bytes, owner_id: uuid.UUID | None
) -> PeopleImport:
    """Check the archive, keep it on disk and record the import (flushed; queued). The caller
    commits, then hands it to the ImportRunner."""
    photos = photos_in_archive(archive, settings)
    row = PeopleImport(
        id=uuid.uuid4(),
        owner_id=owner_id,
        status=ImportStatus.queued,
        total=len(photos),
        problems=[],
    )
    row.archive_key = f"{row.id}.zip"
    await asyncio.to_thread(imports_storage(settings).put, row.archive_key, archive)
    session.add(row)
    try:
        await session.flush()
    except BaseException:
        imports_storage(settings).delete(row.archive_key)
        raise
    return row


async def get_import(
    session: AsyncSession, import_id: uuid.UUID, viewer: Principal
) -> PeopleImport:
    row = await session.get(PeopleImport, import_id, populate_existing=True)
    if row is None or not (viewer.sees_every_person or row.owner_id == viewer.owner_id):
        raise NotFound(f"no import with id {import_id}")
    return row


def import_out(row: PeopleImport) -> ImportOut:
    return ImportOut(
        id=row.id,
        status=row.status.value,
        total=row.total,
        processed=row.processed,
        enrolled=row.enrolled,
        duplicates=row.duplicates,
        refused=row.refused,
        people_created=row.people_created,
        problems=[ImportProblemOut(**p) for p in row.problems],
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status_url=f"/v1/people/imports/{row.id}",
    )


# --- running an import -------------------------------------------------------------------------


@dataclass
class _Batch:
    photos: list[ImportPhoto]
    queued: list[tuple[ImportPhoto, uuid.UUID]] = field(default_factory=list)  # photo, its job
    refused: list[tuple[ImportPhoto, str]] = field(default_factory=list)  # not even queued

    @property
    def job_ids(self) -> list[uuid.UUID]:
        return [job_id for _, job_id in self.queued]


@dataclass
class _Tally:
    enrolled: int = 0
    duplicates: int = 0
    people_created: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (label, reason)


class ImportRunner:
    """Runs imports in the API process, at most `import_concurrency` at a time.

    Each import runs under a Redis lock of its own, so in a deployment of several API
    processes exactly one runs it; `resume` (at startup) picks up the imports a stopped process
    left unfinished, where their photos are (data_dir is the API's volume).
    """

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        storage: Storage,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.storage = storage
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._slots = asyncio.Semaphore(settings.gallery.import_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, import_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._run(import_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume(self) -> None:
        """Start the unfinished imports (never raises: a database that is down at startup
        only delays them to the next start). One whose photos are gone fails, saying so."""
        store = imports_storage(self.settings)
        try:
            async with self.sessionmaker() as session:
                rows = await session.scalars(
                    select(PeopleImport)
                    .where(PeopleImport.status.in_([ImportStatus.queued, ImportStatus.running]))
                    .order_by(PeopleImport.created_at)
                )
                unfinished = [
                    (r.id, bool(r.archive_key and store.exists(r.archive_key))) for r in rows
                ]
            for import_id, has_photos in unfinished:
                if has_photos:
                    self.submit(import_id)
                elif await streams.try_lock(
                    self.redis, streams.import_lock_key(import_id), owner=self.owner, ttl_s=1
                ):
                    await _finish(
                        self.sessionmaker,
                        self.settings,
                        import_id,
                        error="its photos are gone from the image volume; import them again",
                    )
        except Exception as exc:
            log.warning("imports_resume_failed", error=repr(exc))

    async def wait(self) -> None:
        """Until every submitted import is over (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)

    async def _run(self, import_id: uuid.UUID) -> None:
        lock = streams.import_lock_key(import_id)
        async with self._slots:
            if not await streams.try_lock(self.redis, lock, owner=self.owner, ttl_s=LOCK_TTL_S):
                return  # another API process runs it
            keeper = asyncio.create_task(self._keep_lock(lock))
            try:
                await run_import(
                    import_id, self.settings, self.sessionmaker, self.redis, self.storage
                )
            except asyncio.CancelledError:
                raise  # shutdown: the import resumes at the next start
            except Exception as exc:
                log.exception("import_failed", import_id=str(import_id))
                await _finish(self.sessionmaker, self.settings, import_id, error=repr(exc))
            finally:
                # Waited for, and cancelled again if need be: a loop over Redis commands whose
                # cancel was dropped (app/cancellation.py) would extend the lock forever.
                await cancel_and_wait([keeper])
                with contextlib.suppress(Exception):
                    await streams.release_lock(self.redis, lock, owner=self.owner)

    async def _keep_lock(self, lock: str) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            with contextlib.suppress(Exception):
                await streams.extend_lock(self.redis, lock, owner=self.owner, ttl_s=LOCK_TTL_S)


async def run_import(
    import_id: uuid.UUID,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    storage: Storage,
) -> None:
    """Run (or resume, after its last committed batch) one import to the end."""
    async with sessionmaker() as session:
        row = await session.get(PeopleImport, import_id)
        if row is None or row.status in (ImportStatus.done, ImportStatus.failed):
            return
        row.status = ImportStatus.running
        row.started_at = row.started_at or datetime.now(UTC)
        owner_id, start, archive_key = row.owner_id, row.processed, row.archive_key
        await commit(session)
    assert archive_key is not None
    path = imports_storage(settings).path(archive_key)
    photos = photos_in_archive(path, settings)[start:]
    size = settings.gallery.import_batch
    batches = [photos[i : i + size] for i in range(0, len(photos), size)]
    person_ids: dict[str, uuid.UUID] = {}
    in_flight: deque[_Batch] = deque()
    try:
        with zipfile.ZipFile(path) as archive:
            for photos_of_batch in batches:
                in_flight.append(
                    await _queue_batch(
                        sessionmaker, redis, storage, settings, archive, photos_of_batch, owner_id
                    )
                )
                if len(in_flight) >= settings.gallery.import_batches_in_flight:
                    batch = in_flight.popleft()
                    await _enroll_batch(
                        sessionmaker, redis, storage, settings, import_id, batch, owner_id,
                        person_ids,
                    )  # fmt: skip
            while in_flight:
                batch = in_flight.popleft()
                await _enroll_batch(
                    sessionmaker, redis, storage, settings, import_id, batch, owner_id,
                    person_ids,
                )  # fmt: skip
    except Exception:
        # The batches queued ahead will never be enrolled: their jobs go now, not at retention.
        async with sessionmaker() as session:
            await service.discard_jobs(
                session, storage, [job_id for b in in_flight for job_id in b.job_ids]
            )
            await commit(session)
        raise
    await _finish(sessionmaker, settings, import_id, error=None)


async def _queue_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    storage: Storage,
    settings: Settings,
    archive: zipfile.ZipFile,
    photos: list[ImportPhoto],
    owner_id: uuid.UUID | None,
) -> _Batch:
    """One job per photo, committed and queued for the workers; a photo that is not an image
    (or too large) is refused here with the reason /v1/images would give."""
    batch = _Batch(photos)
    async with sessionmaker() as session:
        created: list[tuple[ImportPhoto, Job]] = []
        for photo in photos:
            try:
                data = await asyncio.to_thread(read_photo, archive, photo.member)
            except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
                # Encrypted (RuntimeError), an unsupported compression, a bad CRC: this photo's
                # problem; it failed the whole import, batches already enrolled included.
                batch.refused.append((photo, f"cannot be read from the archive: {exc}"))
                continue
            try:
                data, info = await accept_image(data, max_pixels=settings.api.max_image_pixels)
            except AppError as exc:
                batch.refused.append((photo, exc.detail))
                continue
            job = await jobs.create_job(
                session,
                storage,
                image=data,
                info=info,
                tasks=("faces",),
                owner_id=owner_id,
                purpose=JobPurpose.enroll,  # not a sighting: not counted, searched nor clustered
            )
            jobs.enqueue_after_commit(session, redis, job, settings)
            created.append((photo, job))
        batch.queued = [(photo, job.id) for photo, job in created]  # ids: before the commit
        await commit(session)
    return batch


async def _enroll_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    storage: Storage,
    settings: Settings,
    import_id: uuid.UUID,
    batch: _Batch,
    owner_id: uuid.UUID | None,
    person_ids: dict[str, uuid.UUID],
) -> None:
    """Wait for the batch's jobs, enroll what they found, delete them; one transaction."""
    finished = await asyncio.gather(
        *(
            jobs.wait_for_job(redis, job_id, timeout_s=settings.gallery.wait_s)
            for job_id in batch.job_ids
        )
    )
    tally = _Tally(refused=[(p.label, reason) for p, reason in batch.refused])
    async with sessionmaker() as session:
        if not all(finished):
            await service.discard_jobs(session, storage, batch.job_ids)
            await commit(session)
            raise service.WorkerTimeout(
                f"no worker finished the photos of a batch within {settings.gallery.wait_s:g} s;"
                " check that workers are running (GET /health/ready), then import again (faces"
                " already enrolled are reported as duplicates, not stored twice)"
            )
        for photo, job_id in batch.queued:
            upload = service.Upload(name=photo.label, data=b"")  # named in reports only
            found = await service.job_faces(session, upload, job_id)
            usable = found if isinstance(found, str) else service.usable_face(settings, found)
            if isinstance(usable, str):
                tally.refused.append((photo.label, usable))
                continue
            assert not isinstance(found, str)
            person = await _person_named(session, photo.person, owner_id, person_ids)
            if person is None:
                person = await _create_person(session, photo.person, owner_id)
                person_ids[photo.person.casefold()] = person.id
                tally.people_created += 1
            added = await service.enroll_face(
                session, settings, person, found, *usable, link_source=False
            )
            if isinstance(added, DuplicateOut):
                tally.duplicates += 1
            else:
                tally.enrolled += 1
        await service.discard_jobs(session, storage, batch.job_ids)
        row = await session.get(PeopleImport, import_id, with_for_update=True)
        if row is None:
            raise NotFound(f"import {import_id} was deleted while it ran")
        row.processed += len(batch.photos)
        row.enrolled += tally.enrolled
        row.duplicates += tally.duplicates
        row.refused += len(tally.refused)
        row.people_created += tally.people_created
        room = MAX_PROBLEMS - len(row.problems)
        if room > 0 and tally.refused:
            row.problems = [
                *row.problems,
                *({"photo": label, "reason": reason} for label, reason in tally.refused[:room]),
            ]
        await commit(session)


async def _person_named(
    session: AsyncSession,
    name: str,
    owner_id: uuid.UUID | None,
    known: dict[str, uuid.UUID],
) -> Person | None:
    """The owner's person of that name (case-insensitive, as names are unique), if any."""
    person_id = known.get(name.casefold())
    if person_id is not None:
        person = await session.get(Person, person_id)
        if person is not None:
            return person
    person = await service.person_named(session, owner_id, name)
    if person is not None:
        known[name.casefold()] = person.id
    return person


async def _create_person(session: AsyncSession, name: str, owner_id: uuid.UUID | None) -> Person:
    try:
        return await service.create_person(session, name, owner_id)
    except Conflict:
        # Created meanwhile by another request (the unique name index said so): use it.
        person = await _person_named(session, name, owner_id, {})
        if person is None:
            raise
        return person


async def _finish(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    import_id: uuid.UUID,
    *,
    error: str | None,
) -> None:
    """Mark the import done (or failed, with why) and delete its photos."""
    async with sessionmaker() as session:
        row = await session.get(PeopleImport, import_id)
        if row is None:
            return
        row.status = ImportStatus.failed if error else ImportStatus.done
        row.error = error
        row.finished_at = datetime.now(UTC)
        key, row.archive_key = row.archive_key, None
        await commit(session)
    if key is not None:
        imports_storage(settings).delete(key)
