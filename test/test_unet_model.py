import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from showme_model.presets import PRESETS, scheduler_config, unet_config
from showme_model.unet import ShowMeUNet
from showme_model.unet_blocks import DualCrossAttention, set_attention_kernel

TEXT = 77
UPSTREAM_FLOPS = Path(__file__).parent / "fixtures" / "unet_flops" / "flops.json"


def _random_tiny(**overrides) -> ShowMeUNet:
    """Tiny UNet with every parameter random (zero-initialised layers would hide paths)."""
    torch.manual_seed(0)
    model = ShowMeUNet(**{**unet_config("tiny"), **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _inputs(frames: int, image_tokens: int = 16, batch: int = 1):
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, 8, frames, 8, 8, generator=g)
    context = torch.randn(batch, TEXT + image_tokens, 32, generator=g)
    return sample, context


def _meta_flops(model: ShowMeUNet, frames: int, temporal: bool) -> int:
    sample = torch.zeros(1, 8, frames, 32, 32, device="meta")
    context = torch.zeros(1, TEXT + 256, 1024, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(sample, torch.tensor([500], device="meta"), context, temporal=temporal)
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def meta_256() -> ShowMeUNet:
    with torch.device("meta"):
        return ShowMeUNet(**unet_config("dynamicrafter-256"))


def test_dynamicrafter_256_has_the_original_parameter_count(meta_256):
    assert sum(p.numel() for p in meta_256.parameters()) == 1_438_854_996


def test_512_and_1024_only_drop_the_learnable_image_weight(meta_256):
    n_256 = sum(p.numel() for p in meta_256.parameters())
    dual = [m for m in meta_256.modules() if isinstance(m, DualCrossAttention)]
    for name in ("dynamicrafter-512", "dynamicrafter-1024"):
        with torch.device("meta"):
            model = ShowMeUNet(**unet_config(name))
        assert sum(p.numel() for p in model.parameters()) == n_256 - len(dual)


def test_flop_counter_counts_two_flops_per_multiply_add():
    """The convention behind every FLOP figure, on layers counted by hand."""
    linear, conv = torch.nn.Linear(8, 16), torch.nn.Conv2d(4, 6, 3, padding=1)
    # batch 1, 2 heads, 5 tokens, head dim 8; on the meta device, as the UNet figures are counted
    q = k = v = torch.zeros(1, 2, 5, 8, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        linear(torch.zeros(3, 8))
    assert counter.get_total_flops() == 2 * 3 * 8 * 16  # 3 rows x 8 x 16 multiply-adds
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        conv(torch.zeros(1, 4, 10, 10))
    assert counter.get_total_flops() == 2 * (10 * 10) * 6 * (4 * 3 * 3)  # per output: 4x3x3 MACs
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 2 * (2 * 2 * 5 * 5 * 8)  # Q K^T and A V: h*s*s*d each


def test_dynamicrafter_256_flops_equal_the_original_unets(meta_256):
    """Counts of the original UNet (test/fixtures/unet_flops, made by scripts/fixtures)."""
    torch.set_num_threads(1)
    original = json.loads(UPSTREAM_FLOPS.read_text())["flops_per_forward_by_frames"]
    assert _meta_flops(meta_256, 16, temporal=True) == original["16"]  # 4.90 TFLOP
    assert _meta_flops(meta_256, 12, temporal=True) == original["12"]
    # One frame: the original's einsum lowers the 1-token A V product of temporal attention to
    # an elementwise multiply, which the counter skips (13.6 MFLOP of 321 GFLOP).
    assert _meta_flops(meta_256, 1, temporal=True) == pytest.approx(original["1"], rel=1e-4)
    assert _meta_flops(meta_256, 1, temporal=False) < original["1"]


def test_scheduler_presets():
    assert scheduler_config("dynamicrafter-256")["prediction_type"] == "epsilon"
    assert not scheduler_config("dynamicrafter-256")["rescale_betas_zero_snr"]
    for name in ("dynamicrafter-512", "dynamicrafter-1024"):
        cfg = scheduler_config(name)
        assert cfg["prediction_type"] == "v_prediction"
        assert cfg["rescale_betas_zero_snr"]
    with pytest.raises(KeyError, match="unknown preset"):
        unet_config("nope")
    assert set(PRESETS) >= {"dynamicrafter-256", "dynamicrafter-512", "dynamicrafter-1024", "tiny"}


@pytest.mark.parametrize("convs", [False, True])
def test_image_mode_frames_do_not_depend_on_other_frames(convs):
    model = _random_tiny(image_mode_temporal_convs=convs)
    sample, context = _inputs(frames=3)
    changed = sample.clone()
    changed[:, :, 2] = torch.randn_like(changed[:, :, 2])
    with torch.no_grad():
        out = model(sample, 10, context, temporal=False)
        out_changed = model(changed, 10, context, temporal=False)
        single = model(sample[:, :, :1], 10, context, temporal=False)
        video = model(sample, 10, context)
        video_changed = model(changed, 10, context)
    assert out.shape == (1, 4, 3, 8, 8)
    torch.testing.assert_close(out[:, :, :2], out_changed[:, :, :2], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, :, :1], single, rtol=0, atol=1e-5)
    assert not torch.allclose(out[:, :, 2], out_changed[:, :, 2])
    assert not torch.allclose(video[:, :, 0], video_changed[:, :, 0], atol=1e-3)


def test_temporal_flag_switches_behaviour():
    model = _random_tiny()
    sample, context = _inputs(frames=2)
    with torch.no_grad():
        video = model(sample, 10, context)
        video_fs = model(sample, 10, context, frame_stride=7)
        image = model(sample, 10, context, temporal=False)
        image_fs = model(sample, 10, context, frame_stride=7, temporal=False)
        with_convs = _random_tiny(image_mode_temporal_convs=True)(
            sample, 10, context, temporal=False
        )
    assert not torch.allclose(video, image, atol=1e-3)
    assert not torch.allclose(video, video_fs, atol=1e-3)
    torch.testing.assert_close(image, image_fs, rtol=0, atol=0)
    assert not torch.allclose(image, with_convs, atol=1e-3)


def test_per_frame_image_tokens_reach_only_their_frame():
    model = _random_tiny()
    sample, context = _inputs(frames=2, image_tokens=32)
    changed = context.clone()
    changed[:, TEXT + 16 :] += 1.0
    with torch.no_grad():
        out = model(sample, 10, context, temporal=False)
        out_changed = model(sample, 10, changed, temporal=False)
    torch.testing.assert_close(out[:, :, 0], out_changed[:, :, 0], rtol=0, atol=1e-5)
    assert not torch.allclose(out[:, :, 1], out_changed[:, :, 1], atol=1e-3)


def test_timestep_per_sample_matches_scalar():
    model = _random_tiny()
    sample, context = _inputs(frames=2, batch=2)
    with torch.no_grad():
        scalar = model(sample, 250, context)
        per_sample = model(sample, torch.tensor([250, 250]), context)
        other = model(sample, torch.tensor([250, 900]), context)
    torch.testing.assert_close(scalar, per_sample)
    torch.testing.assert_close(scalar[:1], other[:1])
    assert not torch.allclose(scalar[1], other[1], atol=1e-3)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _random_tiny()
    sample, context = _inputs(frames=2)

    def grads():
        model.zero_grad()
        model(sample, 10, context).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_inputs_raise_clear_errors():
    model = _random_tiny()
    sample, context = _inputs(frames=2)
    with pytest.raises(ValueError, match="sample must be"):
        model(sample[:, :4], 10, context)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(sample[..., :7], 10, context)
    with pytest.raises(ValueError, match="encoder_hidden_states must be"):
        model(sample, 10, context[:, :50])
    with pytest.raises(ValueError, match="scalar or a"):
        model(sample, torch.tensor([1, 2, 3]), context)


def test_save_and_load_round_trip(tmp_path):
    model = _random_tiny(image_mode_temporal_convs=True)
    model.save_pretrained(tmp_path)
    loaded = ShowMeUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.image_mode_temporal_convs
    sample, context = _inputs(frames=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, 10, context), model(sample, 10, context))


def test_dual_attention_refuses_a_plain_processor():
    from diffusers.models.attention_processor import AttnProcessor2_0

    attention = next(m for m in _random_tiny().modules() if isinstance(m, DualCrossAttention))
    with pytest.raises(TypeError, match="DualCrossAttnProcessor"):
        attention.set_processor(AttnProcessor2_0())


@pytest.mark.parametrize("temporal", [False, True])
def test_math_attention_kernel_gives_the_fused_kernels_output(temporal, monkeypatch):
    model = _random_tiny()
    sample, context = _inputs(frames=3, batch=2)
    with torch.no_grad():
        fused = model(sample, 500, context, temporal=temporal)
        set_attention_kernel(model, "math")

        def refuse(*args, **kwargs):
            raise AssertionError("the math kernel called scaled_dot_product_attention")

        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.functional, "scaled_dot_product_attention", refuse)
            math = model(sample, 500, context, temporal=temporal)
        set_attention_kernel(model, "sdpa")
        again = model(sample, 500, context, temporal=temporal)
    torch.testing.assert_close(math, fused, rtol=1e-4, atol=1e-5)
    assert torch.equal(again, fused)


