"""Parameters of the closed-loop nodes (``sim_robot`` and ``planner``), declared with descriptors.

The specs use the world-model node's :class:`~showme_ros.parameters.Spec` and are declared with
its :func:`~showme_ros.parameters.declare`; ``config/sim_robot.yaml`` and ``config/planner.yaml``
document the same parameters (a test checks that they agree).
"""

from __future__ import annotations

from typing import Any

from rclpy.node import Node

from showme_ros.parameters import DIAGNOSTICS_PERIOD, Spec

COMMON: tuple[Spec, ...] = (
    Spec(
        "wait_for_lifecycle_manager",
        False,
        "Stay unconfigured at start and wait for a lifecycle manager instead of activating.",
        read_only=True,
    ),
    DIAGNOSTICS_PERIOD,
)

SIM_ROBOT: tuple[Spec, ...] = (
    *COMMON,
    Spec("camera.width", 320, "Camera image width in pixels.", read_only=True, bounds=(16, 1920)),
    Spec("camera.height", 240, "Camera image height in pixels.", read_only=True, bounds=(16, 1080)),
    Spec("camera.rate", 30.0, "Camera frames per second.", read_only=True, bounds=(0.5, 120.0)),
    Spec(
        "camera.frame_id",
        "sim_camera_optical_frame",
        "frame_id of the camera images and camera_info.",
        read_only=True,
    ),
    Spec(
        "camera.reliability",
        "reliable",
        "QoS reliability of the camera publishers (KEEP_LAST, depth 1): reliable matches both "
        "reliable and best-effort subscribers.",
        read_only=True,
        choices=("reliable", "best_effort"),
    ),
    Spec("scene.name", "drawer", "Scene the robot is reset to on activation.", read_only=True),
    Spec(
        "scene.layout_seed",
        2040,
        "Layout seed the robot is reset to on activation.",
        read_only=True,
        bounds=(0, 2**31 - 1),
    ),
    Spec(
        "robot.max_steps",
        400,
        "Simulator steps a skill may take at most (a goal's max_steps=0 uses it).",
        bounds=(1, 10000),
    ),
    Spec(
        "robot.realtime_factor",
        1.0,
        "Simulated seconds per wall-clock second while a skill runs; 0 = as fast as possible.",
        bounds=(0.0, 100.0),
    ),
    Spec(
        "robot.feedback_every",
        10,
        "Simulator steps between two feedback messages of execute_skill.",
        bounds=(1, 1000),
    ),
)

PLANNER: tuple[Spec, ...] = (
    *COMMON,
    Spec(
        "world_model.namespace",
        "/showme",
        "Namespace of the world-model node (its service is <namespace>/predict).",
        read_only=True,
    ),
    Spec(
        "robot.namespace",
        "/robot",
        "Namespace of the robot (execute_skill, get_scene and the camera topic).",
        read_only=True,
    ),
    Spec(
        "image_reliability",
        "best_effort",
        "QoS reliability of the camera subscription (KEEP_LAST, depth 1).",
        read_only=True,
        choices=("best_effort", "reliable"),
    ),
    Spec(
        "planning.samples",
        4,
        "Samples per candidate (K): the same instruction predicted with K seeds.",
        bounds=(1, 64),
    ),
    Spec(
        "planning.metric",
        "psnr",
        "Metric that decides: psnr (pixels) or edges (Canny edge-map F1).",
        choices=("psnr", "edges"),
    ),
    Spec(
        "planning.compare_size",
        64,
        "Side in pixels at which goal and previews are compared (centre square crop, resized); "
        "the world model's resolution.",
        bounds=(8, 1024),
    ),
    Spec(
        "planning.noop_instruction",
        "do nothing",
        "Instruction the world model gets for the candidate 'do-nothing'.",
    ),
    Spec(
        "planning.seed",
        1,
        "Sampler seed of a request's first prediction when the goal gives none (> 0).",
        bounds=(1, 2**31 - 1),
    ),
    Spec(
        "planning.rollout_frames",
        0,
        "Frames of a rollout when scoring rollouts; 0 = the world model's default.",
        bounds=(0, 256),
    ),
    Spec(
        "timeouts.predict",
        120.0,
        "Seconds to wait for one answer of the world model (a call without answer is sent "
        "once more).",
        bounds=(1.0, 3600.0),
    ),
    Spec(
        "timeouts.execute",
        120.0,
        "Seconds to wait for one skill to finish on the robot.",
        bounds=(1.0, 3600.0),
    ),
    Spec(
        "timeouts.camera",
        5.0,
        "Seconds to wait for a camera frame newer than the planning request.",
        bounds=(0.1, 600.0),
    ),
)


def values(node: Node, specs: tuple[Spec, ...]) -> dict[str, Any]:
    """Return the current values of ``specs`` on ``node``, by parameter name."""
    return {spec.name: node.get_parameter(spec.name).value for spec in specs}
