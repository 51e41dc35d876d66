"""The scene and the object, measured off the robot arm.

Whole-image PSNR and swap accuracy mostly measure where the arm ends up: at 64x64 the arm
covers about a sixth of the frame and moves further than most objects. These figures keep only
the pixels the arm leaves free (masks from :mod:`training.metrics.arm_mask`):

- A goal image is measured on the pixels the arm covers neither in the input frame nor in the
  true final frame (the union of both arm poses is left out), so that neither where the arm
  starts nor where it truly ends counts, while the object and the rest of the scene do. A
  prediction that draws the arm elsewhere is still penalised where it covers the scene.
- An instruction swap compares a scene's predictions on the pixels off the arm in the shared
  input frame and in every one of the scene's true final frames, so that both distances of a
  comparison use the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.metrics.arm_mask import masked_psnr, off_arm_mask
from training.metrics.summary import capped
from training.metrics.swap import swap_scores


def goal_off_arm_mask(arm_masks: np.ndarray) -> np.ndarray:
    """``(H, W)`` pixels off the arm in the first and the last of ``(T, H, W)`` arm masks."""
    return off_arm_mask(arm_masks[[0, -1]])


def off_arm_goal_scores(
    goal: np.ndarray,
    first: np.ndarray,
    final: np.ndarray,
    arm_masks: np.ndarray,
    reconstruction: np.ndarray | None = None,
) -> dict[str, float]:
    """Off-arm PSNR of a goal image, of the copy-input baseline and of the autoencoder ceiling.

    Args:
        goal: The predicted goal image (H, W, 3).
        first: The input frame.
        final: The true final frame.
        arm_masks: Arm masks ``(T, H, W)`` of the clip; the first and the last are used.
        reconstruction: The model's autoencoder reconstruction of ``final``, if known: the best
            a prediction decoded by that autoencoder can do.

    Returns:
        ``off_arm_fraction`` (share of pixels measured), ``off_arm_goal_psnr``,
        ``baseline_off_arm_goal_psnr`` and, with a reconstruction, ``ceiling_off_arm_goal_psnr``
        (dB, capped).

    """
    mask = goal_off_arm_mask(arm_masks)
    scores = {
        "off_arm_fraction": float(mask.mean()),
        "off_arm_goal_psnr": capped(masked_psnr(goal, final, mask)),
        "baseline_off_arm_goal_psnr": capped(masked_psnr(first, final, mask)),
    }
    if reconstruction is not None:
        scores["ceiling_off_arm_goal_psnr"] = capped(masked_psnr(reconstruction, final, mask))
    return scores


def off_arm_swap_scores(
    scene: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> list[float]:
    """Swap scores of one scene's predictions, on the pixels off the arm in all its frames used.

    Args:
        scene: Per instruction given from the scene's start, ``(goal, true final frame, arm
            masks (T, H, W))``; at least two.

    Returns:
        :func:`training.metrics.swap.swap_correct` of each goal, on the pixels off the arm in
        every clip's first and last frame.

    """
    mask = off_arm_mask(np.concatenate([masks[[0, -1]] for _, _, masks in scene]))
    if not mask.any():
        raise ValueError("the arm covers every pixel of the scene")
    return swap_scores([[(goal[mask], final[mask]) for goal, final, _ in scene]])[0]
