"""showme-eval end to end on a tiny synthetic manifest of opposite-task scenes."""

import json

import numpy as np
import pytest

from training.data.manifest import ClipRecord, write_manifest
from training.evaluate import main

SIZE = 32


def _clip(direction: int, offset: int, frames: int = 8) -> np.ndarray:
    """A bright bar that starts in the middle and slides left (-1) or right (+1)."""
    video = np.full((frames, SIZE, SIZE, 3), 40, np.uint8)
    for t in range(frames):
        x = SIZE // 2 + direction * round(t * 10 / (frames - 1)) + offset
        video[t, 8:24, x - 2 : x + 2] = 220
    return video


@pytest.fixture
def manifest(tmp_path):
    records = []
    for scene in range(3):
        for task, direction in (("slide left", -1), ("slide right", 1)):
            name = f"s{scene}-{direction}"
            np.savez_compressed(tmp_path / f"{name}.npz", frames=_clip(direction, scene - 1))
            records.append(
                ClipRecord(
                    name,
                    f"{name}.npz",
                    task,
                    "test",
                    "synthetic",
                    meta={"scene_id": f"scene-{scene}"},
                )
            )
    records.append(ClipRecord("train-0", "missing.npz", "slide left", "train"))
    records.append(ClipRecord("broken", "missing.npz", "slide left", "test"))
    write_manifest(tmp_path / "manifest.jsonl", records)
    return tmp_path / "manifest.jsonl"


def _rule_predictor(images, instructions, seeds):
    """Knows the world's rule: moves the bar the instructed way, as a good model would."""
    out = []
    for image, text in zip(images, instructions, strict=True):
        x = int(np.argmax(image[16, :, 0]))
        direction = -1 if "left" in text else 1
        video = np.full((8, SIZE, SIZE, 3), 40, np.uint8)
        for t in range(8):
            c = x + 2 + direction * round(t * 10 / 7)
            video[t, 8:24, c - 2 : c + 2] = 220
        out.append(video)
    return out


def _copy_predictor(images, instructions, seeds):
    return [np.repeat(image[None], 8, axis=0) for image in images]


def _run(manifest, tmp_path, predictor, mode):
    out = tmp_path / f"{mode}.json"
    argv = ["--model", "unused", "--manifest", str(manifest), "--mode", mode, "--out", str(out)]
    assert main([*argv, "--batch-size", "4"], predictor=predictor) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_rule_following_predictor_beats_baseline_and_swaps_right(manifest, tmp_path):
    results, table = _run(manifest, tmp_path, _rule_predictor, "image")
    summary = results["summary"]
    assert summary["num_samples"] == 6 and results["settings"]["skipped"] == {"missing": 1}
    assert summary["goal_psnr"] > summary["baseline_goal_psnr"] + 10
    assert summary["swap_scenes"] == 3 and summary["swap_accuracy"] == 1.0
    assert "instruction-swap accuracy | 1.0000" in table


def test_copy_predictor_equals_baseline_and_swaps_at_chance(manifest, tmp_path):
    results, _ = _run(manifest, tmp_path, _copy_predictor, "image")
    summary = results["summary"]
    assert summary["goal_psnr"] == pytest.approx(summary["baseline_goal_psnr"])
    assert summary["swap_accuracy"] == 0.5


def test_video_mode_scores_rollouts_and_motion(manifest, tmp_path):
    moving, _ = _run(manifest, tmp_path, _rule_predictor, "video")
    still, _ = _run(manifest, tmp_path, _copy_predictor, "video")
    assert moving["summary"]["video_psnr"] > moving["summary"]["baseline_video_psnr"]
    assert still["summary"]["video_psnr"] == pytest.approx(still["summary"]["baseline_video_psnr"])
    assert still["summary"]["dynamic_degree"] == 0.0
    assert moving["summary"]["motion_score"] > still["summary"]["motion_score"]
    assert len(moving["per_sample"]) == 6


