"""``showme predict`` writes exactly the files it reports."""

import json

import cv2
import numpy as np
import pytest
import torch

from showme_model import adapters
from showme_model.cli import main
from showme_model.model import ShowMeModel
from showme_model.pipeline import default_model_path
from showme_model.sampler_config import SamplerConfig


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    for role in ("manipulation", "prediction"):
        adapters.add_adapter(model, role, rank=4)
    model.sampler_config = SamplerConfig(num_inference_steps=2, guidance_scale=1.0, num_frames=3)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    return path


def _written(capsys) -> list[str]:
    return [line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines()]


def test_video_mode_writes_the_rollout_strip_and_metadata(model_folder, image_file, capsys):
    out, strip, meta = (image_file.with_name(n) for n in ("out.mp4", "strip.png", "meta.json"))
    args = ["predict", "--model", str(model_folder), "--image", str(image_file)]
    args += ["--instruction", "open the drawer", "--mode", "video", "--num-frames", "3"]
    args += ["--steps", "2", "--seed", "4", "--out", str(out), "--strip", str(strip)]
    assert main([*args, "--metadata", str(meta)]) == 0
    assert _written(capsys) == [str(out), str(strip), str(meta)]
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    assert cv2.imread(str(strip)).shape[:2] == (40, 60 + 3 * (4 + 40))
    metadata = json.loads(meta.read_text())
    assert metadata["seeds"] == [4] and metadata["mode"] == "video"
    assert metadata["adapters"] == ["manipulation", "prediction"]


def test_image_mode_writes_one_goal_png_per_candidate(model_folder, image_file, capsys):
    out = image_file.with_name("goal.png")
    args = ["predict", "--model", str(model_folder), "--image", str(image_file), "--steps", "1"]
    assert main([*args, "--instruction", "a", "--instruction", "b", "--out", str(out)]) == 0
    expected = [str(out.with_name(f"goal_{i}.png")) for i in range(2)]
    assert _written(capsys) == expected
    assert all(cv2.imread(p).shape == (64, 64, 3) for p in expected)


def test_missing_model_and_bad_settings_exit_with_a_message(image_file, capsys, monkeypatch):
    monkeypatch.setattr("showme_model.pipeline.SHIPPED_MODEL", image_file.parent / "none")
    args = ["predict", "--image", str(image_file), "--instruction", "a", "--out", "x.png"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and "--model" in capsys.readouterr().err


def test_default_flags_take_the_models_stored_settings(model_folder, image_file, capsys):
    out, meta = image_file.with_name("out.gif"), image_file.with_name("meta.json")
    args = ["predict", "--model", str(model_folder), "--image", str(image_file), "--mode", "video"]
    assert main([*args, "--instruction", "a", "--out", str(out), "--metadata", str(meta)]) == 0
    metadata = json.loads(meta.read_text())
    assert metadata["num_inference_steps"] == 2 and metadata["guidance_scale"] == 1.0
    assert metadata["num_frames"] == 3 and metadata["scheduler"] == "ddim"
    assert (
        main(
            [
                *args,
                "--instruction",
                "a",
                "--out",
                str(out),
                "--metadata",
                str(meta),
                "--num-inference-steps",
                "1",
            ]
        )
        == 0
    )
    assert json.loads(meta.read_text())["num_inference_steps"] == 1


def test_shipped_model_runs_with_its_card_settings_by_default(image_file, capsys):
    out, meta = image_file.with_name("goal.png"), image_file.with_name("meta.json")
    args = ["predict", "--image", str(image_file), "--instruction", "open the drawer"]
    assert main([*args, "--mode", "video", "--out", str(out), "--metadata", str(meta)]) == 0
    metadata = json.loads(meta.read_text())
    stored = SamplerConfig.from_pretrained(default_model_path())
    assert stored == SamplerConfig(
        num_inference_steps=10, guidance_scale=2.0, num_frames=8, frame_stride=2, keep_scene=True
    )
    assert {key: metadata[key] for key in stored.to_dict()} == stored.to_dict()


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--guidance-scale", "1e6"], "guidance_scale"), (["--steps", "0"], "num_inference_steps")],
)
def test_bad_sampler_settings_exit_with_a_message(model_folder, image_file, capsys, flags, message):
    args = ["predict", "--model", str(model_folder), "--image", str(image_file)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--instruction", "a", "--out", str(image_file.with_name("x.png")), *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
