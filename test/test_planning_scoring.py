"""The planner's scoring and choice, on images whose right answer is known by construction."""

import math

import cv2
import numpy as np
import pytest

from showme_ros.planning import (
    PSNR_CAP_DB,
    CandidateScore,
    choose,
    join,
    model_view,
    score,
    score_candidates,
    sequences,
    split,
)


def constant(value: int, height: int = 64, width: int = 64) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def square(x: int, y: int, side: int = 20, size: int = 64) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[y : y + side, x : x + side] = 255
    return image


def test_the_goal_is_cropped_to_the_centre_like_the_model_input():
    camera = np.zeros((240, 320, 3), np.uint8)
    camera[:, :40] = (255, 0, 0)  # bands the centre crop removes
    camera[:, 280:] = (0, 0, 255)
    camera[:, 40:280] = (10, 200, 30)
    view = model_view(camera, 64, 64)
    assert view.shape == (64, 64, 3)
    assert np.array_equal(view, np.broadcast_to(np.array([10, 200, 30], np.uint8), view.shape))


def test_model_view_refuses_what_is_not_an_rgb_uint8_image():
    with pytest.raises(ValueError, match="uint8"):
        model_view(np.zeros((8, 8, 3), np.float32), 4, 4)
    with pytest.raises(ValueError, match="H, W, 3"):
        model_view(np.zeros((8, 8), np.uint8), 4, 4)


def test_psnr_of_a_candidate_is_the_mean_over_its_samples():
    goal = constant(110)
    # Differences of 10 and 20 grey levels: MSE 100 and 400.
    expected = (10 * math.log10(255**2 / 100) + 10 * math.log10(255**2 / 400)) / 2
    pixel, _ = score([constant(100), constant(130)], goal)
    assert pixel == pytest.approx(expected, abs=1e-9)
    assert pixel == pytest.approx(25.1205, abs=1e-4)  # (28.1308 + 22.1102) / 2


def test_identical_preview_scores_the_cap_and_full_edge_agreement():
    goal = square(20, 20)
    pixel, edges = score([goal.copy()], goal)
    assert pixel == PSNR_CAP_DB
    assert edges == 1.0


def test_an_empty_preview_has_no_edge_agreement_with_an_outlined_goal():
    _, edges = score([constant(0)], square(20, 20))
    assert edges == 0.0


def test_goal_and_previews_are_compared_in_the_model_view_at_the_comparison_size():
    goal = cv2.resize(square(20, 20), (256, 256), interpolation=cv2.INTER_NEAREST)
    pixel, edges = score([square(20, 20)], goal)
    assert pixel > 40 and edges == 1.0
    # A preview at the camera's resolution: the prediction in the centre square, the input's
    # pixels (here a different colour) outside it.
    camera_sized = np.full((240, 320, 3), 90, np.uint8)
    camera_sized[:, 40:280] = cv2.resize(
        square(20, 20), (240, 240), interpolation=cv2.INTER_NEAREST
    )
    pixel, edges = score([camera_sized], goal)
    assert pixel > 40 and edges == 1.0


def test_the_candidate_whose_previews_show_the_goal_state_wins_under_both_metrics():
    rng = np.random.default_rng(0)
    goal = square(8, 30)  # e.g. the drawer pulled out to the left

    def noisy(image: np.ndarray) -> np.ndarray:
        noise = rng.normal(0, 12, image.shape)
        return np.clip(image + noise, 0, 255).astype(np.uint8)

    previews = {
        ("open",): [noisy(square(9, 30)) for _ in range(4)],
        ("close",): [noisy(square(36, 30)) for _ in range(4)],
        ("do-nothing",): [noisy(square(22, 30)) for _ in range(4)],
    }
    scores = score_candidates(previews, goal)
    assert [s.candidate for s in scores] == list(previews)
    assert choose(scores, "psnr") == ("open",)
    assert choose(scores, "edges") == ("open",)


def test_pixels_and_edges_can_disagree_grain_against_a_one_pixel_shift():
    goal = square(22, 22)
    # Right place, grainy: grey noise of sigma 20 (MSE about 400, 25 dB) breaks the outline.
    noise = np.random.default_rng(0).normal(0, 20, (64, 64, 1))
    grainy = np.clip(goal + noise, 0, 255).astype(np.uint8)
    # Clean outline one pixel off: 40 pixels differ by 255 (MSE 635, 20.1 dB), but every edge
    # pixel lies within the 1.5-pixel tolerance of the goal's.
    shifted = square(23, 22)
    scores = score_candidates({("grainy",): [grainy], ("shifted",): [shifted]}, goal)
    assert scores[1].psnr == pytest.approx(10 * math.log10(255**2 / (40 * 255**2 / 64**2)))
    assert scores[1].edge_f1 == 1.0
    assert choose(scores, "psnr") == ("grainy",)
    assert choose(scores, "edges") == ("shifted",)


def test_choice_takes_the_earliest_of_equal_scores_and_refuses_bad_input():
    scores = [CandidateScore(("a",), 20.0, 0.5), CandidateScore(("b",), 20.0, 0.5)]
    assert choose(scores, "psnr") == ("a",)
    with pytest.raises(ValueError, match="no candidates"):
        choose([], "psnr")
    with pytest.raises(ValueError, match="unknown metric"):
        choose(scores, "lpips")
    with pytest.raises(ValueError, match="NaN"):
        choose([CandidateScore(("a",), math.nan, 0.5)], "psnr")
    with pytest.raises(ValueError, match="at least one preview"):
        score([], constant(0))


def test_two_step_candidates_are_every_ordered_pair():
    assert sequences(["open", "close", "do-nothing"], 1) == [
        ("open",),
        ("close",),
        ("do-nothing",),
    ]
    pairs = sequences(["open", "close", "do-nothing"], 2)
    assert len(pairs) == 9 and pairs[1] == ("open", "close") and len(set(pairs)) == 9
    assert split(join(("open", "close"))) == ("open", "close")
    with pytest.raises(ValueError, match="depth"):
        sequences(["open"], 3)
