"""ShowMeUNet with ``patch_size``: a finer latent grid at the cost of the coarse one."""

import pytest
import torch
import torch.nn.functional as F

from showme_model.presets import unet_config
from showme_model.unet import ShowMeUNet

TEXT = 77


def _random(**overrides) -> ShowMeUNet:
    torch.manual_seed(0)
    model = ShowMeUNet(**{**unet_config("tiny"), **overrides}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _inputs(frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 8, frames, size, size, generator=g), torch.randn(
        1, TEXT + 16, 32, generator=g
    )


@pytest.mark.parametrize("temporal", [False, True])
def test_patched_unet_is_the_plain_unet_on_space_to_depth_cells(temporal):
    patched = _random(patch_size=2)
    plain = ShowMeUNet(**{**unet_config("tiny"), "in_channels": 32, "out_channels": 16}).eval()
    plain.load_state_dict(patched.state_dict())
    sample, context = _inputs(frames=3, size=16)
    with torch.no_grad():
        out = patched(sample, 500, context, temporal=temporal)
        cells = F.pixel_unshuffle(sample.transpose(1, 2).flatten(0, 1), 2)
        cells = cells.unflatten(0, (1, 3)).transpose(1, 2)
        inner = plain(cells, 500, context, temporal=temporal)
        expected = F.pixel_shuffle(inner.transpose(1, 2).flatten(0, 1), 2)
        expected = expected.unflatten(0, (1, 3)).transpose(1, 2)
    assert out.shape == (1, 4, 3, 16, 16)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_patched_unet_rejects_grids_that_do_not_split_into_patches():
    model = _random(patch_size=2)
    sample, context = _inputs(frames=1, size=10)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(sample, 500, context, temporal=False)
    with pytest.raises(ValueError, match="patch_size"):
        ShowMeUNet(**{**unet_config("tiny"), "patch_size": 0})
