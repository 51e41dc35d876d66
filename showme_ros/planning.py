"""Scoring predicted outcomes against a goal image, and choosing among candidate skill sequences.

Pure functions (numpy, OpenCV and the model library's metrics): the planner node feeds them the
world model's previews, the benchmark and the tests feed them known images.

A candidate is a sequence of skill names (one skill, or two for imagined chaining). Each has K
previews (the same instructions predicted with K sampler seeds). Goal and previews are compared
as the model sees its input: the centred square crop, resized to the comparison size (the
model's resolution; a preview returned at the camera's resolution has the prediction in that
crop). Each preview is scored with PSNR (pixels) and the edge-map F1 of
:func:`showme_model.metrics.edge_f1` (structure); a candidate's score is the mean over its
previews, and the best mean wins (ties: the earlier candidate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from showme_model.metrics import edge_f1, psnr
from showme_model.preprocessing import centre_region

METRICS = ("psnr", "edges")
# PSNR of identical images is infinite; capped so that a mean over samples stays finite.
PSNR_CAP_DB = 100.0
SEPARATOR = ","
# The shipped model's resolution: goal and previews are compared at this size by default.
COMPARE_SIZE = 64

Candidate = tuple[str, ...]


@dataclass(frozen=True)
class CandidateScore:
    """Mean scores of one candidate's previews against the goal (higher is closer)."""

    candidate: Candidate
    psnr: float
    edge_f1: float

    def value(self, metric: str) -> float:
        """Return the score under ``metric`` (``psnr`` or ``edges``)."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        return self.psnr if metric == "psnr" else self.edge_f1


def model_view(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` as the model sees an input: centred crop to ``height:width``, area-resized.

    Raises:
        ValueError: ``image`` is not an ``(H, W, 3)`` uint8 array.

    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    top, left, crop_h, crop_w = centre_region(
        image.shape[0], image.shape[1], (height, width), "crop"
    )
    region = image[top : top + crop_h, left : left + crop_w]
    if region.shape[:2] == (height, width):
        return np.ascontiguousarray(region)
    shrinking = height * width < crop_h * crop_w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(region, (width, height), interpolation=interpolation)


def score(
    previews: Sequence[np.ndarray], goal: np.ndarray, size: int = COMPARE_SIZE
) -> tuple[float, float]:
    """Mean PSNR (dB, capped at ``PSNR_CAP_DB``) and mean edge F1 of ``previews`` against ``goal``.

    Every image is first brought to the model's view at ``size`` x ``size`` (:func:`model_view`).

    Raises:
        ValueError: No previews.

    """
    if not previews:
        raise ValueError("a candidate needs at least one preview")
    target = model_view(goal, size, size)
    views = [model_view(p, size, size) for p in previews]
    pixel = [min(psnr(v, target), PSNR_CAP_DB) for v in views]
    edges = [edge_f1(v, target) for v in views]
    return float(np.mean(pixel)), float(np.mean(edges))


def score_candidates(
    previews: Mapping[Candidate, Sequence[np.ndarray]], goal: np.ndarray, size: int = COMPARE_SIZE
) -> list[CandidateScore]:
    """Score every candidate's previews against ``goal``, in the mapping's order."""
    scores = []
    for candidate, images in previews.items():
        pixel, edges = score(images, goal, size)
        scores.append(CandidateScore(candidate, pixel, edges))
    return scores


def choose(scores: Sequence[CandidateScore], metric: str) -> Candidate:
    """Return the candidate with the highest score under ``metric`` (the earliest among equals).

    Raises:
        ValueError: No candidates, an unknown metric, or a score that is NaN.

    """
    if not scores:
        raise ValueError("no candidates to choose from")
    values = [s.value(metric) for s in scores]
    if any(math.isnan(v) for v in values):
        raise ValueError(f"a {metric} score is NaN")
    return scores[int(np.argmax(values))].candidate


def sequences(skills: Sequence[str], depth: int) -> list[Candidate]:
    """Every sequence of ``depth`` skills drawn from ``skills`` (repeats allowed), in order.

    Raises:
        ValueError: ``depth`` is not 1 or 2, or there are no skills.

    """
    if depth not in (1, 2):
        raise ValueError(f"depth must be 1 or 2, got {depth}")
    if not skills:
        raise ValueError("no skills to plan with")
    if depth == 1:
        return [(s,) for s in skills]
    return [(a, b) for a in skills for b in skills]


def join(candidate: Candidate) -> str:
    """Return a candidate as one string: skill names joined by ``,``."""
    return SEPARATOR.join(candidate)


def split(text: str) -> Candidate:
    """Inverse of :func:`join`."""
    return tuple(text.split(SEPARATOR))
