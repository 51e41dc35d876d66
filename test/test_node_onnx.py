"""The node serves from exported ONNX graphs (model.onnx_path) and refuses graphs that do not fit.

One graph is exported (the tiny model's image graph, about 10 CPU seconds): goal images run it in
onnxruntime, and rollouts, which no graph takes here, run on the PyTorch UNet, as rollouts of
another length than a video graph's do.
"""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.onnx_export import export_model
from showme_model.onnx_unet import OnnxUNet
from showme_model.sampler_config import SamplerConfig
from showme_ros.client import make_request
from showme_ros.engine import Engine, ModelLoadError
from showme_ros.node import PredictorNode
from showme_ros.srv import Predict

TOLERANCE = 1e-4
STEPS = 2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny model folder with a manipulation adapter, and its image graph."""
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    adapters.add_adapter(model, "manipulation", rank=4)
    with torch.no_grad():  # give the adapter an effect (fresh LoRA B is zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    model.sampler_config = SamplerConfig(num_inference_steps=STEPS, num_frames=3)
    root = tmp_path_factory.mktemp("onnx-node")
    model.save_pretrained(root / "model")
    export_model(model.eval(), root / "onnx", modes=("image",))
    return root / "model", root / "onnx"


def counting_fallback(engine: Engine) -> list[int]:
    """Count the calls that reach the PyTorch UNet behind the graphs."""
    unet = engine.pipeline.model.unet
    assert isinstance(unet, OnnxUNet)
    calls, forward = [], unet.fallback.forward

    def counted(*args, **kwargs):
        calls.append(args[0].shape[2])
        return forward(*args, **kwargs)

    unet.fallback.forward = counted
    return calls


def frames(engine: Engine, mode: str, num_frames: int) -> np.ndarray:
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    return engine.pipeline(
        image, "open the drawer", mode, num_frames=num_frames, seed=3, output_type="float"
    ).frames


def test_goal_images_run_the_graph_and_other_calls_the_pytorch_unet(folders):
    model_folder, onnx_folder = folders
    onnx = Engine.load(model_folder, (), "auto", "auto", str(onnx_folder))
    eager = Engine.load(model_folder, (), "cpu", "float32")
    assert (onnx.device, onnx.dtype, onnx.graph_frames) == ("cpu", "float32", None)
    assert (
        "onnxruntime (image graph" in onnx.runtime and "other calls on the PyTorch" in onnx.runtime
    )
    fallback_calls = counting_fallback(onnx)
    image = frames(onnx, "image", 1)
    assert fallback_calls == []
    assert np.abs(image - frames(eager, "image", 1)).max() < TOLERANCE
    for num_frames in (2, 3):
        rollout = frames(onnx, "video", num_frames)
        assert rollout.shape[1] == num_frames
        assert np.abs(rollout - frames(eager, "video", num_frames)).max() < TOLERANCE
    assert fallback_calls == [2] * STEPS + [3] * STEPS
    # The comparison can fail: without the adapter the goal image differs.
    plain = Engine.load(model_folder, (), "cpu", "float32")
    adapters.set_mode_roles(plain.pipeline.model, "image", [])
    assert np.abs(image - frames(plain, "image", 1)).max() > 1e-3


def test_graphs_with_other_adapters_merged_refuse_to_load(folders, tmp_path):
    model_folder, onnx_folder = folders
    changed = tmp_path / "model"
    shutil.copytree(model_folder, changed)
    (changed / adapters.MODE_ROLES_NAME).write_text(json.dumps({"image": [], "video": []}))
    with pytest.raises(ModelLoadError, match=r"model\.onnx_path.*export the graphs again"):
        Engine.load(changed, (), "cpu", "float32", str(onnx_folder))


@pytest.mark.parametrize(
    ("device", "dtype", "words"),
    [("cuda", "auto", "set device to cpu"), ("cpu", "float16", "graphs .* are float32")],
)
def test_onnx_serving_needs_the_cpu_in_float32(folders, device, dtype, words):
    model_folder, onnx_folder = folders
    with pytest.raises(ModelLoadError, match=words):
        Engine.load(model_folder, (), device, dtype, str(onnx_folder))


def test_compiling_is_a_pytorch_option_refused_with_graphs(folders):
    model_folder, onnx_folder = folders
    with pytest.raises(ModelLoadError, match=r"model\.compile and model\.onnx_path"):
        Engine.load(model_folder, (), "cpu", "float32", str(onnx_folder), compile_unet=True)
    engine = Engine.load(model_folder, (), "cpu", "float32", compile_unet=True)
    assert engine.pipeline.compile_unet and engine.runtime == "PyTorch, torch.compile"
    assert not Engine.load(model_folder, (), "cpu", "float32").pipeline.compile_unet


def test_a_folder_without_graphs_is_named_in_the_error(folders, tmp_path):
    model_folder, _ = folders
    with pytest.raises(ModelLoadError, match="not an ONNX export folder"):
        Engine.load(model_folder, (), "cpu", "auto", str(tmp_path))


def test_a_default_rollout_length_the_video_graph_misses_is_warned_about():
    pipeline = SimpleNamespace(max_frames=16, sampler_config=None)
    engine = Engine(pipeline, "m", "cpu", "float32", "onnxruntime", graph_frames=8)
    assert engine.fallback_warning(SimpleNamespace(num_frames=8)) == ""
    warning = engine.fallback_warning(SimpleNamespace(num_frames=12))
    assert "run on the PyTorch UNet" in warning and "--num-frames 12" in warning
    assert (
        Engine(pipeline, "m", "cpu", "float32").fallback_warning(SimpleNamespace(num_frames=12))
        == ""
    )


@pytest.fixture
def node_with(folders):
    """Make in-process nodes with ``model.path`` set to the tiny model and given overrides."""
    rclpy.init()
    nodes = []

    def make(**overrides):
        values = {"model.path": str(folders[0]), "inference.num_steps": STEPS, **overrides}
        node = PredictorNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        nodes.append(node)
        node.trigger_configure()
        node.trigger_activate()
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()


def test_node_serves_every_rollout_length_from_onnx_graphs(folders, node_with):
    node = node_with(**{"model.onnx_path": str(folders[1])})
    assert node._engine is not None and "onnxruntime" in node._engine.runtime
    image = np.zeros((40, 48, 3), np.uint8)
    for request in (
        make_request("push", image=image),
        make_request("push", image=image, video=True, num_frames=2),
        make_request("push", image=image, video=True, num_frames=5),
    ):
        response = node._on_predict(request, Predict.Response())
        assert response.success, response.message


def test_node_with_stale_graphs_reports_why_it_is_not_active(folders, node_with, tmp_path):
    changed = tmp_path / "model"
    shutil.copytree(folders[0], changed)
    (changed / adapters.MODE_ROLES_NAME).write_text(json.dumps({"image": [], "video": []}))
    node = node_with(**{"model.path": str(changed), "model.onnx_path": str(folders[1])})
    assert node._engine is None
    response = node._on_predict(
        make_request("push", image=np.zeros((8, 8, 3), np.uint8)), Predict.Response()
    )
    assert not response.success and "not active" in response.message
    assert "export the graphs again" in response.message
