"""Arm masks of Meta-World clips from the simulator's segmentation, and PSNR off the arm."""

import json

import numpy as np
import pytest

from training.metrics.arm_mask import masked_psnr, off_arm_mask


def test_masked_psnr_counts_only_the_masked_pixels():
    target = np.zeros((4, 4, 3), np.uint8)
    prediction = target.copy()
    prediction[0, 0] = 255  # wrong only where the mask is off
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    assert masked_psnr(prediction, target, mask) == float("inf")
    prediction[1, 1] = 10  # error 10 on 3 of the 45 masked values: MSE 100 * 3 / 45
    assert masked_psnr(prediction, target, mask) == pytest.approx(
        10 * np.log10(255**2 / (100 * 3 / 45))
    )
    with pytest.raises(ValueError, match="no pixel"):
        masked_psnr(prediction, target, np.zeros((4, 4), bool))


def test_off_arm_mask_excludes_every_frame_the_arm_covers():
    masks = np.zeros((2, 3, 3), bool)
    masks[0, 0, 0] = masks[1, 2, 2] = True
    off = off_arm_mask(masks)
    assert not off[0, 0] and not off[2, 2] and off.sum() == 7
    with pytest.raises(ValueError):
        off_arm_mask(masks.astype(np.uint8))


@pytest.mark.slow
def test_masks_of_a_generated_clip_follow_the_arm(tmp_path):
    from training.data.manifest import read_manifest
    from training.data.metaworld_gen import generate
    from training.metrics.arm_mask import clip_arm_masks

    generate(
        tmp_path,
        3,
        size=32,
        frames=4,
        workers=1,
        progress=False,
        layout_seeds=[3001],
        split="test",
        noop_fraction=1.0,
    )
    opened, closed, noop = read_manifest(tmp_path / "manifest.jsonl")
    masks, closed_masks, still = clip_arm_masks([opened, closed, noop], tmp_path)
    assert masks.shape == (4, 32, 32) and masks.dtype == bool
    share = masks.mean(axis=(1, 2))
    assert np.all((share > 0.03) & (share < 0.4)), share  # the arm, not the scene
    assert (masks[0] != masks[-1]).mean() > 0.01  # the arm moved
    np.testing.assert_array_equal(closed_masks[0], masks[0])  # same start
    assert all(np.array_equal(frame, masks[0]) for frame in still)
    # The mask marks where the colour differs from a scene without the arm moving: pixels
    # that change between the first and last frame lie mostly on the arm.
    frames = np.load(tmp_path / opened.path)["frames"]
    changed = np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum(-1) > 30
    assert (changed & (masks[0] | masks[-1])).sum() > 0.5 * changed.sum()
    ends = clip_arm_masks([opened], tmp_path, frames=(0, -1))[0]  # renders only those frames
    np.testing.assert_array_equal(ends, masks[[0, -1]])
    clip = dict(np.load(tmp_path / opened.path))
    clip["frames"][2, 5, 5] ^= 1
    np.savez(tmp_path / opened.path, **clip)
    with pytest.raises(ValueError, match="re-simulate"):
        clip_arm_masks([opened], tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["noop_clips"] == 1