def test_unknown_attention_kernel_is_refused():
    with pytest.raises(ValueError, match="attention kernel"):
        set_attention_kernel(_random_tiny(), "flash")


@pytest.mark.parametrize("temporal", [False, True])
def test_latent_patches_are_the_plain_unet_on_space_to_depth_cells(temporal):
    """patch_size 2: a finer latent grid at the cost of the coarse one."""
    patched = _random_tiny(patch_size=2)
    plain = ShowMeUNet(**{**unet_config("tiny"), "in_channels": 32, "out_channels": 16}).eval()
    plain.load_state_dict(patched.state_dict())
    sample, context = _inputs(frames=3)
    with torch.no_grad():
        out = patched(sample, 500, context, temporal=temporal)
        cells = torch.nn.functional.pixel_unshuffle(sample.transpose(1, 2).flatten(0, 1), 2)
        inner = plain(cells.unflatten(0, (1, 3)).transpose(1, 2), 500, context, temporal=temporal)
        expected = torch.nn.functional.pixel_shuffle(inner.transpose(1, 2).flatten(0, 1), 2)
        expected = expected.unflatten(0, (1, 3)).transpose(1, 2)
    assert out.shape == (1, 4, 3, 8, 8)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_latent_patches_need_a_grid_that_splits_into_them():
    model = _random_tiny(patch_size=2)
    _, context = _inputs(frames=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.zeros(1, 8, 1, 10, 10), 500, context, temporal=False)
    with pytest.raises(ValueError, match="patch_size"):
        ShowMeUNet(**{**unet_config("tiny"), "patch_size": 0})
