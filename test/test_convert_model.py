"""showme-convert model: a DynamiCrafter Lightning checkpoint into a model folder, end to end.

The checkpoint is assembled in the original key layout from fixture data: the UNet of
``dynamicrafter_parity``, the Resampler of ``resampler_parity``, and the VAE, OpenCLIP text and
OpenCLIP image towers of ``dynamicrafter_checkpoint`` (tiny configs, random weights), whose
reference outputs were computed by the original code (see that folder's README).
"""

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from showme_model import adapters
from showme_model.convert import ConversionError, main, staged_folder
from showme_model.model import ShowMeModel
from test.test_convert_lora import _release_file

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "dynamicrafter_parity"
CHECKPOINT = FIXTURES / "dynamicrafter_checkpoint"
TOLERANCE = 1e-4
UNEXPECTED_KEY = "extra_head.weight"


def _checkpoint_state() -> dict[str, torch.Tensor]:
    state = load_file(CHECKPOINT / "components.safetensors")
    state.update(load_file(PARITY / "unet.safetensors"))
    projector = load_file(FIXTURES / "resampler_parity" / "resampler.safetensors")
    state.update({f"image_proj_model.{k}": v for k, v in projector.items()})
    state = {k: v.float() for k, v in state.items()}
    state["alphas_cumprod"] = torch.linspace(0.999, 0.01, 1000)  # a schedule buffer
    return state


def _convert(checkpoint: Path, output: Path, *extra: str) -> tuple[int, str, str]:
    args = [
        "model",
        str(checkpoint),
        str(output),
        "--unet-config",
        str(PARITY / "unet_config.json"),
    ]
    args += ["--clip-tokenizer", str(CHECKPOINT / "tokenizer")]
    args += ["--text-heads", "4", "--vision-heads", "4", "--projector-heads", "4", *extra]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(args)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, str]:
    """The ShowMe release: the checkpoint plus both stage LoRA files, through the CLI."""
    folder = tmp_path_factory.mktemp("convert")
    state = _checkpoint_state()
    state[f"model.diffusion_model.{UNEXPECTED_KEY}"] = torch.zeros(2, 2)
    checkpoint = folder / "dynamicrafter.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, checkpoint)  # Lightning layout
    loras = [_release_file(folder), PARITY / "stage2_lora.safetensors"]
    lora_args = [a for path in loras for a in ("--lora", str(path))]
    status, out, err = _convert(checkpoint, folder / "model", *lora_args, "--allow-unmatched-keys")
    assert status == 0, err
    return folder / "model", out


@pytest.fixture(scope="module")
def model(converted) -> ShowMeModel:
    return ShowMeModel.from_pretrained(converted[0]).eval()


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(CHECKPOINT / "reference.safetensors").items()}


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() < TOLERANCE


def test_report_names_allowed_unexpected_and_ignored_keys(converted):
    folder, out = converted
    line = f"allowed: UNet: unexpected model.diffusion_model.{UNEXPECTED_KEY} -> (no counterpart)"
    assert line in out.splitlines()
    ignored = next(line for line in out.splitlines() if line.startswith("ignored"))
    assert "alphas_cumprod" in ignored
    assert "stage 1 -> manipulation" in out and "stage 2 -> prediction" in out
    assert sorted(p.name for p in (folder / "adapters").iterdir()) == [
        "manipulation",
        "prediction",
    ]
    config = json.loads((folder / "unet" / "config.json").read_text())
    assert config["image_mode_temporal_convs"] is True  # recorded for the ShowMe release


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        # The report names the key the converted component lacks.
        ("first_stage_model.decoder.mid.block_1.conv1.weight", "VAE: missing 1 keys"),
        (
            "model.diffusion_model.out.2.weight",
            "missing model.diffusion_model.out.2.weight -> conv_out",
        ),
        ("embedder.model.visual.ln_pre.weight", "image encoder: missing 1 keys, e.g. ['pre_"),
    ],
)
def test_missing_keys_are_refused(tmp_path, drop, message):
    state = _checkpoint_state()
    del state[drop]
    checkpoint = tmp_path / "partial.safetensors"
    save_file(state, checkpoint)
    status, _, err = _convert(checkpoint, tmp_path / "model")
    assert status == 1
    assert message in err
    assert not (tmp_path / "model").exists()