def save_tiny_model(folder):
    """Write a tiny random model folder that stores its own sampler settings; return it."""
    import torch

    from showme_model.model import ShowMeModel
    from showme_model.sampler_config import SamplerConfig

    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    model.sampler_config = SamplerConfig(num_inference_steps=2, guidance_scale=2.0, num_frames=4)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def test_real_tiny_pipeline_end_to_end_with_the_stored_settings(manifest, tiny_folder, tmp_path):
    """The console entry point with a real (tiny, random) model folder instead of a stand-in."""
    out = tmp_path / "tiny.json"
    argv = ["--model", str(tiny_folder), "--manifest", str(manifest), "--out", str(out)]
    assert main([*argv, "--mode", "video", "--limit", "2"]) == 0
    results = json.loads(out.read_text())
    summary = results["summary"]
    assert summary["num_samples"] == 2 and summary["swap_scenes"] == 1
    assert np.isfinite([summary["goal_psnr"], summary["video_ssim"], summary["motion_score"]]).all()
    sampler = results["settings"]["sampler"]
    assert (sampler["num_inference_steps"], sampler["guidance_scale"]) == (2, 2.0)
    assert sampler["num_frames"] == 4
    assert sampler["frame_stride"] is None
    assert main([*argv, "--mode", "video", "--limit", "2", "--num-steps", "1"]) == 0
    assert json.loads(out.read_text())["settings"]["sampler"]["num_inference_steps"] == 1


def test_scene_keeping_flags_reach_the_pipeline(manifest, tiny_folder, tmp_path):
    out = tmp_path / "keep.json"
    argv = ["--model", str(tiny_folder), "--manifest", str(manifest), "--out", str(out)]
    argv += ["--limit", "2", "--num-steps", "1"]
    assert main([*argv, "--no-keep-scene"]) == 0
    raw = json.loads(out.read_text())
    assert raw["settings"]["sampler"]["keep_scene"] is False
    flags = ["--keep-scene", "--keep-scene-low", "0.3", "--keep-scene-high", "0.5"]
    assert main([*argv, *flags, "--keep-scene-radius", "0"]) == 0
    kept = json.loads(out.read_text())
    sampler = kept["settings"]["sampler"]
    assert (sampler["keep_scene"], sampler["keep_scene_low"], sampler["keep_scene_high"]) == (
        True,
        0.3,
        0.5,
    )
    assert sampler["keep_scene_radius"] == 0
    # the random model redraws the scene: scene keeping brings the input's pixels back, and the
    # goal image nears copying the input
    assert kept["summary"]["goal_psnr"] > raw["summary"]["goal_psnr"] + 1.0
    with pytest.raises(SystemExit, match="keep_scene_high"):
        main([*argv, "--keep-scene-low", "0.5", "--keep-scene-high", "0.2"])


def test_the_weight_dtype_is_chosen_on_the_command_line(manifest, tiny_folder, tmp_path):
    out = tmp_path / "bf16.json"
    argv = ["--model", str(tiny_folder), "--manifest", str(manifest), "--out", str(out)]
    argv += ["--limit", "2", "--num-steps", "1"]
    assert main([*argv, "--dtype", "float32"]) == 0
    float32 = json.loads(out.read_text())["summary"]["goal_psnr"]
    assert main([*argv, "--dtype", "bfloat16"]) == 0
    results = json.loads(out.read_text())
    assert results["settings"]["dtype"] == "bfloat16"
    # the same seeds in bfloat16: close to float32's figure, not the same computation
    assert 0 < abs(results["summary"]["goal_psnr"] - float32) < 1.0


def test_merge_adapters_evaluates_the_nodes_merged_copy(manifest, tmp_path):
    import torch

    from showme_model import adapters
    from showme_model.model import ShowMeModel
    from showme_model.pipeline import ShowMePipeline

    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    adapters.add_adapter(model, "manipulation", rank=4)
    with torch.no_grad():  # give the adapter an effect (a fresh LoRA B is zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "merged.json"
    argv = ["--model", str(tmp_path / "model"), "--manifest", str(manifest), "--out", str(out)]
    argv += ["--limit", "2", "--num-steps", "1"]
    assert main(argv) == 0
    plain = json.loads(out.read_text())["summary"]["goal_psnr"]
    made = []
    original = ShowMePipeline.from_pretrained

    def spy(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ShowMePipeline, "from_pretrained", spy)
        assert main([*argv, "--merge-adapters"]) == 0
    results = json.loads(out.read_text())
    (pipeline,) = made
    assert pipeline.merge_adapters and len(pipeline._merged) == 1  # the merged copy denoised
    assert results["settings"]["merge_adapters"] is True
    # float32: merging changes the computation, not the frames
    assert results["summary"]["goal_psnr"] == pytest.approx(plain, abs=1e-3)


