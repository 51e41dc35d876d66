"""How the node picks its model when `model.path` is empty or set."""

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import rclpy

from showme_model import pipeline
from showme_model.sampler_config import SamplerConfig
from showme_ros import engine, parameters
from showme_ros.client import make_request
from showme_ros.engine import Engine
from showme_ros.msg import ErrorCode
from showme_ros.node import PredictorNode
from showme_ros.srv import Predict


def test_empty_path_means_the_shipped_model():
    choice = engine.choose_model("")
    assert choice.path == pipeline.default_model_path()
    assert choice.warning == ""


def test_explicit_path_is_used_as_given(tmp_path):
    choice = engine.choose_model(str(tmp_path / "elsewhere"))
    assert choice.path == tmp_path / "elsewhere"
    assert choice.warning == ""


def test_without_a_shipped_model_a_tiny_random_one_is_written_and_announced(tmp_path, monkeypatch):
    def no_shipped_model() -> Path:
        raise FileNotFoundError("no shipped model")

    monkeypatch.setattr(pipeline, "default_model_path", no_shipped_model)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    choice = engine.choose_model("")
    assert choice.path == tmp_path / "showme" / "tiny-random-model"
    assert (choice.path / "model_index.json").is_file()
    assert "tiny RANDOM model" in choice.warning


@pytest.mark.parametrize("path", ["", "~/models/x"])
def test_choice_paths_are_expanded(path):
    assert "~" not in str(engine.choose_model(path).path)


class RecordingPipeline:
    """Stands in for ShowMePipeline: records predict calls, or raises ``error``."""

    resolution = (8, 8)
    max_frames = 16

    def __init__(self, error: Exception | None = None) -> None:
        self.sampler_config = SamplerConfig(
            num_inference_steps=10, guidance_scale=1.5, eta=0.5, num_frames=8, scheduler="unipc"
        )
        self.calls: list[dict] = []
        self.error = error

    def predict(self, image, instructions, **kwargs):
        if self.error is not None:
            raise self.error
        self.calls.append(kwargs)
        return SimpleNamespace(frames=np.zeros((len(instructions), 1, 8, 8, 3), np.uint8))


@pytest.fixture
def node():
    rclpy.init()
    predictor = PredictorNode()
    yield predictor
    predictor.destroy_node()
    rclpy.try_shutdown()


def test_model_defaults_fill_the_unset_parameters_and_warm_up_covers_both_modes(node):
    pipeline = RecordingPipeline()
    served = Engine(pipeline, "m", "cpu", "float32").resolve(parameters.read(node))
    assert (served.num_steps, served.guidance_scale, served.eta) == (10, 1.5, 0.5)
    assert (served.num_frames, served.scheduler, served.max_num_frames) == (8, "unipc", 16)
    Engine(pipeline, "m", "cpu", "float32").warm_up(served)
    assert [(c["mode"], c["num_frames"]) for c in pipeline.calls] == [("image", 1), ("video", 8)]
    for call in pipeline.calls:
        assert (call["guidance_scale"], call["eta"], call["scheduler"]) == (1.5, 0.5, "unipc")


def test_a_fault_in_the_model_is_answered_briefly_with_the_internal_code(node):
    long_text = "OpenCV(5.0.0) /io/opencv/modules/imgproc/src/resize.cpp:4052: error: " + "x" * 5000
    node._engine = Engine(RecordingPipeline(cv2.error(long_text)), "m", "cpu", "float32")
    request = make_request("push", image=np.zeros((8, 8, 3), np.uint8))
    response = node._on_predict(request, Predict.Response())
    assert not response.success and response.error_code.value == ErrorCode.INTERNAL
    assert len(response.message) < 300 and "node's log" in response.message
    assert node.stats.failures_by_code[ErrorCode.INTERNAL] == 1


@pytest.mark.parametrize(("value", "expected"), [("", None), ("on", True), ("off", False)])
def test_the_scene_keeping_parameter_reaches_the_pipeline(node, value, expected):
    """``inference.keep_scene``: empty leaves the model's stored setting, on/off override it."""
    node.set_parameters([rclpy.parameter.Parameter("inference.keep_scene", value=value)])
    pipeline = RecordingPipeline()
    node._engine = Engine(pipeline, "m", "cpu", "float32")
    request = make_request("push", image=np.zeros((8, 8, 3), np.uint8))
    response = node._on_predict(request, Predict.Response())
    assert response.success, response.message
    assert pipeline.calls[-1]["keep_scene"] is expected
