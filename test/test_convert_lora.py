"""showme-convert lora: ShowMe release LoRA files into adapter folders."""

import json
import pathlib
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig
from safetensors.torch import load_file, save_file
from torch import nn

from showme_model import adapters
from showme_model.convert import main
from showme_model.unet import ShowMeUNet
from showme_model.unet_conversion import convert_dynamicrafter_unet
from test.test_components_resampler import _projector

FIXTURES = Path(__file__).parent / "fixtures"
UNET_CONFIG = FIXTURES / "dynamicrafter_parity" / "unet_config.json"


def _release_file(tmp_path: Path) -> Path:
    state = load_file(FIXTURES / "dynamicrafter_parity" / "stage1_lora.safetensors")
    projector = load_file(FIXTURES / "resampler_parity" / "stage1_lora.safetensors")
    state.update({f"image_proj_model.{k}": v for k, v in projector.items()})
    path = tmp_path / "stage1_lora.safetensors"
    save_file(state, path)
    return path


def test_stage1_release_becomes_a_loadable_manipulation_adapter(tmp_path, capsys):
    out = tmp_path / "adapter"
    status = main(
        ["lora", str(_release_file(tmp_path)), str(out), "--unet-config", str(UNET_CONFIG)]
    )
    assert status == 0
    assert "stage 1 -> manipulation" in capsys.readouterr().out
    config = PeftConfig.from_pretrained(out)  # a peft LoraConfig of the whole model
    assert isinstance(config, LoraConfig) and config.r == config.lora_alpha
    assert {name.split(".")[0] for name in config.target_modules} == {"unet", "image_projector"}
    extras = json.loads((out / adapters.EXTRAS_NAME).read_text())
    assert extras == {"role": "manipulation", "unet_settings": {"image_mode_temporal_convs": True}}

    unet = ShowMeUNet(**json.loads(UNET_CONFIG.read_text()))
    model = nn.ModuleDict({"unet": unet, "image_projector": _projector()})
    assert adapters.load_adapter(model, out) == "manipulation"
    weights = load_file(out / "adapter_model.safetensors")
    key = next(k for k in weights if k.startswith("unet.") and k.endswith("lora_B.weight"))
    module = key.removeprefix("unet.").removesuffix(".lora_B.weight")
    loaded = model.unet.get_submodule(module).lora_B["manipulation"].weight
    assert torch.equal(loaded, weights[key])


def test_release_files_through_the_public_path_match_showme(tmp_path, capsys):
    """showme-convert lora + adapters.load_adapter reproduce the ShowMe fork's outputs."""
    config = json.loads(UNET_CONFIG.read_text())
    base = load_file(FIXTURES / "dynamicrafter_parity" / "unet.safetensors")
    unet = ShowMeUNet(**{**config, "image_mode_temporal_convs": True})
    unet.load_state_dict(convert_dynamicrafter_unet(base, config).state_dict)
    model = nn.ModuleDict({"unet": unet, "image_projector": _projector()})
    stage2 = FIXTURES / "dynamicrafter_parity" / "stage2_lora.safetensors"
    for release, role in ((_release_file(tmp_path), "manipulation"), (stage2, "prediction")):
        command = ["lora", str(release), str(tmp_path / role), "--unet-config", str(UNET_CONFIG)]
        assert main(command) == 0
        assert adapters.load_adapter(model, tmp_path / role) == role
    assert "temporal feed-forward LoRA never runs in image mode" in capsys.readouterr().out
    model.eval()

    cases = load_file(FIXTURES / "dynamicrafter_parity" / "cases.safetensors")
    projector_io = load_file(FIXTURES / "resampler_parity" / "io.safetensors")
    with torch.no_grad(), adapters.active_adapters(model, ["manipulation"]):
        image = model.unet(
            cases["image.sample"], cases["image.timestep"], cases["image.context"], temporal=False
        )
        context = model.image_projector(projector_io["input"])
    torch.testing.assert_close(image, cases["image.output"], atol=1e-4, rtol=0)
    torch.testing.assert_close(context, projector_io["output_stage1_lora"], atol=1e-4, rtol=0)
    with torch.no_grad(), adapters.active_adapters(model, ["prediction"]):
        video = model.unet(
            cases["video_a.sample"],
            cases["video_a.timestep"],
            cases["video_a.context"],
            frame_stride=cases["video_a.frame_stride"],
        )
    torch.testing.assert_close(video, cases["video_lora.output"], atol=1e-4, rtol=0)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_refuses_code_and_mixed_stages(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": _Payload(tmp_path / "ran")}}, evil)
    assert main(["lora", str(evil), str(tmp_path / "a")]) == 1
    assert "refused without running" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()

    mixed = tmp_path / "mixed.safetensors"
    save_file(
        {
            "a.stage1_lora_ff_in.lora_A": torch.zeros(2, 2),
            "a.stage2_lora_ff_in.lora_A": torch.zeros(2, 2),
        },
        mixed,
    )
    assert main(["lora", str(mixed), str(tmp_path / "b")]) == 1
    assert "exactly one stage" in capsys.readouterr().err


def test_shapes_are_checked_against_the_preset(tmp_path, capsys):
    """A tiny release file does not fit dynamicrafter-256: refused, naming the file's key."""
    output = tmp_path / "adapter"
    command = ["lora", str(_release_file(tmp_path)), str(output), "--preset", "dynamicrafter-256"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "model.diffusion_model.init_attn" not in err  # stage 1 has no temporal attention LoRA
    assert "does not fit" in err and ".stage1_lora_" in err and "model.diffusion_model." in err
    assert not output.exists()


def _model_folder(tmp_path: Path, component: str, **changes) -> Path:
    """A model folder's two configs the LoRA shapes are checked against (weights unused)."""
    folder = tmp_path / "model"
    unet = {"_class_name": "ShowMeUNet", **json.loads(UNET_CONFIG.read_text())}
    projector = {"_class_name": "ImageProjector", **dict(_projector().config)}
    configs = {"unet": unet, "image_projector": projector}
    configs[component].update(changes)
    for name, config in configs.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps(config))
    return folder


def test_shapes_are_checked_against_a_model_folder(tmp_path, capsys):
    release = str(_release_file(tmp_path))
    fitting = _model_folder(tmp_path / "a", "unet")
    assert main(["lora", release, str(tmp_path / "ok"), "--model", str(fitting)]) == 0
    capsys.readouterr()

    narrow_unet = _model_folder(tmp_path / "b", "unet", cross_attention_dim=16)
    assert main(["lora", release, str(tmp_path / "x"), "--model", str(narrow_unet)]) == 1
    err = capsys.readouterr().err
    assert ".attn2.stage1_lora_cross_attn_" in err and ".lora_A: shape (" in err
    assert ".attn2.to_k" in err and "does not fit" in err

    other_projector = _model_folder(tmp_path / "c", "image_projector", heads=2)
    assert main(["lora", release, str(tmp_path / "y"), "--model", str(other_projector)]) == 1
    err = capsys.readouterr().err
    assert "image_proj_model.layers.0.0.stage1_lora_cross_attn_" in err and "does not fit" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