def test_the_frame_stride_condition_reaches_the_rollouts(manifest, tmp_path):
    import torch

    from showme_model.model import ShowMeModel

    folder = save_tiny_model(tmp_path / "model")
    model = ShowMeModel.from_pretrained(folder)
    # The stride embedding starts at zero, as in DynamiCrafter; a trained one is not.
    torch.nn.init.normal_(model.unet.fs_embedding.linear_2.weight, std=1.0)
    model.save_pretrained(folder)
    argv = ["--model", str(folder), "--manifest", str(manifest), "--mode", "video"]
    rollouts = {}
    for stride in (1, 8):
        out = tmp_path / f"stride{stride}.json"
        assert main([*argv, "--limit", "2", "--frame-stride", str(stride), "--out", str(out)]) == 0
        results = json.loads(out.read_text())
        assert results["settings"]["sampler"]["frame_stride"] == stride
        rollouts[stride] = [row["video_psnr"] for row in results["per_sample"]]
    assert rollouts[1] != rollouts[8]


def test_predictions_do_not_depend_on_the_batch_size(manifest, tiny_folder):
    from showme_model.pipeline import ShowMePipeline
    from training.evaluate import (
        build_parser,
        load_samples,
        pipeline_predictor,
        predict_all,
        sampler_settings,
    )

    args = build_parser().parse_args(["--model", str(tiny_folder), "--manifest", str(manifest)])
    pipeline = ShowMePipeline.from_pretrained(tiny_folder)
    predictor = pipeline_predictor(pipeline, "image", sampler_settings(args))
    samples, _ = load_samples(manifest, "test", limit=4)
    one = predict_all(samples, predictor, batch_size=1, seed=3)
    three = predict_all(samples, predictor, batch_size=3, seed=3)
    differences = [
        np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(one, three, strict=True)
    ]
    # identical up to float rounding of batched versus single forwards
    assert max(differences) <= 1, differences
    reseeded = predict_all(samples, predictor, batch_size=3, seed=4)
    assert all(
        np.abs(a.astype(int) - b.astype(int)).max() > 10 for a, b in zip(one, reseeded, strict=True)
    )


def test_bad_sampler_settings_exit_before_reading_clips(manifest, tmp_path):
    argv = ["--model", "unused", "--manifest", str(manifest), "--out", str(tmp_path / "x.json")]
    with pytest.raises(SystemExit, match="guidance_scale"):
        main([*argv, "--guidance-scale", "1e6"], predictor=_copy_predictor)


def test_limit_keeps_whole_scenes(manifest, tmp_path):
    out = tmp_path / "r.json"
    argv = ["--model", "m", "--manifest", str(manifest), "--limit", "3", "--out", str(out)]
    main(argv, predictor=_rule_predictor)
    assert json.loads(out.read_text())["summary"]["num_samples"] == 4


def test_too_short_rollout_is_refused_before_any_prediction(manifest, tmp_path):
    calls = []

    def predictor(images, instructions, seeds):
        calls.append(len(images))
        return _copy_predictor(images, instructions, seeds)

    argv = ["--model", "unused", "--manifest", str(manifest), "--mode", "video"]
    argv += ["--num-frames", "2", "--out", str(tmp_path / "short.json")]
    with pytest.raises(SystemExit, match="--num-frames must be >= 3"):
        main(argv, predictor=predictor)
    assert calls == [] and not (tmp_path / "short.json").exists()


def test_off_arm_needs_metaworld_clips_and_says_so_before_predicting(manifest, tmp_path):
    calls = []

    def predictor(images, instructions, seeds):
        calls.append(len(images))
        return _copy_predictor(images, instructions, seeds)

    argv = ["--model", "unused", "--manifest", str(manifest), "--off-arm"]
    with pytest.raises(SystemExit, match="not a Meta-World generator clip"):
        main([*argv, "--out", str(tmp_path / "x.json")], predictor=predictor)
    assert calls == []


def test_the_autoencoder_reconstruction_keeps_each_frame_size(tiny_folder):
    from showme_model.pipeline import ShowMePipeline
    from training.evaluate import pipeline_reconstructor

    reconstruct = pipeline_reconstructor(ShowMePipeline.from_pretrained(tiny_folder))
    frames = [_clip(1, 0)[-1], np.full((40, 48, 3), 200, np.uint8)]
    first, second = reconstruct(frames)
    assert first.shape == (SIZE, SIZE, 3) and second.shape == (40, 48, 3)
    assert first.dtype == np.uint8
    np.testing.assert_array_equal(reconstruct(frames)[0], first)  # the posterior mode
    assert not np.array_equal(reconstruct([frames[0] // 2])[0], first)
