"""showme-export onnx: onnxruntime reproduces the PyTorch UNet of each mode, adapters merged."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.onnx_export import EXPORT_CONFIG, example_inputs, export_model, main
from showme_model.onnx_unet import OnnxUNet, onnx_pipeline
from showme_model.pipeline import SHIPPED_MODEL, ShowMePipeline
from showme_model.preprocessing import prepare_image

TOLERANCE = 1e-4
FIXTURE_IMAGE = (
    Path(__file__).parent / "fixtures" / "metaworld_heldout" / "coffee-002028_coffee-pull_first.png"
)


def eager(model, mode, inputs, roles=None):
    """The PyTorch UNet of ``mode`` with the model's adapters of that mode active (unmerged)."""
    stride = inputs[3] if mode == "video" else None
    roles = adapters.roles_for_mode(model, mode) if roles is None else roles
    with torch.no_grad(), adapters.active_adapters(model, roles):
        return model.unet(*inputs[:3], stride, temporal=mode == "video")


def run_onnx(unet, mode, inputs):
    stride = inputs[3] if mode == "video" else None
    return unet(*inputs[:3], stride, temporal=mode == "video")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = ShowMeModel.from_config_name("tiny")
    for role in ("manipulation", "prediction"):
        adapters.add_adapter(model, role, rank=4)
    with torch.no_grad():  # give the adapters an effect (fresh LoRA B is zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("tiny-onnx")
    export_model(model.eval(), folder, num_frames=3)
    return model, OnnxUNet(folder, threads=1), folder


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("shipped-onnx")
    assert main(["onnx", str(SHIPPED_MODEL), str(folder), "--num-frames", "8"]) == 0
    model = ShowMeModel.from_pretrained(SHIPPED_MODEL).eval()
    return model, OnnxUNet(folder, threads=1), folder


def fixture_image():
    return np.asarray(Image.open(FIXTURE_IMAGE).convert("RGB"))


def shipped_inputs(model, mode, frames):
    """Inputs as the pipeline makes them: a real image's latent and context tokens."""
    image = fixture_image()
    size = model.vae.config.sample_size
    pixels = prepare_image(image, (size, size))[0][None]
    with torch.no_grad(), adapters.active_adapters(model, adapters.roles_for_mode(model, mode)):
        context = torch.cat(
            [model.encode_text(["pull the coffee cup"]), model.encode_image_context(pixels)], 1
        )
        first = model.encode_latents(pixels)
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn((2, 4, frames, *first.shape[-2:]), generator=generator)
    concat = torch.zeros_like(latents)
    concat[:, :, 0] = first
    # Batch 2: the conditional and the unconditional branch of one step.
    context = torch.cat([context, torch.zeros_like(context)])
    return torch.cat([latents, concat], 1), torch.tensor([981.0, 981.0]), context, torch.ones(2)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["image", "video"])
@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_onnx_matches_pytorch_at_any_batch(tiny, mode, batch):
    model, unet, _ = tiny
    inputs = example_inputs(model, mode, 3, batch=batch)
    expected = eager(model, mode, inputs)
    assert (run_onnx(unet, mode, inputs) - expected).abs().max().item() < TOLERANCE
    # The comparison can fail: without the adapters the UNet computes something else.
    assert (eager(model, mode, inputs, roles=[]) - expected).abs().max().item() > 1e-2


@pytest.mark.slow
def test_a_unet_on_latent_patches_exports_and_matches_pytorch(tmp_path):
    """patch_size 2 (space to depth around the UNet) survives the export in both modes."""
    from showme_model.presets import unet_config
    from showme_model.unet import ShowMeUNet

    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    model.unet = ShowMeUNet(**{**unet_config("tiny"), "patch_size": 2})
    with torch.no_grad():  # every weight random: zero-initialised layers would hide paths
        for parameter in model.unet.parameters():
            parameter.normal_(0.0, 0.2)
    export_model(model.eval(), tmp_path, num_frames=3)
    unet = OnnxUNet(tmp_path, threads=1)
    for mode in ("image", "video"):
        inputs = example_inputs(model, mode, 3, batch=2)
        expected = eager(model, mode, inputs)
        assert (run_onnx(unet, mode, inputs) - expected).abs().max().item() < TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["image", "video"])