def test_text_encoder_matches_openclip_penultimate_layer(model, reference):
    prompts = json.loads(
        safe_open(CHECKPOINT / "reference.safetensors", "pt").metadata()["prompts"]
    )
    ids = model.text_encoder.tokenize(prompts)
    assert torch.equal(ids, reference["text.prompts_ids"].long())
    _close(model.encode_text(prompts), reference["text.output"])


def test_image_tokens_and_context_match_the_original(model, reference):
    images = reference["image.input"]
    with torch.no_grad():
        tokens = model.image_encoder.encode(images)
        with adapters.active_adapters(model, []):
            context = model.encode_image_context(images)
    assert tokens.shape[1] == 257
    _close(tokens, reference["image.tokens"])
    _close(context, reference["image.context"])


def test_vae_matches_the_original(model, reference):
    scale = model.vae.config.scaling_factor
    with torch.no_grad():
        latents = model.encode_latents(reference["vae.frames"])
        decoded = model.decode_latents(reference["vae.latents"] * scale)
    _close(latents / scale, reference["vae.posterior_mean"])
    _close(decoded, reference["vae.decoded"])


def test_converted_unet_matches_dynamicrafter_and_showme(model):
    cases = load_file(PARITY / "cases.safetensors")
    video = (cases["video_a.sample"], cases["video_a.timestep"], cases["video_a.context"])
    stride = cases["video_a.frame_stride"]
    image = (cases["image.sample"], cases["image.timestep"], cases["image.context"])
    with torch.no_grad():
        with adapters.active_adapters(model, []):
            _close(model.unet(*video, frame_stride=stride), cases["video_a.output"])
            _close(model.unet(*image, temporal=False), cases["image_base.output"])
        with adapters.active_adapters(model, ["manipulation"]):
            _close(model.unet(*image, temporal=False), cases["image.output"])
        with adapters.active_adapters(model, ["prediction"]):
            _close(model.unet(*video, frame_stride=stride), cases["video_lora.output"])


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file(state, path)
    return path


def _unet_config_file(folder: Path, **changes) -> Path:
    config = {**json.loads((PARITY / "unet_config.json").read_text()), **changes}
    path = folder / "unet_config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("changes", "key", "ours"),
    [
        # A checkpoint with spatial attention at the first level, for a layout without it.
        (
            {"attention_levels": [False, False]},
            "model.diffusion_model.input_blocks.1.1.proj_in.weight",
            "(no counterpart)",
        ),
        # A checkpoint with learnable image-attention weights, for a config with fixed ones.
        (
            {"learnable_image_weight": False},
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.alpha",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.alpha (not in this config)",
        ),
    ],
)
def test_unexpected_unet_keys_fail_unless_allowed(tmp_path, changes, key, ours):
    checkpoint = _save(_checkpoint_state(), tmp_path / "checkpoint.safetensors")
    config = ["--unet-config", str(_unet_config_file(tmp_path, **changes))]
    status, _, err = _convert(checkpoint, tmp_path / "model", *config)
    assert status == 1
    assert f"UNet: unexpected {key} -> {ours}" in err
    assert "--allow-unmatched-keys" in err
    assert not (tmp_path / "model").exists()

    status, out, err = _convert(checkpoint, tmp_path / "model", *config, "--allow-unmatched-keys")
    assert status == 0, err
    assert f"allowed: UNet: unexpected {key} -> {ours}" in out.splitlines()


