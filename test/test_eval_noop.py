"""No-op ("do nothing") figures on synthetic predictions whose answers are known."""

import numpy as np
import pytest

from showme_model.metrics import psnr
from training.data.manifest import ClipRecord
from training.evaluate import EvalSample, evaluate
from training.metrics.noop import noop_scores
from training.metrics.summary import PSNR_CAP_DB

SIZE = 16


def _frame(level: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _near(frame: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 4, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


START, OPENED, CLOSED = _frame(80, 1), _frame(160, 2), _frame(120, 3)


def test_a_model_that_keeps_the_scene_for_do_nothing_wins_both_figures():
    noop, skills = noop_scores(START, START, [(_near(OPENED, 4), OPENED)])
    assert noop == {"noop_input_psnr": PSNR_CAP_DB}
    (skill,) = skills
    assert skill["skill_input_psnr"] == pytest.approx(psnr(_near(OPENED, 4), START))
    assert skill["noop_input_margin"] == pytest.approx(PSNR_CAP_DB - skill["skill_input_psnr"])
    assert skill["noop_choice_accuracy"] == 1.0


def test_a_model_that_acts_on_do_nothing_has_no_margin_and_picks_at_chance():
    acts = _near(OPENED, 5)
    _, (skill,) = noop_scores(START, acts, [(acts, OPENED)])
    assert skill["noop_input_margin"] == 0.0
    assert skill["noop_choice_accuracy"] == 0.5  # identical predictions: a tie
    # "do nothing" predicts the skill's outcome better than the skill prediction does
    _, (skill,) = noop_scores(START, OPENED, [(_near(CLOSED, 6), OPENED)])
    assert skill["noop_choice_accuracy"] == 0.0 and skill["noop_input_margin"] < 0


def _sample(task: str, final: np.ndarray, seed: int = 7) -> EvalSample:
    layout = f"drawer-{seed:06d}"
    noop = task == "noop"
    opposite = {"open": "close", "close": "open"}.get(task)
    meta = {
        "task": task,
        "seed": seed,
        "start_of": layout,
        "scene_id": None if noop else layout,
        "opposite": opposite,
    }
    record = ClipRecord(f"{layout}_{task}", f"{task}.npz", task, "test", "metaworld", meta=meta)
    frames = np.stack([START, final])
    return EvalSample(record.id, task, meta["scene_id"], frames, record)


def test_evaluate_scores_no_op_clips_apart_and_breaks_figures_down():
    samples = [_sample("open", OPENED), _sample("close", CLOSED), _sample("noop", START)]
    predictions = [_near(OPENED, 8)[None], _near(CLOSED, 9)[None], START[None]]
    results = evaluate(samples, predictions, "image")
    summary, rows = results["summary"], results["per_sample"]
    assert summary["num_samples"] == 3 and summary["num_noop_samples"] == 1
    # goal figures are over the skill clips only: the no-op's copy baseline would be capped
    assert "goal_psnr" not in rows[2] and summary["baseline_goal_psnr"] < 30
    assert summary["swap_accuracy"] == 1.0 and summary["swap_scenes"] == 1
    assert summary["noop_input_psnr"] == PSNR_CAP_DB
    assert summary["noop_choice_accuracy"] == 1.0
    margins = [PSNR_CAP_DB - psnr(p[0], START) for p in predictions[:2]]
    assert summary["noop_input_margin"] == pytest.approx(np.mean(margins))
    per_task = results["breakdowns"]["task"]
    assert sorted(per_task) == ["close", "noop", "open"]
    assert per_task["open"]["noop_input_margin"] == pytest.approx(margins[0])
    assert per_task["noop"] == {"num_samples": 1, "noop_input_psnr": PSNR_CAP_DB}
    assert results["breakdowns"]["layout_seed"]["7"]["num_samples"] == 3
    pair = results["breakdowns"]["pair"]
    assert list(pair) == ["close/open"]  # the no-op clip belongs to no pair
    assert pair["close/open"]["num_samples"] == 2 and pair["close/open"]["swap_accuracy"] == 1.0


def test_a_prediction_that_ignores_do_nothing_is_caught_by_evaluate():
    samples = [_sample("open", OPENED), _sample("noop", START)]
    acting = _near(OPENED, 10)[None]
    summary = evaluate(samples, [acting, acting], "image")["summary"]
    assert summary["noop_input_margin"] == 0.0 and summary["noop_choice_accuracy"] == 0.5


def test_two_no_op_clips_of_one_layout_are_refused():
    samples = [_sample("open", OPENED), _sample("noop", START), _sample("noop", START)]
    with pytest.raises(ValueError, match="2 no-op clips"):
        evaluate(samples, [START[None]] * 3, "image")
