"""The image bucket on local disk. Keys are flat names we generate; writes are atomic."""

import os
import re
import tempfile
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


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
        self.root.mkdir(parents=True, exist_ok=True)
        # Write to a temp file then rename: readers never see a half-written image.
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        """Raises FileNotFoundError when the key is absent."""
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