@pytest.mark.parametrize(
    ("dropped", "ours"),
    [
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2"
            ".stage1_lora_cross_attn_ip_v.lora_B",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v_ip.lora_B.weight",
        ),
        (
            "image_proj_model.layers.1.0.stage1_lora_cross_attn_k.lora_A",
            "image_projector.layers.1.attn.to_k.lora_A.weight",
        ),
    ],
)
def test_missing_lora_keys_fail_with_the_release_name(tmp_path, dropped, ours):
    release = load_file(_release_file(tmp_path))
    del release[dropped]
    lora = _save(release, tmp_path / "stage1_partial.safetensors")
    checkpoint = _save(_checkpoint_state(), tmp_path / "checkpoint.safetensors")
    status, _, err = _convert(checkpoint, tmp_path / "model", "--lora", str(lora))
    assert status == 1
    assert f"  manipulation LoRA: missing {dropped} -> {ours}" in err.splitlines()
    assert not (tmp_path / "model").exists()


def test_a_truncated_lora_file_leaves_nothing_behind(tmp_path):
    checkpoint = _save(_checkpoint_state(), tmp_path / "checkpoint.safetensors")
    whole = _release_file(tmp_path).read_bytes()
    truncated = tmp_path / "stage1_truncated.safetensors"
    truncated.write_bytes(whole[: len(whole) // 2])
    outputs = tmp_path / "models"
    outputs.mkdir()
    status, _, err = _convert(checkpoint, outputs / "model", "--lora", str(truncated))
    assert status == 1
    assert "stage1_truncated.safetensors" in err
    assert list(outputs.iterdir()) == []


def test_staged_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), staged_folder(target) as folder:
        (folder / "half-written").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with staged_folder(target) as folder:
        (folder / "first").write_text("1")
    assert [p.name for p in target.iterdir()] == ["first"]
    with pytest.raises(ConversionError, match="--overwrite"), staged_folder(target):
        pass
    with staged_folder(target, overwrite=True) as folder:
        (folder / "second").write_text("2")
    assert [p.name for p in target.iterdir()] == ["second"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("config_source", ["--unet-config", "--model"])
def test_model_then_lora_commands_give_the_release_outputs(tmp_path, config_source):
    """``model`` without --lora, then ``lora`` into its folder: adapters bring their settings."""
    checkpoint = _save(_checkpoint_state(), tmp_path / "checkpoint.safetensors")
    folder = tmp_path / "model"
    assert _convert(checkpoint, folder)[0] == 0
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    assert unet_config["image_mode_temporal_convs"] is False  # base DynamiCrafter
    config = str(PARITY / "unet_config.json") if config_source == "--unet-config" else str(folder)
    stage2 = PARITY / "stage2_lora.safetensors"
    for release, role in ((_release_file(tmp_path), "manipulation"), (stage2, "prediction")):
        output = folder / "adapters" / role
        assert main(["lora", str(release), str(output), config_source, config]) == 0

    model = ShowMeModel.from_pretrained(folder).eval()
    cases = load_file(PARITY / "cases.safetensors")
    image = (cases["image.sample"], cases["image.timestep"], cases["image.context"])
    with torch.no_grad(), adapters.active_adapters(model, ["manipulation"]):
        _close(model.unet(*image, temporal=False), cases["image.output"])
    assert model.unet.config.image_mode_temporal_convs is True


def test_allowed_missing_unet_weights_keep_their_initial_values(tmp_path):
    """A checkpoint without the frame-stride embedding (zero-initialised last layer)."""
    state = {k: v for k, v in _checkpoint_state().items() if "framestride_embed" not in k}
    checkpoint = _save(state, tmp_path / "checkpoint.safetensors")
    status, _, err = _convert(checkpoint, tmp_path / "model")
    assert status == 1
    line = "UNet: missing model.diffusion_model.framestride_embed.2.weight -> fs_embedding.linear_2"
    assert line in err
    status, out, err = _convert(checkpoint, tmp_path / "model", "--allow-unmatched-keys")
    assert status == 0, err
    assert f"allowed: {line}.weight" in out.splitlines()
    unet = ShowMeModel.from_pretrained(tmp_path / "model").unet
    assert not unet.fs_embedding.linear_2.weight.any()
