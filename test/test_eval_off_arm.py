"""The scene and the object measured off the robot arm: synthetic masks, then showme-eval."""

import json

import cv2
import numpy as np
import pytest

from showme_model.metrics import psnr
from test.test_eval_cli import save_tiny_model
from training.evaluate import main
from training.metrics.off_arm import goal_off_arm_mask, off_arm_goal_scores, off_arm_swap_scores
from training.metrics.summary import PSNR_CAP_DB
from training.metrics.swap import swap_scores

SIZE = 16


def _scene(object_x: int, arm_x: int) -> tuple[np.ndarray, np.ndarray]:
    """A frame with a small object at ``object_x`` and a large arm at ``arm_x``, and its mask."""
    frame = np.full((SIZE, SIZE, 3), 60, np.uint8)
    frame[12:14, object_x : object_x + 2] = (200, 40, 40)
    arm = np.zeros((SIZE, SIZE), bool)
    arm[0:10, arm_x : arm_x + 5] = True
    frame[arm] = (20, 200, 20)
    return frame, arm


def test_a_prediction_wrong_only_on_the_arm_is_perfect_off_the_arm():
    first, first_arm = _scene(object_x=2, arm_x=0)
    final, final_arm = _scene(object_x=8, arm_x=10)
    masks = np.stack([first_arm, final_arm])
    wrong_arm = final.copy()
    wrong_arm[first_arm | final_arm] = 255  # garbage where the arm is, in either pose
    scores = off_arm_goal_scores(wrong_arm, first, final, masks)
    assert scores["off_arm_goal_psnr"] == PSNR_CAP_DB
    assert psnr(wrong_arm, final) < 20  # the whole image says it is bad
    assert scores["baseline_off_arm_goal_psnr"] < 30  # copying the input misses the object
    assert scores["off_arm_fraction"] == pytest.approx(1 - (first_arm | final_arm).mean())
    assert "ceiling_off_arm_goal_psnr" not in scores
    # wrong off the arm: one object pixel missing, the PSNR of that error on the measured pixels
    missing = final.copy()
    missing[12, 8] = 60
    error = np.sum((np.array([200, 40, 40]) - 60.0) ** 2) / (3 * (~(first_arm | final_arm)).sum())
    assert off_arm_goal_scores(missing, first, final, masks)["off_arm_goal_psnr"] == (
        pytest.approx(10 * np.log10(255**2 / error))
    )


def test_both_arm_poses_are_left_out():
    first_arm = np.zeros((4, 4), bool)
    final_arm = np.zeros((4, 4), bool)
    first_arm[0, 0] = final_arm[3, 3] = True
    middle = np.zeros((4, 4), bool)
    middle[1, 1] = True  # in a middle frame only: measured
    off = goal_off_arm_mask(np.stack([first_arm, middle, final_arm]))
    assert not off[0, 0] and not off[3, 3] and off[1, 1] and off.sum() == 14


def test_the_ceiling_is_the_reconstruction_on_the_same_pixels():
    first, first_arm = _scene(object_x=2, arm_x=0)
    final, final_arm = _scene(object_x=8, arm_x=10)
    blurred = cv2.GaussianBlur(final, (3, 3), 1)
    scores = off_arm_goal_scores(first, first, final, np.stack([first_arm, final_arm]), blurred)
    off = ~(first_arm | final_arm)
    mse = np.mean((blurred[off].astype(float) - final[off]) ** 2)
    assert scores["ceiling_off_arm_goal_psnr"] == pytest.approx(10 * np.log10(255**2 / mse))


def test_off_arm_swap_lets_the_object_decide_not_the_arm():
    _, arm = _scene(object_x=2, arm_x=0)
    opened, opened_arm = _scene(object_x=8, arm_x=10)
    closed, closed_arm = _scene(object_x=4, arm_x=3)
    # Each prediction moves the object the instructed way but draws the other task's arm.
    predict_opened = opened.copy()
    predict_opened[opened_arm] = 60
    predict_opened[closed_arm] = (20, 200, 20)
    predict_closed = closed.copy()
    predict_closed[closed_arm] = 60
    predict_closed[opened_arm] = (20, 200, 20)
    pairs = [(predict_opened, opened), (predict_closed, closed)]
    assert swap_scores([pairs])[0] == [0.0, 0.0]  # whole image: the arm decides
    masks = [np.stack([arm, opened_arm]), np.stack([arm, closed_arm])]
    scene = [(goal, final, m) for (goal, final), m in zip(pairs, masks, strict=True)]
    assert off_arm_swap_scores(scene) == [1.0, 1.0]
    swapped = [(predict_closed, opened, masks[0]), (predict_opened, closed, masks[1])]
    assert off_arm_swap_scores(swapped) == [0.0, 0.0]


