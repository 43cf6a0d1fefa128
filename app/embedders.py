"""Face embedders: each model's name, crop preprocessing and embedding dimension.

Shared by the API (the gallery's nearest-neighbour SQL, app/vectors.py), the migrations (one
HNSW index per embedder, 0005) and the workers (the model packs in workers/models/ name one of
these; workers/detectors/face.py runs it). It lives in app/ because app/ never imports workers/.
"""

from dataclasses import dataclass
from typing import Literal

from app.calibration import SimilarityCalibration


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

# A second embedding model from the same file, for model upgrades (`lookout gallery reembed`)
# on machines with one embedder: the stand-in fed BGR instead of RGB. Its vectors are another
# space (same-person cosine 0.63-0.87, different ≤ 0.48 on the shared faces), so nothing may be
# compared across the two, exactly as between two real models. Platt fit as the stand-in's.
MOBILEFACENET_BGR_SPEC = EmbedderSpec(
    model="mobilefacenet_bgr",
    input_size_px=112,
    layout="NHWC",
    channel_order="BGR",
    mean=127.5,
    std=128.0,
    dim=192,
    calibration=SimilarityCalibration(
        slope=10.899, intercept=-6.005, source="Platt fit on the shared faces (190 pairs)"
    ),
)

# Every embedder the product knows. The gallery's per-model HNSW indexes (migration 0005) and
# its nearest-neighbour SQL are built from this list: one source of truth for names and dims.
EMBEDDER_SPECS: tuple[EmbedderSpec, ...] = (
    ARCFACE_MBF,
    ARCFACE_R50,
    MOBILEFACENET_SPEC,
    MOBILEFACENET_BGR_SPEC,
)


def embedder_dims() -> dict[str, int]:
    """Embedding dimension by model name, for every known embedder."""
    return {spec.model: spec.dim for spec in EMBEDDER_SPECS}
