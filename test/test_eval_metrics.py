"""Metrics on inputs whose answers are known: motion, swap accuracy, pooled figures.

PSNR and SSIM live in showme_model.metrics (test_metrics_image.py)."""

import cv2
import numpy as np
import pytest

from training.metrics import motion_score, motion_smoothness, swap_accuracy
from training.metrics.motion import is_dynamic, pair_magnitudes
from training.metrics.summary import PSNR_CAP_DB, breakdown, capped, pooled
from training.metrics.swap import swap_scores


def _texture(size: int = 72, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (9, 9), 2), None, 0, 255, cv2.NORM_MINMAX)


def _sliding(steps: list[int], size: int = 64) -> np.ndarray:
    """A video of a texture moving right by the cumulative ``steps`` (pixels per frame)."""
    base = _texture(size + 16)
    offsets = np.cumsum([0, *steps])
    return np.stack([np.roll(base, int(o), axis=1)[8 : 8 + size, 8 : 8 + size] for o in offsets])


def test_static_video_scores_low_and_moving_video_high():
    static = _sliding([0] * 15)
    moving = _sliding([3] * 15)
    assert not is_dynamic(pair_magnitudes(static), static.shape[1:3])
    assert is_dynamic(pair_magnitudes(moving), moving.shape[1:3])
    low, high = motion_score([static]), motion_score([moving])
    assert low.dynamic_degree == 0.0 and low.motion_score == 0.0
    assert high.dynamic_degree == 1.0 and high.motion_score > 0.9
    assert pair_magnitudes(moving).mean() == pytest.approx(3.0, abs=0.5)


def test_dynamic_degree_is_the_fraction_of_moving_videos():
    videos = [_sliding([0] * 15), _sliding([3] * 15), _sliding([4] * 15), _sliding([0] * 15)]
    assert motion_score(videos).dynamic_degree == pytest.approx(0.5)


def test_jerky_motion_is_less_smooth_than_steady_motion():
    steady = _sliding([2] * 14)
    jerky = _sliding([0, 6] * 7)
    assert motion_smoothness(steady) > motion_smoothness(jerky)


def test_motion_rejects_bad_videos():
    with pytest.raises(ValueError, match="uint8 video"):
        motion_smoothness(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at least 3 frames"):
        motion_smoothness(np.zeros((2, 8, 8, 3), np.uint8))


def test_swap_accuracy_on_synthetic_predictions():
    a, b = _texture(seed=3), _texture(seed=4)
    rng = np.random.default_rng(5)

    def near(x):
        return np.clip(x + rng.normal(0, 5, x.shape), 0, 255).astype(np.uint8)

    right = [(near(a), a), (near(b), b)]
    swapped = [(near(b), a), (near(a), b)]
    ignores_instruction = [(near(a), a), (near(a), b)]
    assert swap_accuracy([right, right]) == 1.0
    assert swap_accuracy([swapped]) == 0.0
    assert swap_accuracy([right, swapped]) == 0.5
    assert swap_accuracy([ignores_instruction]) == 0.5
    assert swap_accuracy([[(a, a), (a, a)]]) == 0.5  # identical outcomes: a tie is chance
    with pytest.raises(ValueError, match="two instructions"):
        swap_accuracy([[(a, a)]])


def test_swap_scores_give_each_prediction_its_own_score():
    a, b = _texture(seed=3), _texture(seed=4)
    assert swap_scores([[(a, a), (a, b)], [(b, a), (a, b)]]) == [[1.0, 0.0], [0.0, 0.0]]
    assert swap_scores([[(a[:4], a[:4]), (b[:4], b[:4])]]) == [[1.0, 1.0]]  # any pixel selection


def test_figures_pool_over_the_clips_that_have_them_and_break_down_per_subset():
    rows = [
        {"id": "a", "task": "open", "layout_seed": 2, "goal_psnr": 20.0, "swap_accuracy": 1.0},
        {"id": "b", "task": "close", "layout_seed": 2, "goal_psnr": 30.0, "swap_accuracy": 0.0},
        {"id": "c", "task": "open", "layout_seed": 10, "goal_psnr": 40.0, "swap_accuracy": None},
        {"id": "d", "task": None, "layout_seed": 10, "noop_input_psnr": 50.0},
    ]
    assert pooled(rows) == {"goal_psnr": 30.0, "swap_accuracy": 0.5, "noop_input_psnr": 50.0}
    per_task = breakdown(rows, "task")
    assert per_task == {
        "close": {"num_samples": 1, "goal_psnr": 30.0, "swap_accuracy": 0.0},
        "open": {"num_samples": 2, "goal_psnr": 30.0, "swap_accuracy": 1.0},
    }
    assert list(breakdown(rows, "layout_seed")) == ["2", "10"]  # numeric order
    assert capped(float("inf")) == PSNR_CAP_DB
