"""SmallDepthNet: shapes, gradients to its input, file round trip, and bad files."""

import pytest
import torch

from showme_model.checkpoint_io import CheckpointError
from training.rewards.small_depth import SmallDepthNet


def test_forward_shape_positive_and_size_agnostic():
    torch.manual_seed(0)
    net = SmallDepthNet()
    assert 100_000 < sum(p.numel() for p in net.parameters()) < 1_000_000
    for shape in [(2, 3, 64, 64), (1, 3, 50, 70)]:
        depth = net(torch.rand(shape) * 2 - 1)
        assert depth.shape == (shape[0], 1, *shape[2:])
        assert (depth > 0).all()


def test_frozen_net_passes_gradient_to_the_image():
    torch.manual_seed(0)
    net = SmallDepthNet(channels=(8, 16, 24)).requires_grad_(False).eval()
    image = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    target = torch.rand(1, 1, 32, 32)
    torch.nn.functional.mse_loss(net(image), target).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = SmallDepthNet(channels=(8, 16, 24)).eval()
    path = tmp_path / "depth.safetensors"
    net.save(path)
    loaded = SmallDepthNet.from_file(path)
    assert loaded.channels == (8, 16, 24) and not loaded.training
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(net(image), loaded(image))


def test_bad_input_and_foreign_files_are_refused(tmp_path):
    net = SmallDepthNet(channels=(8, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(1, 1, 16, 16))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a SmallDepthNet"):
        SmallDepthNet.from_file(tmp_path / "other.safetensors")