@pytest.fixture(scope="module")
def metaworld_manifest(tmp_path_factory):
    """Drawer and window scenes of one held-out layout, each with its no-op clip (32x32)."""
    from training.data.metaworld_gen import generate

    root = tmp_path_factory.mktemp("metaworld")
    generate(
        root,
        6,
        size=32,
        frames=4,
        workers=1,
        progress=False,
        layout_seeds=[3001],
        split="test",
        noop_fraction=1.0,
    )
    return root / "manifest.jsonl"


def _oracle(manifest):
    """A predictor that knows every clip's true outcome (a no-op keeps the input)."""
    from training.data.manifest import read_manifest

    truths = {}
    for record in read_manifest(manifest):
        frames = np.load(manifest.parent / record.path)["frames"]
        truths[record.instruction, frames[0].tobytes()] = frames

    def predict(images, instructions, seeds):
        return [
            truths[text, image.tobytes()] for image, text in zip(images, instructions, strict=True)
        ]

    return predict


def _final_only(manifest):
    """The oracle's goal images alone: one frame per prediction."""
    oracle = _oracle(manifest)

    def predict(images, instructions, seeds):
        return [frames[-1:] for frames in oracle(images, instructions, seeds)]

    return predict


def _copy(images, instructions, seeds):
    return [np.repeat(image[None], 4, axis=0) for image in images]


