"""The node's parameters: names, defaults, descriptors and a typed snapshot.

``config/showme.yaml`` documents the same parameters; a test checks that both agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class Spec:
    """One parameter: default, description, and its constraints."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()


# Shared with the closed-loop nodes (showme_ros.loop_parameters).
DIAGNOSTICS_PERIOD = Spec(
    "diagnostics.period",
    1.0,
    "Seconds between /diagnostics messages.",
    read_only=True,
    bounds=(0.1, 60.0),
)

SPECS: tuple[Spec, ...] = (
    Spec(
        "model.path",
        "",
        "Model folder; empty = the shipped default model (a tiny random model if none is "
        "installed, with a warning).",
        read_only=True,
    ),
    Spec(
        "model.adapters",
        "",
        "Comma-separated adapter roles to enable (folders under <model>/adapters); empty = "
        "every adapter the model folder has. Which enabled roles act in each mode is the "
        "folder's choice (mode_adapters.json; the shipped model's video mode runs none).",
        read_only=True,
    ),
    Spec(
        "model.onnx_path",
        "",
        "Folder of the model's UNet exported by showme-export onnx; empty = the UNet runs in "
        "PyTorch. Set: the UNet runs those graphs in onnxruntime on the CPU (float32; device "
        "auto means cpu), rollouts of another length than the video graph's run on the PyTorch "
        "UNet; graphs with other adapters merged than the model folder runs fail activation.",
        read_only=True,
    ),
    Spec(
        "model.compile",
        False,
        "true: the UNet runs through torch.compile. Activation's warm-up compiles both modes "
        "(about 2 minutes for the shipped model on one CPU thread, seconds once torch's "
        "on-disk compile cache holds it); a request at a new batch size or rollout length "
        "compiles again. Not with model.onnx_path.",
        read_only=True,
    ),
    Spec(
        "device",
        "auto",
        "Torch device: auto (cuda when available), cpu, cuda or cuda:N.",
        read_only=True,
    ),
    Spec(
        "dtype",
        "auto",
        "Weight dtype: auto (float16 on cuda, float32 on cpu), float32, float16 or bfloat16.",
        read_only=True,
        choices=("auto", "float32", "float16", "bfloat16"),
    ),
    Spec(
        "wait_for_lifecycle_manager",
        False,
        "Stay unconfigured at start and wait for a lifecycle manager instead of activating.",
        read_only=True,
    ),
    Spec(
        "image_reliability",
        "best_effort",
        "QoS reliability of the camera subscriptions (depth 1): best_effort matches every "
        "camera; reliable matches only reliable publishers.",
        read_only=True,
        choices=("best_effort", "reliable"),
    ),
    Spec(
        "queue_size",
        1,
        "Requests (service calls and action goals) that may wait while one runs; more are "
        "answered at once with success=false and a 'busy' message.",
        read_only=True,
        bounds=(0, 16),
    ),
    Spec(
        "max_pending_requests",
        1000,
        "Service calls and action goals the transport holds while earlier ones are answered "
        "(the DDS queue depth of the predict service and the action's goal, cancel and result "
        "services). Every request within it gets an answer: a prediction, or 'busy' beyond "
        "queue_size.",
        read_only=True,
        bounds=(10, 100000),
    ),
    Spec(
        "action.result_timeout",
        900,
        "Seconds an action result stays retrievable after its goal ended.",
        read_only=True,
        bounds=(1, 86400),
    ),
    # Sampler defaults: 0 (-1 for eta, "" for the scheduler) = the model folder's stored setting
    # (sampler_config.json), so one model folder carries the settings it was validated with.
    Spec(
        "inference.num_steps",
        0,
        "Default denoising steps; 0 = the model's stored setting.",
        bounds=(0, 1000),
    ),
    Spec(
        "inference.num_frames",
        0,
        "Default frames of a rollout (video mode); 0 = the model's stored setting.",
        bounds=(0, 256),
    ),
    Spec(
        "inference.guidance_scale",
        0.0,
        "Default classifier-free guidance scale on the instruction (1 = no guidance); 0 = the "
        "model's stored setting. Requests may ask for 0..100 (0 = this default).",
        bounds=(0.0, 100.0),
    ),
    Spec(
        "inference.eta",
        -1.0,
        "DDIM eta (0 = deterministic sampler); -1 = the model's stored setting.",
        bounds=(-1.0, 1.0),
    ),
    Spec(
        "inference.scheduler",
        "",
        "Sampler (ddim, dpmsolver++, dpmsolver++-sde, unipc, euler, euler-ancestral); "
        "empty = the model's stored setting.",
        choices=("", "ddim", "dpmsolver++", "dpmsolver++-sde", "unipc", "euler", "euler-ancestral"),
    ),
    Spec(
        "inference.keep_scene",
        "",
        "Composite predictions over the input frame where they do not change it: on, off; "
        "empty = the model's stored setting.",
        choices=("", "on", "off"),
    ),
    Spec(
        "inference.frame_stride",
        0,
        "Frame stride the model is conditioned on; 0 = the model's default.",
        bounds=(0, 100),
    ),
    Spec(
        "inference.frame_period",
        0.1,
        "Seconds between predicted frames (sets frame_offsets); a goal image is stamped at "
        "the end of a default-length rollout.",
        bounds=(0.001, 10.0),
    ),
    Spec(
        "inference.seed",
        -1,
        "Seed of continuous-mode predictions; 0 or -1 = random.",
        bounds=(-1, 2**31 - 1),
    ),
    Spec(
        "limits.max_num_steps",
        200,
        "Largest num_steps a request may ask for (the sampler's own limit is 1000).",
        bounds=(1, 1000),
    ),
    Spec(
        "limits.max_frame_age",
        5.0,
        "Oldest camera frame (seconds since it arrived, node clock) a request without an image "
        "may use; older ones are refused with STALE_FRAME. 0 = any age.",
        bounds=(0.0, 3600.0),
    ),
    Spec(
        "limits.max_frame_id_length",
        256,
        "Longest accepted frame_id of an input image header, in characters.",
        bounds=(1, 4096),
    ),
    Spec(
        "limits.max_num_frames",
        16,
        "Largest num_frames a request may ask for (the frames the model was trained on).",
        bounds=(2, 256),
    ),
    Spec(
        "limits.max_candidates",
        8,
        "Largest number of candidate instructions in one request.",
        bounds=(0, 256),
    ),
    Spec(
        "limits.max_instruction_length",
        2000,
        "Longest accepted instruction, in characters.",
        bounds=(1, 100000),
    ),
    Spec(
        "limits.max_image_side",
        4096,
        "Largest accepted input image height or width, in pixels.",
        bounds=(16, 32768),
    ),
    Spec(
        "output.camera_resolution",
        True,
        "Return predictions at the camera image's resolution: the predicted region (reported "
        "as crop) resized back into place, the rest of the frame from the conditioning image. "
        "false: the model's resolution, the crop region only.",
    ),
    Spec(
        "output.publish_predictions",
        True,
        "Publish every prediction (service, action and continuous mode) on "
        "predictions/goal_image and predictions/rollout_frames (frames stamped at the times "
        "they predict), for RViz, Foxglove and bags.",
    ),
    Spec(
        "continuous.enabled",
        False,
        "Predict from the latest frame on every new instruction and publish goal_image and "
        "rollout.",
    ),
    Spec(
        "continuous.mode",
        "image",
        "Continuous-mode prediction: image (goal image) or video (rollout).",
        choices=("image", "video"),
    ),
    DIAGNOSTICS_PERIOD,
)


