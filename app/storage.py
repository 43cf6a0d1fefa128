"""The image bucket on local disk. Keys are flat names we generate; writes are atomic."""

import os
import re
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
STORED_FILE_MODE = 0o644
TEMP_PREFIX = ".tmp-"  # a write in progress (the sweep removes those a crash left behind)


class StorageKeyError(ValueError):
    pass


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        # Keys never come from clients, but refuse anything that could leave the root anyway.
        if not _KEY.match(key) or ".." in key:
            raise StorageKeyError(f"invalid storage key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        # Write to a temp file then rename: readers never see a half-written image. Named here
        # rather than by tempfile.mkstemp, whose name generation cost 6% of the API's CPU per
        # upload (bench/plumbing.py); O_EXCL still refuses a name that exists. Plain os calls:
        # each system call counts on the upload path (a file object adds an fstat and an
        # isatty ioctl; the directory is made only when the first write finds it missing).
        tmp = str(self.root / f"{TEMP_PREFIX}{secrets.token_hex(8)}-{key}")
        try:
            self._write_new(tmp, data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def create(self, key: str, data: bytes) -> None:
        """Store data under a key nobody knows yet (a new upload's), written in place: no temp
        file, no rename (a third less CPU than put on this disk, bench/RESULTS.md). Raises
        FileExistsError if the key exists. Nothing reads the key before this returns (its job
        row is inserted after), so no reader can see the file half-written; a crash mid-write
        leaves a partial file that no row names, which the sweep removes as it would any.
        """
        target = str(self.path(key))
        try:
            self._write_new(target, data)
        except BaseException as exc:
            if not isinstance(exc, FileExistsError):  # not ours to remove
                Path(target).unlink(missing_ok=True)
            raise

    def _write_new(self, path: str, data: bytes) -> None:
        """Create `path` (refusing one that exists) and write `data` to it."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # the first write: the directory is made then
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Created 0600; nginx's workers (another user) send these files after the API's
            # X-Accel-Redirect. World-readable inside the volume: only Lookout's own
            # containers mount it (a group would not do: nginx's workers drop every group
            # /etc/group does not give them, compose's group_add included).
            os.fchmod(fd, STORED_FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        """Raises FileNotFoundError when the key is absent."""
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


@dataclass(frozen=True)
class SweepResult:
    expired: list[str]  # older than the TTL
    evicted: list[str]  # removed, oldest first, to get under the size cap
    bytes_freed: int
    bytes_kept: int


# A temp file this old belongs to a writer that died mid-put.
STALE_TEMP_S = 3600


def sweep(
    storage: Storage,
    *,
    max_age_s: float,
    max_total_bytes: int,
    keep: Collection[str] = frozenset(),
    grace_s: float = 0.0,
) -> SweepResult:
    """Delete images older than max_age_s, then the oldest ones until the total fits the cap.

    Age is the file's mtime (when it was stored). `keep`: keys never deleted (the caller knows
    which images unfinished jobs still need); they count towards the total. Files younger than
    `grace_s` are never evicted either: a job row may not be committed yet for a fresh upload.
    The total can therefore stay over the cap. Synchronous file I/O: run it in a thread.

    It stats every stored file, so its cost grows with the store (the maintenance pass runs it
    less often as it grows): names, not Paths, and a sort only when over the cap (0.7 s of CPU
    for 200,000 files, where a Path a file and a sort of them all took 3-4 s).
    """
    now = time.time()
    root = storage.root
    if not root.is_dir():
        return SweepResult([], [], 0, 0)
    expired: list[str] = []
    kept: list[tuple[float, int, str]] = []
    freed = total = 0
    with os.scandir(root) as entries:
        for entry in entries:
            name = entry.name
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted meanwhile (a job delete)
            age = now - stat.st_mtime
            if name.startswith(TEMP_PREFIX):
                if age > STALE_TEMP_S:
                    (root / name).unlink(missing_ok=True)
            elif age > max_age_s and name not in keep:
                (root / name).unlink(missing_ok=True)
                expired.append(name)
                freed += stat.st_size
            else:
                kept.append((stat.st_mtime, stat.st_size, name))
                total += stat.st_size
    evicted: list[str] = []
    if total > max_total_bytes:
        kept.sort()
        for mtime, size, name in kept:  # oldest first
            if total <= max_total_bytes:
                break
            if name in keep or now - mtime < grace_s:
                continue
            (root / name).unlink(missing_ok=True)
            evicted.append(name)
            total -= size
            freed += size
    return SweepResult(expired, evicted, freed, total)
