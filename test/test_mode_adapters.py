"""Which adapters act in each mode: the method's by default, a model folder's choice otherwise."""

import json

import numpy as np
import pytest
import torch

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from showme_model.sampler_config import SamplerConfig
from test.test_eval_cli import _clip
from training.data.manifest import ClipRecord, write_manifest
from training.evaluate import main as evaluate_main

IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_the_method_default_and_overrides():
    assert adapters.mode_roles() == {
        "image": ("manipulation",),
        "video": ("manipulation", "prediction"),
    }
    chosen = adapters.mode_roles({"video": []})
    assert chosen == {"image": ("manipulation",), "video": ()}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"audio": []}, "unknown mode"),
        ({"video": ["motion"]}, "unknown adapter role"),
        ({"video": ["prediction", "prediction"]}, "repeated"),
        ({"video": "prediction"}, "must be a list"),
    ],
)
def test_bad_choices_are_refused(overrides, message):
    with pytest.raises(adapters.AdapterError, match=message):
        adapters.mode_roles(overrides)


def test_a_folder_file_round_trips_and_bad_files_are_refused(tmp_path):
    assert adapters.read_mode_roles(tmp_path) is None
    adapters.write_mode_roles(tmp_path, {"video": ["prediction"]})
    stored = json.loads((tmp_path / adapters.MODE_ROLES_NAME).read_text())
    assert stored == {"image": ["manipulation"], "video": ["prediction"]}
    assert adapters.read_mode_roles(tmp_path)["video"] == ("prediction",)
    (tmp_path / adapters.MODE_ROLES_NAME).write_text("{not json")
    with pytest.raises(adapters.AdapterError, match="not valid JSON"):
        adapters.read_mode_roles(tmp_path)
    (tmp_path / adapters.MODE_ROLES_NAME).write_text('{"video": ["motion"]}')
    with pytest.raises(adapters.AdapterError, match="motion"):
        adapters.read_mode_roles(tmp_path)


def test_a_model_folder_with_a_bad_choice_does_not_load(tmp_path):
    torch.manual_seed(0)
    ShowMeModel.from_config_name("tiny").save_pretrained(tmp_path)
    (tmp_path / adapters.MODE_ROLES_NAME).write_text('{"video": ["motion"]}')
    with pytest.raises(adapters.AdapterError, match="motion"):
        ShowMePipeline.from_pretrained(tmp_path)


def _folder(path, video_roles):
    """A tiny model with both adapters (non-zero updates), storing ``video_roles`` if given."""
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    model.sampler_config = SamplerConfig(num_inference_steps=2, guidance_scale=2.0, num_frames=4)
    for role in ("manipulation", "prediction"):
        adapters.add_adapter(model, role, rank=2)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    if video_roles is not None:
        model.mode_roles = {"video": video_roles}
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    return _folder(root / "method", None), _folder(root / "base-video", [])


def _rollout(pipeline):
    result = pipeline(IMAGE, "open the drawer", mode="video", seed=0, output_type="float")
    return result.frames[0], result.metadata["adapters"]


def test_the_pipeline_runs_the_roles_the_folder_chose(folders):
    method, base_video = folders
    assert ShowMeModel.from_pretrained(base_video).mode_roles["video"] == ()
    assert ShowMeModel.from_pretrained(method).mode_roles is None
    chosen, roles = _rollout(ShowMePipeline.from_pretrained(base_video))
    assert roles == []
    without_adapters, _ = _rollout(ShowMePipeline.from_pretrained(method, adapters=[]))
    np.testing.assert_array_equal(chosen, without_adapters)
    with_both, roles = _rollout(ShowMePipeline.from_pretrained(method))
    assert roles == ["manipulation", "prediction"]
    assert np.abs(with_both - chosen).max() > 1e-3
    # Image mode keeps the method's adapter in both folders.
    image = ShowMePipeline.from_pretrained(base_video)(IMAGE, "open the drawer", seed=0)
    assert image.metadata["adapters"] == ["manipulation"]


def test_a_merged_pipeline_follows_the_choice(folders):
    _, base_video = folders
    reference, _ = _rollout(ShowMePipeline.from_pretrained(base_video))
    merged, roles = _rollout(ShowMePipeline.from_pretrained(base_video, merge_adapters=True))
    assert roles == []
    np.testing.assert_allclose(merged, reference, atol=1e-5)


def test_set_mode_roles_overrides_a_loaded_folder(folders):
    _, base_video = folders
    pipeline = ShowMePipeline.from_pretrained(base_video)
    adapters.set_mode_roles(pipeline.model, "video", ["manipulation", "prediction"])
    _, roles = _rollout(pipeline)
    assert roles == ["manipulation", "prediction"]
    assert adapters.roles_for_mode(pipeline.model, "image") == ["manipulation"]
    with pytest.raises(adapters.AdapterError, match="unknown adapter role"):
        adapters.set_mode_roles(pipeline.model, "video", ["motion"])


def test_showme_eval_records_the_roles_and_takes_an_override(folders, tmp_path):
    _, base_video = folders
    records = []
    for task, direction in (("slide left", -1), ("slide right", 1)):
        np.savez_compressed(tmp_path / f"{task}.npz", frames=_clip(direction, 0))
        records.append(ClipRecord(task, f"{task}.npz", task, "test", "synthetic"))
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, records)
    argv = ["--model", str(base_video), "--manifest", str(manifest), "--mode", "video"]
    argv += ["--limit", "2"]
    assert evaluate_main([*argv, "--out", str(tmp_path / "chosen.json")]) == 0
    chosen = json.loads((tmp_path / "chosen.json").read_text())
    assert chosen["settings"]["adapters"] == []
    out = tmp_path / "method.json"
    assert (
        evaluate_main([*argv, "--out", str(out), "--adapters", "manipulation", "prediction"]) == 0
    )
    assert json.loads(out.read_text())["settings"]["adapters"] == ["manipulation", "prediction"]
    with pytest.raises(SystemExit, match="unknown adapter role"):
        evaluate_main([*argv, "--out", str(out), "--adapters", "motion"])
