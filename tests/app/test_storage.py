"""The image bucket on disk: atomic writes, files that nginx's workers (another user) can read."""

import os
import stat

import pytest

from app.storage import Storage, StorageKeyError


@pytest.mark.parametrize("write", ["put", "create"])
def test_stored_images_are_readable_by_other_users_whatever_the_umask(tmp_path, write):
    storage = Storage(tmp_path / "images")
    previous = os.umask(0o077)  # the most private umask a container could run with
    try:
        getattr(storage, write)("a.jpg", b"jpeg bytes")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(storage.path("a.jpg").stat().st_mode)
    # nginx sends these after the API's X-Accel-Redirect as its own user (docker-compose.yml):
    # others may read, only the owner may write.
    assert mode == 0o644, oct(mode)
    assert storage.get("a.jpg") == b"jpeg bytes"
    assert [p.name for p in storage.root.iterdir()] == ["a.jpg"]  # no temporary file left


def test_create_refuses_a_key_that_exists_and_leaves_its_file_alone(tmp_path):
    storage = Storage(tmp_path / "images")
    storage.create("a.jpg", b"first")
    with pytest.raises(FileExistsError):
        storage.create("a.jpg", b"second")
    assert storage.get("a.jpg") == b"first"
    with pytest.raises(StorageKeyError):
        storage.create("../a.jpg", b"outside")
    storage.put("a.jpg", b"replaced")  # put replaces, atomically (processed images are redrawn)
    assert storage.get("a.jpg") == b"replaced"
    assert [p.name for p in storage.root.iterdir()] == ["a.jpg"]
