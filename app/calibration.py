"""Calibrated similarity: one scale for every embedding model.

Raw cosine similarity means different things for different embedders (the MobileFaceNet
stand-in scores strangers up to ~0.54, ArcFace rarely above ~0.3), yet clients threshold the
number they get with fixed values (Double Take: a match at >= 0.60, unknown below 0.40). So
every similarity Lookout reports is `sigmoid(slope * cosine + intercept)`, a logistic fit per
embedding model on labelled same/different pairs: roughly the probability that the two faces
are the same person. Each embedder spec carries its fit (`EmbedderSpec.calibration`).

The mapping is strictly increasing, so rankings by cosine and by calibrated similarity agree.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimilarityCalibration:
    """p(same person | cosine) = 1 / (1 + exp(-(slope * cosine + intercept)))."""

    slope: float
    intercept: float
    # Where the coefficients come from, for people reading a spec (not used in the math).
    source: str = ""

    def __post_init__(self) -> None:
        if not self.slope > 0:
            raise ValueError("a similarity calibration must increase with cosine (slope > 0)")

    def similarity(self, cosine: float) -> float:
        """The calibrated similarity of a cosine, in (0, 1), rounded to 5 decimals."""
        z = self.slope * float(cosine) + self.intercept
        # Split so exp never overflows for extreme inputs.
        value = 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
        return round(value, 5)

    def cosine_at(self, similarity: float) -> float:
        """The raw cosine that maps to `similarity` (the inverse), for documentation and tests."""
        if not 0 < similarity < 1:
            raise ValueError("a calibrated similarity lies strictly between 0 and 1")
        return (math.log(similarity / (1 - similarity)) - self.intercept) / self.slope


def fit_calibration(
    same: Sequence[float], different: Sequence[float], *, iterations: int = 100
) -> SimilarityCalibration:
    """Platt scaling: a logistic regression of "same person" on cosine (Newton's method).

    Platt's targets (N+ + 1) / (N+ + 2) for same-person pairs and 1 / (N- + 2) for the others,
    instead of 1 and 0, keep the fit finite when the pairs are perfectly separable (they are
    for a good embedder; plain maximum likelihood then drives the slope to infinity) and need
    no tuning knob. Deterministic: the same pairs always give the same coefficients.
    """
    if not same or not different:
        raise ValueError("a calibration needs same-person and different-person pairs")
    cosines = np.array([*same, *different], dtype=np.float64)
    targets = np.array(
        [(len(same) + 1) / (len(same) + 2)] * len(same)
        + [1 / (len(different) + 2)] * len(different)
    )
    design = np.stack([cosines, np.ones_like(cosines)], axis=1)  # columns: slope, intercept
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(design @ beta)))
        gradient = design.T @ (targets - p)
        hessian = -(design.T * (p * (1 - p))) @ design
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-12:
            break
    return SimilarityCalibration(slope=float(beta[0]), intercept=float(beta[1]))
