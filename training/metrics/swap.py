"""Instruction-swap accuracy: the instruction, not the image, must decide the predicted outcome."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_squared_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared pixel difference of two arrays of the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def swap_correct(
    prediction: np.ndarray, own_truth: np.ndarray, other_truths: Sequence[np.ndarray]
) -> float:
    """Score one prediction by whether it is closest (MSE) to its own true outcome.

    Returns:
        1 when its own outcome is strictly closest, 0 when another is strictly closer, and the
        share of the tie otherwise (a tie is chance, not a success).

    """
    own = mean_squared_error(prediction, own_truth)
    others = [mean_squared_error(prediction, truth) for truth in other_truths]
    if any(d < own for d in others):
        return 0.0
    return 1.0 / (1 + sum(d == own for d in others))


def swap_scores(scenes: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]]) -> list[list[float]]:
    """:func:`swap_correct` of each prediction of each scene, against the scene's other outcomes.

    Args:
        scenes: For each scene (one start state), the ``(prediction, true outcome)`` pair of each
            instruction given from that state; at least two instructions per scene. The arrays
            may be whole images or the same selection of pixels of each (e.g. off the arm).

    """
    scores = []
    for scene in scenes:
        if len(scene) < 2:
            raise ValueError("each scene needs at least two instructions to swap")
        scores.append(
            [
                swap_correct(prediction, truth, [o for j, (_, o) in enumerate(scene) if j != index])
                for index, (prediction, truth) in enumerate(scene)
            ]
        )
    return scores


def swap_accuracy(scenes: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]]) -> float:
    """Instruction-swap accuracy over scenes shared by opposite tasks.

    Args:
        scenes: As for :func:`swap_scores`.

    Returns:
        The fraction of predictions closer to their own instruction's true outcome than to any
        other instruction's outcome from the same start (chance is ``1 / instructions``).

    """
    scores = [score for scene in swap_scores(scenes) for score in scene]
    if not scores:
        raise ValueError("swap_accuracy needs at least one scene")
    return float(np.mean(scores))
