"""Speed options of ShowMePipeline give the frames of the reference path: merged adapters,
compiled UNet."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from peft.tuners.lora import LoraLayer

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from showme_model.unet_blocks import DualCrossAttention


def tiny_model() -> ShowMeModel:
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    for role in ("manipulation", "prediction"):
        adapters.add_adapter(model, role, rank=4)
    with torch.no_grad():  # give the adapters an effect (fresh LoRA B is zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)


def test_merged_adapters_give_the_reference_frames_without_running_lora_layers(image):
    reference = ShowMePipeline(tiny_model())
    merged = ShowMePipeline(tiny_model(), merge_adapters=True)
    before = {key: value.clone() for key, value in merged.model.state_dict().items()}
    lora_calls = []
    for layer in merged.model.unet.modules():
        if isinstance(layer, LoraLayer):
            layer.register_forward_hook(lambda *_: lora_calls.append(1))
    kwargs = {"num_frames": 3, "num_inference_steps": 3, "seed": 4, "output_type": "float"}
    for mode in ("video", "image", "video"):  # the merged copy follows the mode's adapters
        expected = reference(image, "push", mode, **kwargs).frames
        result = merged(image, "push", mode, **kwargs).frames
        assert np.abs(result - expected).max() < 1e-5, mode
    assert not lora_calls
    # The model itself is untouched: same weights, adapters not merged into them.
    after = merged.model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert not any(
        layer.merged for layer in merged.model.unet.modules() if isinstance(layer, LoraLayer)
    )


def attention_kernels(unet: torch.nn.Module) -> set[str]:
    """The attention kernels ``unet``'s layers use (``set_attention_kernel``'s names)."""
    kernels = set()
    for module in unet.modules():
        if isinstance(module, DualCrossAttention):
            kernels.add(module.processor.kernel)
        elif isinstance(module, Attention):
            kernels.add("sdpa" if isinstance(module.processor, AttnProcessor2_0) else "math")
    return kernels


def test_merged_copies_on_the_cpu_attend_by_matmuls_in_bfloat16_only(image):
    kwargs = {"num_inference_steps": 2, "seed": 4, "output_type": "float"}
    expected = ShowMePipeline(tiny_model())(image, "push", "image", **kwargs).frames
    for dtype, kernel in ((torch.float32, "sdpa"), (torch.bfloat16, "math")):
        merged = ShowMePipeline(tiny_model(), merge_adapters=True).to("cpu", dtype)
        error = np.abs(merged(image, "push", "image", **kwargs).frames - expected)
        (copy,) = merged._merged.values()
        assert attention_kernels(copy) == {kernel}, dtype
        assert attention_kernels(merged.model.unet) == {"sdpa"}  # the model's own is untouched
        if dtype == torch.float32:
            assert error.max() < 1e-5
        else:  # bfloat16's own rounding: the unmerged bfloat16 pipeline is 0.006 off
            assert error.mean() < 0.01, error.mean()


@pytest.mark.slow
def test_compiled_unet_gives_the_reference_frames_and_compiles_once_per_mode(image):
    reference = ShowMePipeline(tiny_model())
    compiled = ShowMePipeline(tiny_model(), merge_adapters=True, compile_unet=True)
    kwargs = {"num_frames": 3, "num_inference_steps": 2, "seed": 4, "output_type": "float"}
    for mode in ("image", "video", "image"):
        expected = reference(image, "push", mode, **kwargs).frames
        result = compiled(image, "push", mode, **kwargs).frames
        assert np.abs(result - expected).max() < 1e-4, mode
    # One compiled merged copy per mode, kept across the switch back to image mode.
    assert len(compiled._compiled) == 2 and len(compiled._merged) == 2
    assert all(
        isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in compiled._compiled.values()
    )
    assert all(attention_kernels(m) == {"sdpa"} for m in compiled._merged.values())