def test_shipped_model_onnx_matches_pytorch(shipped, mode):
    model, unet, _ = shipped
    inputs = shipped_inputs(model, mode, 8 if mode == "video" else 1)
    expected = eager(model, mode, inputs)
    output = run_onnx(unet, mode, inputs)
    assert output.shape == expected.shape
    assert (output - expected).abs().max().item() < TOLERANCE
    # The comparison can fail: with other adapters the UNet computes something else.
    other = [] if adapters.roles_for_mode(model, mode) else adapters.METHOD_MODE_ROLES[mode]
    assert (eager(model, mode, inputs, roles=other) - expected).abs().max().item() > 1e-2


def test_export_description_names_merged_adapters_and_shapes(shipped):
    _, unet, folder = shipped
    description = json.loads((folder / EXPORT_CONFIG).read_text())
    graphs = description["graphs"]
    assert graphs["image"]["adapters"] == ["manipulation"] and graphs["image"]["num_frames"] == 1
    assert graphs["video"]["adapters"] == []  # the folder's choice: the base model alone
    assert graphs["video"]["num_frames"] == 8
    assert graphs["video"]["inputs"][-1] == "frame_stride"
    assert description["latent_size"] == [16, 16] and description["context_length"] == 17 + 16
    assert unet.config["cross_attention_dim"] == 384


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["image", "video"])
def test_pipeline_through_onnxruntime_matches_eager_sampling(shipped, mode):
    _, _, folder = shipped
    onnx = onnx_pipeline(SHIPPED_MODEL, folder, threads=1)
    assert isinstance(onnx.model.unet, OnnxUNet) and not list(onnx.model.unet.parameters())
    eager = ShowMePipeline.from_pretrained(SHIPPED_MODEL)
    image, settings = fixture_image(), {"mode": mode, "num_frames": 8, "seed": 0}
    # The model's stored sampler: 10 DDIM steps with eta 1 (fresh noise each step).
    expected = eager(image, "pull the coffee cup", output_type="float", **settings).frames
    frames = onnx(image, "pull the coffee cup", output_type="float", **settings).frames
    assert frames.shape == expected.shape == (1, 8 if mode == "video" else 1, 64, 64, 3)
    assert np.abs(frames - expected).max() < TOLERANCE


def test_onnx_pipeline_refuses_graphs_of_another_unet(tiny):
    with pytest.raises(ValueError, match="graphs of another UNet"):
        onnx_pipeline(SHIPPED_MODEL, tiny[2])


def test_onnx_pipeline_refuses_graphs_with_other_adapters_merged(shipped, tmp_path):
    """Graphs exported before the folder chose other adapters for a mode are stale."""
    _, _, folder = shipped
    model_folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, model_folder)
    (model_folder / adapters.MODE_ROLES_NAME).unlink()  # video mode: the method's adapters
    with pytest.raises(ValueError, match="export the graphs again"):
        onnx_pipeline(model_folder, folder)


def test_onnx_unet_rejects_other_frame_counts(tiny):
    model, unet, _ = tiny
    inputs = example_inputs(model, "video", 4)
    with pytest.raises(ValueError, match="exported video graph"):
        run_onnx(unet, "video", inputs)


def test_onnx_unet_runs_other_frame_counts_on_its_fallback(tiny):
    model, _, folder = tiny
    unet = OnnxUNet(folder, threads=1, fallback=model.unet)
    roles = adapters.roles_for_mode(model, "video")
    for frames, graph in ((3, True), (4, False)):  # the video graph has 3 frames
        inputs = example_inputs(model, "video", frames)
        assert unet.takes(inputs[0], inputs[2], temporal=True) == graph
        with torch.no_grad(), adapters.active_adapters(model, roles):
            output = run_onnx(unet, "video", inputs)
        assert (output - eager(model, "video", inputs)).abs().max().item() < TOLERANCE


def test_cli_reports_a_missing_model_folder(tmp_path, capsys):
    assert main(["onnx", str(tmp_path / "absent"), str(tmp_path / "out")]) == 1
    assert "model folder not found" in capsys.readouterr().err
