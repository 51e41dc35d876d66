"""LPIPS from torchvision-layout VGG-16 weights and LPIPS heads (random stand-ins here).

Expected distances come from the reference implementation (the ``lpips`` package, 0.1.4) run on
the same weights and images: test/fixtures/lpips_reference/, made by
scripts/fixtures/lpips_reference.py.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from showme_model.checkpoint_io import CheckpointError
from training.metrics.lpips import LPIPS, vgg16_features

TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
REFERENCE = Path(__file__).parent / "fixtures" / "lpips_reference"
HEAD_WIDTHS = (64, 128, 256, 512, 512)


def random_lpips_weights(seed: int = 0) -> tuple[dict, dict]:
    """Seeded stand-ins: a torchvision-layout VGG-16 trunk (He-scaled) and positive heads."""
    generator = torch.Generator().manual_seed(seed)
    trunk = {}
    for key, value in vgg16_features().state_dict().items():
        noise = torch.randn(value.shape, generator=generator)
        fan_in = value[0].numel() if value.dim() > 1 else 1
        scale = math.sqrt(2.0 / fan_in) if value.dim() > 1 else 0.01
        trunk[f"features.{key}"] = noise * scale
    heads = {
        f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1, generator=generator)
        for i, w in enumerate(HEAD_WIDTHS)
    }
    return trunk, heads


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    trunk, heads = random_lpips_weights(json.loads((REFERENCE / "lpips.json").read_text())["seed"])
    trunk["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier too
    torch.save(trunk, folder / "vgg16.pth")
    torch.save(heads, folder / "vgg.pth")
    return folder / "vgg16.pth", folder / "vgg.pth"


def test_trunk_has_torchvision_layer_indices():
    keys = {k.split(".")[0] for k in vgg16_features().state_dict()}
    assert sorted(int(k) for k in keys) == TORCHVISION_CONV_INDICES


def test_distances_equal_the_reference_implementation(weights):
    torch.set_num_threads(1)
    lpips = LPIPS.from_files(*weights)
    reference = json.loads((REFERENCE / "lpips.json").read_text())
    images = np.load(REFERENCE / "images.npz")
    predictions = [images[name] for name in reference["predictions"]]
    targets = [images[name] for name in reference["targets"]]
    scores = lpips.score(predictions, targets)
    assert scores == pytest.approx(reference["distances"], rel=1e-5, abs=1e-7)
    assert scores[0] == 0.0  # identical images


def test_missing_heads_are_refused(weights, tmp_path):
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="LPIPS heads"):
        LPIPS.from_files(weights[0], tmp_path / "partial.pth")