def _run(manifest, out, predictor, *extra, reconstruct=None):
    argv = ["--model", "unused", "--manifest", str(manifest), "--out", str(out), *extra]
    assert main(argv, predictor=predictor, reconstruct=reconstruct) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_showme_eval_off_arm_and_no_op_on_a_generated_metaworld_split(metaworld_manifest, tmp_path):
    def blur(images):
        return [cv2.GaussianBlur(image, (3, 3), 1) for image in images]

    results, table = _run(
        metaworld_manifest,
        tmp_path / "oracle.json",
        _oracle(metaworld_manifest),
        "--off-arm",
        reconstruct=blur,
    )
    summary = results["summary"]
    assert summary["num_samples"] == 6 and summary["num_noop_samples"] == 2
    assert summary["off_arm_goal_psnr"] == PSNR_CAP_DB
    assert summary["baseline_off_arm_goal_psnr"] < 60
    assert 0.5 < summary["off_arm_fraction"] < 0.97
    assert 15 < summary["ceiling_off_arm_goal_psnr"] < 60
    assert summary["off_arm_swap_accuracy"] == 1.0 and summary["swap_accuracy"] == 1.0
    pairs = results["breakdowns"]["pair"]
    # A light blur keeps the drawer's large change but blurs away part of the window's.
    assert pairs["drawer-close-v3/drawer-open-v3"]["ceiling_off_arm_swap_accuracy"] == 1.0
    assert summary["ceiling_off_arm_swap_accuracy"] < 1.0
    assert summary["noop_input_psnr"] == PSNR_CAP_DB and summary["noop_choice_accuracy"] == 1.0
    assert summary["noop_input_margin"] > 3
    breakdowns = results["breakdowns"]
    assert sorted(breakdowns["task"]) == [
        "drawer-close-v3",
        "drawer-open-v3",
        "noop",
        "window-close-v3",
        "window-open-v3",
    ]
    assert list(breakdowns["layout_seed"]) == ["3001"]
    assert breakdowns["pair"]["drawer-close-v3/drawer-open-v3"]["off_arm_swap_accuracy"] == 1.0
    assert "off-arm instruction-swap accuracy | 1.0000" in table
    assert "| drawer-open-v3 | 1 |" in table  # the per-task table
    assert summary["objects_kept_fraction"] == 1.0
    assert {name: o["measured"] for name, o in summary["objects_kept"].items()} == {
        "drawer": 2,
        "window": 2,
    }
    assert "objects of the input kept in the goal image | 1.0000" in table
    assert "| drawer | 2 | 1.0000 |" in table  # the per-object table
    goals_only, _ = _run(
        metaworld_manifest, tmp_path / "goals.json", _final_only(metaworld_manifest), "--off-arm"
    )
    for key in ("off_arm_fraction", "off_arm_goal_psnr", "objects_kept_fraction"):
        assert goals_only["summary"][key] == summary[key]  # measured against the final frame

    copied, _ = _run(
        metaworld_manifest, tmp_path / "copy.json", _copy, "--off-arm", "--workers", "2"
    )
    summary = copied["summary"]
    assert summary["off_arm_goal_psnr"] == pytest.approx(summary["baseline_off_arm_goal_psnr"])
    assert "ceiling_off_arm_goal_psnr" not in summary  # no autoencoder given
    assert "ceiling_off_arm_swap_accuracy" not in summary
    assert summary["objects_kept_fraction"] == 1.0  # left where they were: kept

    exact, _ = _run(
        metaworld_manifest, tmp_path / "exact.json", _copy, "--off-arm", reconstruct=list
    )
    assert exact["summary"]["ceiling_off_arm_swap_accuracy"] == 1.0

    def erase(images):
        return [np.full_like(image, 60) for image in images]

    erased, _ = _run(
        metaworld_manifest, tmp_path / "erased.json", _copy, "--off-arm", reconstruct=erase
    )
    # An autoencoder that loses the scene caps the off-arm swap at chance, whatever the model.
    assert erased["summary"]["ceiling_off_arm_swap_accuracy"] == 0.5
    assert summary["noop_input_margin"] == 0.0 and summary["noop_choice_accuracy"] == 0.5
    assert summary["off_arm_swap_accuracy"] == 0.5

    rollout, _ = _run(
        metaworld_manifest,
        tmp_path / "rollout.json",
        _oracle(metaworld_manifest),
        "--mode",
        "video",
        "--num-frames",
        "4",
        "--off-arm",
    )
    assert rollout["summary"]["rollout_objects_kept_fraction"] == 1.0

    without, _ = _run(metaworld_manifest, tmp_path / "plain.json", _copy, "--mode", "video")
    assert "off_arm_goal_psnr" not in without["summary"]
    assert without["summary"]["noop_choice_accuracy"] == 0.5  # no-op figures are always on
    assert without["summary"]["true_dynamic_degree"] == 1.0  # the skill clips only: all move


