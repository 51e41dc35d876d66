"""No-op ("do nothing") instructions: the prediction must keep the input scene, unlike a skill's.

For a scene layout with a no-op clip (a "do nothing" phrasing given from the same start as the
layout's skill clips):

- ``noop_input_psnr``: PSNR of the no-op prediction to the input frame; ``skill_input_psnr``:
  the same for each skill prediction. ``noop_input_margin`` (per skill clip) is the first minus
  the second: how much closer to the input the no-op prediction stays than the prediction for
  the instructed action. A model that keeps the scene for "do nothing" and acts otherwise has a
  large margin; one that ignores the instruction has none.
- ``noop_choice_accuracy`` (per skill clip): given the skill's true final frame, is the
  prediction for the skill closer to it (MSE) than the prediction for "do nothing"? 1 when
  strictly closer, 0 when the no-op prediction is strictly closer, 0.5 on a tie. It mirrors
  instruction-swap accuracy with the roles turned round: there each prediction must pick its
  own outcome among the true ones; here each true outcome must pick the prediction of its own
  instruction over the no-op one (a no-op outcome, the input itself, would be a trivial pick).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from showme_model.metrics import psnr
from training.metrics.summary import capped
from training.metrics.swap import swap_correct


def noop_scores(
    first: np.ndarray, noop_goal: np.ndarray, skills: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Score one layout's no-op prediction against its skill predictions.

    Args:
        first: The layout's input frame (H, W, 3).
        noop_goal: The predicted goal image for the "do nothing" instruction.
        skills: ``(predicted goal, true final frame)`` of each skill clip of the layout.

    Returns:
        The no-op clip's figures (``noop_input_psnr``) and each skill clip's
        (``skill_input_psnr``, ``noop_input_margin``, ``noop_choice_accuracy``); PSNR in dB,
        capped.

    """
    noop_psnr = capped(psnr(noop_goal, first))
    per_skill = []
    for goal, final in skills:
        skill_psnr = capped(psnr(goal, first))
        per_skill.append(
            {
                "skill_input_psnr": skill_psnr,
                "noop_input_margin": noop_psnr - skill_psnr,
                # the true outcome "chooses" between the two predictions, ties count half
                "noop_choice_accuracy": swap_correct(final, goal, [noop_goal]),
            }
        )
    return {"noop_input_psnr": noop_psnr}, per_skill
