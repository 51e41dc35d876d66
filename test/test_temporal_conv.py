"""The UNet's temporal layers compute what diffusers' layers compute, with the same weights."""

import pytest
import torch
from diffusers.models.resnet import TemporalConvLayer
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

from showme_model.unet_blocks import TemporalConv2dLayer, TemporalTransformer

TOLERANCE = 1e-5


def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``module`` with every parameter random (diffusers zero-initialises the last conv)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module.eval()


def pair(fast_class: type, base_class: type, seed: int, **kwargs) -> tuple:
    base = randomised(base_class(**kwargs), seed)
    fast = fast_class(**kwargs).eval()
    fast.load_state_dict(base.state_dict(), strict=True)
    return fast, base


@pytest.mark.parametrize(
    ("batch", "frames", "channels", "size"),
    [(2, 8, 32, (16, 16)), (1, 5, 64, (4, 6)), (3, 1, 32, (8, 8))],
)
def test_temporal_conv_as_2d_equals_the_3d_convolution(batch, frames, channels, size):
    fast, conv3d = pair(
        TemporalConv2dLayer, TemporalConvLayer, 0, in_dim=channels, out_dim=channels
    )
    features = torch.randn(batch * frames, channels, *size)
    with torch.no_grad():
        expected = conv3d(features, num_frames=frames)
        output = fast(features, num_frames=frames)
    assert output.shape == expected.shape == features.shape
    assert (output - expected).abs().max().item() < TOLERANCE
    # The comparison can fail: frames taken in another order give another result.
    if frames > 1:
        shuffled = features.view(batch, frames, -1).flip(1).reshape(features.shape)
        with torch.no_grad():
            assert (fast(shuffled, num_frames=frames) - expected).abs().max().item() > 1e-2


def test_temporal_conv_keeps_diffusers_parameter_names_and_gradients():
    fast, conv3d = pair(TemporalConv2dLayer, TemporalConvLayer, 1, in_dim=32, out_dim=32)
    assert list(fast.state_dict()) == list(conv3d.state_dict())
    assert fast.conv1[-1].weight.shape == (32, 32, 3, 1, 1)
    features = torch.randn(2 * 4, 32, 6, 6)
    for module in (fast, conv3d):
        module(features, num_frames=4).square().sum().backward()
    scale = max(p.grad.abs().max().item() for p in conv3d.parameters())
    for (name, a), b in zip(fast.named_parameters(), conv3d.parameters(), strict=True):
        assert (a.grad - b.grad).abs().max().item() < 1e-5 * scale, name


@pytest.mark.parametrize(("heads", "channels", "frames"), [(1, 32, 8), (2, 64, 3)])
def test_temporal_transformer_equals_diffusers(heads, channels, frames):
    kwargs = {
        "num_attention_heads": heads,
        "attention_head_dim": channels // heads,
        "in_channels": channels,
        "activation_fn": "geglu",
        "double_self_attention": True,
    }
    fast, base = pair(TemporalTransformer, TransformerTemporalModel, 2, **kwargs)
    features = torch.randn(2 * frames, channels, 4, 5)
    with torch.no_grad():
        expected = base(features, num_frames=frames).sample
        output = fast(features, num_frames=frames, return_dict=False)[0]
        other = fast(features, num_frames=1, return_dict=False)[0]
    assert output.shape == expected.shape and output.is_contiguous()
    assert (output - expected).abs().max().item() < TOLERANCE
    # The comparison can fail: clips of one frame attend to nothing else.
    assert (other - expected).abs().max().item() > 1e-2