@pytest.mark.slow
def test_the_real_pipeline_reports_its_own_autoencoder_ceiling(metaworld_manifest, tmp_path):
    """No reconstructor given: the model folder's autoencoder makes the ceiling."""
    tiny_folder = save_tiny_model(tmp_path / "model")
    out = tmp_path / "tiny.json"
    argv = ["--model", str(tiny_folder), "--manifest", str(metaworld_manifest), "--out", str(out)]
    assert main([*argv, "--off-arm", "--limit", "3"]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["num_samples"] == 3 and summary["num_noop_samples"] == 1
    assert 0 < summary["ceiling_off_arm_goal_psnr"] < PSNR_CAP_DB
    assert np.isfinite([summary["off_arm_goal_psnr"], summary["noop_input_margin"]]).all()


@pytest.mark.slow
def test_a_bare_autoencoder_scores_the_ceiling_of_the_model_folder_around_it(
    metaworld_manifest, tmp_path
):
    """training.autoencoder_ceiling on a folder's VAE gives that folder's ceiling figures."""
    from training.autoencoder_ceiling import main as ceiling_main

    folder = save_tiny_model(tmp_path / "model")
    common = ["--manifest", str(metaworld_manifest), "--off-arm", "--limit", "3"]
    model_out, vae_out = tmp_path / "model.json", tmp_path / "vae.json"
    assert main(["--model", str(folder), "--out", str(model_out), *common]) == 0
    assert ceiling_main(["--vae", str(folder / "vae"), "--out", str(vae_out), *common]) == 0
    model_summary = json.loads(model_out.read_text())["summary"]
    vae_summary = json.loads(vae_out.read_text())["summary"]
    for field in (
        "ceiling_off_arm_goal_psnr",
        "ceiling_off_arm_swap_accuracy",
        "ceiling_objects_kept_fraction",
    ):
        assert vae_summary[field] == pytest.approx(model_summary[field], abs=1e-6), field
    # The predictions next to the ceiling are copies of the input.
    assert vae_summary["goal_psnr"] == pytest.approx(vae_summary["baseline_goal_psnr"])
    with pytest.raises(SystemExit, match="--off-arm"):
        ceiling_main(["--vae", str(folder / "vae"), "--manifest", str(metaworld_manifest)])


def test_a_pixel_grid_averages_cells_and_interpolates_back():
    import torch

    from training.autoencoder_ceiling import pixel_grid_round_trip

    frames = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(pixel_grid_round_trip(1)(frames), frames)
    flat = torch.full((1, 3, 8, 8), 0.25)
    torch.testing.assert_close(pixel_grid_round_trip(4)(flat), flat)
    coarse = pixel_grid_round_trip(2)(frames)
    assert coarse.shape == frames.shape and not torch.allclose(coarse, frames, atol=0.05)
    with pytest.raises(ValueError, match=">= 1"):
        pixel_grid_round_trip(0)


@pytest.mark.slow
def test_a_coarser_pixel_grid_keeps_less_of_the_outcome(metaworld_manifest, tmp_path):
    """--pixel-grid scores the frames themselves at 1 and less the coarser the grid."""
    from training.autoencoder_ceiling import main as ceiling_main

    common = ["--manifest", str(metaworld_manifest), "--off-arm", "--resolution", "32"]
    summaries = {}
    for factor in (1, 2, 8):
        out = tmp_path / f"grid-{factor}.json"
        assert ceiling_main(["--pixel-grid", str(factor), "--out", str(out), *common]) == 0
        summaries[factor] = json.loads(out.read_text())["summary"]
    exact = summaries[1]
    assert exact["ceiling_off_arm_goal_psnr"] == PSNR_CAP_DB
    assert exact["ceiling_off_arm_swap_accuracy"] == exact["ceiling_objects_kept_fraction"] == 1.0
    psnrs = [summaries[factor]["ceiling_off_arm_goal_psnr"] for factor in (1, 2, 8)]
    assert psnrs == sorted(psnrs, reverse=True) and psnrs[1] > psnrs[2]
    assert json.loads((tmp_path / "grid-2.json").read_text())["settings"]["model"] == "pixel-grid-2"
    with pytest.raises(SystemExit, match="divide"):
        ceiling_main(["--pixel-grid", "3", *common])


@pytest.mark.slow
def test_each_object_is_rendered_hidden_and_only_it_changes(metaworld_manifest):
    from training.data.manifest import read_manifest
    from training.metrics.arm_mask import clip_arm_masks
    from training.metrics.objects import clip_objects, kept_objects

    records = [r for r in read_manifest(metaworld_manifest) if r.meta["task"] != "noop"]
    renders = clip_objects(records, metaworld_manifest.parent, [[0, -1]] * len(records))
    arms = clip_arm_masks(records, metaworld_manifest.parent, frames=(0, -1))
    for record, (start, end), arm in zip(records, renders, arms, strict=True):
        frames = np.load(metaworld_manifest.parent / record.path)["frames"]
        name = record.meta["scene_id"].split("-")[0]  # the drawer or the window
        assert list(start.masks) == list(end.masks) == [name]  # not the table, wall or robot
        for frame, render in ((frames[0], start), (frames[-1], end)):
            mask, hidden = render.masks[name], render.hidden[name]
            changed = (hidden != frame).any(axis=-1)
            assert mask.sum() >= 10 and not (mask & render.arm).any()
            assert not changed[~mask].any() and changed[mask].mean() > 0.9
        np.testing.assert_array_equal(np.stack([start.arm, end.arm]), arm)
        assert kept_objects(frames[-1], frames[0], frames[-1], start, end) == {name: True}
        assert kept_objects(end.hidden[name], start.hidden[name], frames[-1], start, end) == {
            name: False
        }
