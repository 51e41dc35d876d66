"""showme_model.metrics against answers worked out by hand or from the published definitions."""

import math

import cv2
import numpy as np
import pytest

from showme_model.metrics import canny_edges, edge_f1, edge_map_f1, psnr, ssim


def _texture(size: int = 72, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (9, 9), 2), None, 0, 255, cv2.NORM_MINMAX)


def _square(shift: int = 0, size: int = 64, side: int = 32) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[16 : 16 + side, 16 + shift : 16 + shift + side] = 200
    return image


def test_psnr_of_a_constant_offset_is_20_log10_of_range_over_offset():
    image = (_texture() * 0.9).astype(np.uint8)  # headroom: +10 never clips
    brighter = image + np.uint8(10)
    # MSE = 10^2 exactly, so PSNR = 10 log10(255^2 / 100) = 20 log10(25.5) = 28.1308... dB.
    assert psnr(brighter, image) == pytest.approx(28.130803608679106, abs=1e-12)
    assert psnr(image, image) == math.inf
    assert psnr(image / 255.0, brighter / 255.0, data_range=1.0) == pytest.approx(28.1308036)


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


def test_ssim_of_identical_images_is_one():
    image = _texture()
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # Flat images have zero variance and covariance, so SSIM reduces to (2ab + C1)/(a^2 + b^2 + C1)
    # with C1 = (0.01 * 255)^2 (Wang et al. 2004, eq. 13); the contrast-structure term is C2/C2.
    a, b = 100.0, 140.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    flat_a = np.full((32, 32), a, np.uint8)
    flat_b = np.full((32, 32), b, np.uint8)
    assert ssim(flat_a, flat_b) == pytest.approx(expected, abs=1e-12)


def test_ssim_of_one_window_equals_the_formula_with_gaussian_weights():
    """An 11x11 image holds exactly one window: SSIM is eq. 13 with the window's weighted stats."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (11, 11)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255)
    grid = np.arange(11) - 5
    weights = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 1.5**2))
    weights /= weights.sum()
    mu_x, mu_y = (weights * x).sum(), (weights * y).sum()
    var_x = (weights * (x - mu_x) ** 2).sum()
    var_y = (weights * (y - mu_y) ** 2).sum()
    cov = (weights * (x - mu_x) * (y - mu_y)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    assert 0.2 < expected < 0.95  # a pair where the structure term matters
    assert ssim(y, x) == pytest.approx(expected, abs=1e-12)


def test_ssim_averages_over_channels():
    a, b = _texture(seed=1), _texture(seed=2)
    per_channel = [ssim(a[..., c], b[..., c]) for c in range(3)]
    assert ssim(a, b) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((10, 20), np.uint8), np.zeros((10, 20), np.uint8))


def _outline(shift: int, size: int = 40, side: int = 20) -> np.ndarray:
    edges = np.zeros((size, size), bool)
    top, left = 10, 10 + shift
    edges[top, left : left + side] = edges[top + side - 1, left : left + side] = True
    edges[top : top + side, left] = edges[top : top + side, left + side - 1] = True
    return edges


def test_edge_map_f1_of_a_shifted_outline_matches_a_hand_count():
    # A 1-pixel outline of an n x n square (4n - 4 pixels) shifted right by 4 pixels, tolerance
    # 1.5: each horizontal side keeps n - 3 matched pixels (its overlap plus the pixel one step
    # past the corner), each shifted vertical side keeps only the 2 pixels next to the other
    # square's horizontal sides, the far vertical side none. Matched 2(n-3) + 2 = 2n - 4 of
    # 4n - 4 either way, so precision = recall = F1 = 36 / 76 for n = 20.
    assert edge_map_f1(_outline(4), _outline(0), tolerance=1.5) == pytest.approx(36 / 76)
    assert edge_map_f1(_outline(1), _outline(0), tolerance=1.5) == 1.0
    assert edge_map_f1(_outline(0), _outline(0), tolerance=0.0) == 1.0


def test_edge_map_f1_of_empty_maps():
    empty = np.zeros((8, 8), bool)
    some = empty.copy()
    some[4, 4] = True
    assert edge_map_f1(empty, empty) == 1.0
    assert edge_map_f1(empty, some) == 0.0
    assert edge_map_f1(some, empty) == 0.0


def _brute_force_f1(pred: np.ndarray, target: np.ndarray, tolerance: float) -> float:
    p, t = np.argwhere(pred), np.argwhere(target)
    distances = np.linalg.norm(p[:, None, :] - t[None, :, :], axis=-1)
    precision = np.mean(distances.min(axis=1) <= tolerance)
    recall = np.mean(distances.min(axis=0) <= tolerance)
    return 2 * precision * recall / (precision + recall)


def test_canny_edges_outline_a_bright_square():
    edges = canny_edges(_square())
    rows, cols = np.nonzero(edges)
    # Every edge pixel lies within one pixel of the square's boundary (rows/cols 16 and 47).
    on_boundary = (np.abs(rows[:, None] - [16, 47]).min(1) <= 1) | (
        np.abs(cols[:, None] - [16, 47]).min(1) <= 1
    )
    assert on_boundary.all()
    assert edges.sum() > 4 * 28  # the whole outline, corners aside


@pytest.mark.parametrize("shift", [0, 1, 4, 8])
def test_edge_f1_of_a_shifted_square_equals_the_definition(shift):
    prediction, target = _square(shift), _square()
    expected = _brute_force_f1(canny_edges(prediction), canny_edges(target), 1.5)
    assert edge_f1(prediction, target) == pytest.approx(expected, abs=1e-12)
    if shift <= 1:
        assert expected == 1.0
    else:  # the vertical sides no longer match: at most the horizontal half of the outline does
        assert expected < 0.55


def test_edge_f1_rejects_float_images_and_bad_maps():
    with pytest.raises(ValueError, match="uint8"):
        edge_f1(np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="boolean"):
        edge_map_f1(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
