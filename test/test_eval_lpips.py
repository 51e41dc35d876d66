"""LPIPS from torchvision-layout VGG-16 weights and LPIPS heads (random stand-ins here)."""

import numpy as np
import pytest
import torch

from showme_model.checkpoint_io import CheckpointError
from training.metrics.lpips import LPIPS, vgg16_features

TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("lpips")
    trunk = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    trunk["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier too
    heads = {
        f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1)
        for i, w in enumerate((64, 128, 256, 512, 512))
    }
    torch.save(trunk, folder / "vgg16.pth")
    torch.save(heads, folder / "vgg.pth")
    return folder / "vgg16.pth", folder / "vgg.pth"


def test_trunk_has_torchvision_layer_indices():
    keys = {k.split(".")[0] for k in vgg16_features().state_dict()}
    assert sorted(int(k) for k in keys) == TORCHVISION_CONV_INDICES


def test_identical_is_zero_and_distance_grows_with_noise(weights):
    torch.set_num_threads(1)
    lpips = LPIPS.from_files(*weights)
    rng = np.random.default_rng(0)
    image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)

    def noisy(sigma):
        return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)

    scores = lpips.score([image, noisy(10), noisy(60)], [image, image, image])
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < scores[1] < scores[2]


def test_missing_heads_are_refused(weights, tmp_path):
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="LPIPS heads"):
        LPIPS.from_files(weights[0], tmp_path / "partial.pth")
