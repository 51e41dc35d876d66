"""The generated interfaces import beside the hand-written modules and cross processes intact."""

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import Image

import showme_ros.node  # noqa: F401  (a hand-written module of the same package)
from showme_ros.action import PredictRollout
from showme_ros.msg import PredictedRollout
from showme_ros.srv import Predict

from .ros_testing import DISCOVERY_TIMEOUT_S

SUBSCRIBER = textwrap.dedent(
    """
    import hashlib, json, sys
    import rclpy
    from showme_ros.msg import PredictedRollout

    rclpy.init()
    node = rclpy.create_node("rollout_listener")
    received = []
    node.create_subscription(PredictedRollout, "/showme_test/rollout", received.append, 10)
    print("ready", flush=True)
    while not received:
        rclpy.spin_once(node, timeout_sec=0.1)
    msg = received[0]
    print(json.dumps({
        "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
        "frame_id": msg.header.frame_id,
        "instruction": msg.instruction,
        "mode": msg.mode,
        "frames": [
            [f.height, f.width, f.encoding, f.step, f.is_bigendian,
             hashlib.sha256(bytes(f.data)).hexdigest()]
            for f in msg.frames
        ],
        "offsets": [[d.sec, d.nanosec] for d in msg.frame_offsets],
        "model_id": msg.model_id,
        "seed": msg.seed,
        "inference_time": msg.inference_time,
    }), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def make_frame(seed: int) -> Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame = Image(height=64, width=64, encoding="rgb8", is_bigendian=0, step=64 * 3)
    frame.data = pixels.tobytes()
    return frame


def test_interface_types_and_constants():
    assert PredictedRollout.MODE_GOAL_IMAGE != PredictedRollout.MODE_ROLLOUT
    assert Predict.Request().seed == 0
    assert hasattr(Predict.Request(), "candidates")
    assert {"step", "total_steps", "elapsed_seconds", "remaining_seconds"} <= set(
        PredictRollout.Feedback.get_fields_and_field_types()
    )


def test_predicted_rollout_crosses_processes_field_for_field():
    import hashlib

    msg = PredictedRollout()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1234, 5678
    msg.header.frame_id = "camera_color_optical_frame"
    msg.instruction = "open the drawer"
    msg.mode = PredictedRollout.MODE_ROLLOUT
    msg.frames = [make_frame(0), make_frame(1)]
    msg.frame_offsets = [Duration(sec=0, nanosec=250_000_000), Duration(sec=0, nanosec=500_000_000)]
    msg.model_id = "test-model"
    msg.seed = 42
    msg.inference_time = 1.5

    listener = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout.readline().strip() == "ready"
        rclpy.init()
        node = rclpy.create_node("rollout_talker")
        publisher = node.create_publisher(PredictedRollout, "/showme_test/rollout", 10)
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert publisher.get_subscription_count() == 1, "subscriber never discovered"
        publisher.publish(msg)
        out, _ = listener.communicate(timeout=DISCOVERY_TIMEOUT_S)
    finally:
        listener.kill()
        if rclpy.ok():
            node.destroy_node()
            rclpy.shutdown()

    got = json.loads(out.strip().splitlines()[-1])
    assert got == {
        "stamp": [1234, 5678],
        "frame_id": "camera_color_optical_frame",
        "instruction": "open the drawer",
        "mode": PredictedRollout.MODE_ROLLOUT,
        "frames": [
            [64, 64, "rgb8", 192, 0, hashlib.sha256(bytes(f.data)).hexdigest()] for f in msg.frames
        ],
        "offsets": [[0, 250_000_000], [0, 500_000_000]],
        "model_id": "test-model",
        "seed": 42,
        "inference_time": 1.5,
    }
