"""ImageProjector against outputs of the original Resampler (random weights, data fixture)."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from showme_model import adapters
from showme_model.resampler import (
    ImageProjector,
    convert_resampler_state_dict,
    convert_showme_lora_state_dict,
)

FIXTURE = Path(__file__).parent / "fixtures" / "resampler_parity"


def _projector() -> ImageProjector:
    with safe_open(FIXTURE / "io.safetensors", "pt") as handle:
        meta = handle.metadata()
    config = {key: int(meta[key]) for key in ("dim", "depth", "dim_head", "heads", "num_queries")}
    config.update(input_dim=int(meta["embedding_dim"]), output_dim=int(meta["output_dim"]))
    config.update(ff_mult=int(meta["ff_mult"]), video_length=int(meta["video_length"]))
    projector = ImageProjector(**config).eval()
    state = convert_resampler_state_dict(load_file(FIXTURE / "resampler.safetensors"))
    projector.load_state_dict(state, strict=True)
    return projector


def test_matches_original_resampler():
    io = load_file(FIXTURE / "io.safetensors")
    projector = _projector()
    with torch.no_grad():
        output = projector(io["input"])
    assert output.shape == io["output"].shape
    torch.testing.assert_close(output, io["output"], atol=1e-4, rtol=0)


def test_matches_showme_fork_with_stage1_lora(tmp_path):
    io = load_file(FIXTURE / "io.safetensors")
    model = nn.ModuleDict({"unet": nn.Identity(), "image_projector": _projector()})
    lora = convert_showme_lora_state_dict(load_file(FIXTURE / "stage1_lora.safetensors"))
    adapters.write_adapter(
        tmp_path, "manipulation", {f"image_projector.{k}": v for k, v in lora.items()}
    )
    assert adapters.load_adapter(model, tmp_path) == "manipulation"
    model.eval()
    with torch.no_grad():
        with adapters.active_adapters(model, ["manipulation"]):
            adapted = model.image_projector(io["input"])
        with adapters.active_adapters(model, []):
            base = model.image_projector(io["input"])
    torch.testing.assert_close(adapted, io["output_stage1_lora"], atol=1e-4, rtol=0)
    torch.testing.assert_close(base, io["output"], atol=1e-4, rtol=0)


def test_fused_to_kv_is_split_into_key_then_value():
    fused = torch.arange(2 * 6 * 5, dtype=torch.float32).reshape(12, 5)
    converted = convert_resampler_state_dict({"layers.0.0.to_kv.weight": fused})
    assert torch.equal(converted["layers.0.attn.to_k.weight"], fused[:6])
    assert torch.equal(converted["layers.0.attn.to_v.weight"], fused[6:])


def test_rejects_unknown_keys_and_bad_input():
    with pytest.raises(KeyError, match="unexpected Resampler key"):
        convert_resampler_state_dict({"layers.0.2.weight": torch.zeros(1)})
    projector = ImageProjector(input_dim=8, dim=16, output_dim=8, depth=1, heads=2, dim_head=8)
    assert projector.num_tokens == 16 * 16
    with pytest.raises(ValueError, match=r"\(B, N, 8\)"):
        projector(torch.zeros(1, 4, 9))