@dataclass(frozen=True)
class Settings:
    """A snapshot of the parameters, read when needed."""

    model_path: str
    adapters: tuple[str, ...]
    onnx_path: str
    compile_unet: bool
    device: str
    dtype: str
    wait_for_lifecycle_manager: bool
    image_reliability: str
    queue_size: int
    max_pending_requests: int
    result_timeout: int
    num_steps: int
    num_frames: int
    guidance_scale: float
    eta: float
    scheduler: str
    keep_scene: str
    frame_stride: int
    frame_period: float
    seed: int
    max_num_steps: int
    max_frame_age: float
    max_frame_id_length: int
    max_num_frames: int
    max_candidates: int
    max_instruction_length: int
    max_image_side: int
    camera_resolution: bool
    publish_predictions: bool
    continuous: bool
    continuous_mode: str
    diagnostics_period: float


def _descriptor(spec: Spec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.bounds is not None and isinstance(spec.default, float):
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(spec.bounds[0]), to_value=float(spec.bounds[1]))
        ]
    elif spec.bounds is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=int(spec.bounds[0]), to_value=int(spec.bounds[1]), step=1)
        ]
    return descriptor


def _choice_check(specs: tuple[Spec, ...]) -> Callable[[list[Parameter]], SetParametersResult]:
    choices = {spec.name: spec.choices for spec in specs if spec.choices}

    def check(parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            allowed = choices.get(parameter.name)
            if allowed and parameter.value not in allowed:
                return SetParametersResult(
                    successful=False,
                    reason=f"{parameter.name} must be one of {', '.join(allowed)}; "
                    f"got {parameter.value!r}",
                )
        return SetParametersResult(successful=True)

    return check


def declare(node: Node, specs: tuple[Spec, ...] = SPECS) -> None:
    """Declare ``specs`` on ``node`` with their descriptors; choices are checked on every set.

    Raises:
        ValueError: A parameter given at start is not one of its choices.

    """
    check = _choice_check(specs)
    node.add_on_set_parameters_callback(check)
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, _descriptor(spec))
    result = check([node.get_parameter(spec.name) for spec in specs if spec.choices])
    if not result.successful:
        raise ValueError(result.reason)


def read(node: Node) -> Settings:
    """Return the current parameter values of ``node``."""

    def value(name: str) -> Any:
        return node.get_parameter(name).value

    return Settings(
        model_path=value("model.path"),
        adapters=tuple(role.strip() for role in value("model.adapters").split(",") if role.strip()),
        onnx_path=value("model.onnx_path"),
        compile_unet=value("model.compile"),
        device=value("device"),
        dtype=value("dtype"),
        wait_for_lifecycle_manager=value("wait_for_lifecycle_manager"),
        image_reliability=value("image_reliability"),
        queue_size=value("queue_size"),
        max_pending_requests=value("max_pending_requests"),
        result_timeout=value("action.result_timeout"),
        num_steps=value("inference.num_steps"),
        num_frames=value("inference.num_frames"),
        guidance_scale=value("inference.guidance_scale"),
        eta=value("inference.eta"),
        scheduler=value("inference.scheduler"),
        keep_scene=value("inference.keep_scene"),
        frame_stride=value("inference.frame_stride"),
        frame_period=value("inference.frame_period"),
        seed=value("inference.seed"),
        max_num_steps=value("limits.max_num_steps"),
        max_frame_age=value("limits.max_frame_age"),
        max_frame_id_length=value("limits.max_frame_id_length"),
        max_num_frames=value("limits.max_num_frames"),
        max_candidates=value("limits.max_candidates"),
        max_instruction_length=value("limits.max_instruction_length"),
        max_image_side=value("limits.max_image_side"),
        camera_resolution=value("output.camera_resolution"),
        publish_predictions=value("output.publish_predictions"),
        continuous=value("continuous.enabled"),
        continuous_mode=value("continuous.mode"),
        diagnostics_period=value("diagnostics.period"),
    )
