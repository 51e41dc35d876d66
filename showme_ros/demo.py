"""``make demo``: the node end to end, on this machine, with files a person can open.

Starts ``showme_node`` as ``ros2 launch showme_ros showme.launch.py`` would (namespace
``/showme``, ``config/showme.yaml``, the launch file's remappings), publishes a camera frame and
an instruction on its real topics, calls the ``predict`` service (goal image) and the
``predict_rollout`` action (rollout, with progress), writes ``demo_out/goal.png``,
``rollout.gif``, ``rollout.mp4`` and ``strip.png``, prints the latencies and shuts the node down.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from std_msgs.msg import Header

from showme_model import writers
from showme_ros.client import ShowMeClient, make_request, succeeded, to_goal
from showme_ros.image_conversion import image_to_rgb
from showme_ros.launch_command import SOURCE_ROOT, node_command

SCENE_PATH = Path(__file__).parent / "examples" / "metaworld_drawer.png"
INSTRUCTION = "open the drawer"
START_TIMEOUT_S = 600.0


def scene() -> np.ndarray:
    """Load the demo camera frame: Meta-World, half-open drawer, a layout never trained on."""
    return cv2.cvtColor(cv2.imread(str(SCENE_PATH), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _wait_for_inputs(
    client: ShowMeClient, image: np.ndarray, header: Header, timeout: float
) -> tuple[float, object]:
    """Publish the inputs until the node serves a request that names neither.

    Returns:
        The seconds the successful call took, and its response.

    """
    deadline = time.monotonic() + timeout
    while True:
        client.publish_inputs(image, header, INSTRUCTION, "/showme/image", "/showme/instruction")
        started = time.monotonic()
        response = client.predict(make_request(), START_TIMEOUT_S)
        if response.success:
            return time.monotonic() - started, response
        waiting = response.message.startswith(("no image", "no instruction"))
        if not waiting or time.monotonic() > deadline:
            raise RuntimeError(f"the node refused the demo request: {response.message}")
        time.sleep(0.2)


def run(out: Path, launch_args: dict[str, str], overrides: list[str]) -> None:
    """Start the node, exercise the service and the action, write the outputs, stop the node."""
    out.mkdir(parents=True, exist_ok=True)
    command = node_command(launch_args)
    for item in overrides:
        command += ["-p", item]
    path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    print("starting:", " ".join(command[1:]), flush=True)
    node = subprocess.Popen(command, env=env)
    rclpy.init()
    client = ShowMeClient("showme_demo")
    try:
        started = time.monotonic()
        if not client.wait_until_active(START_TIMEOUT_S):
            raise RuntimeError("the node did not become active; see its log above")
        print(f"node active after {time.monotonic() - started:.1f} s", flush=True)
        image = scene()
        header = Header(frame_id="demo_camera")
        header.stamp.sec = 1
        service_s, response = _wait_for_inputs(client, image, header, 60.0)
        (goal,) = response.predictions
        goal_image = image_to_rgb(goal.frames[0])
        writers.write_png(out / "goal.png", goal_image)
        print(
            f"predict (goal image, latest frame + instruction from the topics): {service_s:.2f} s "
            f"round trip, {goal.inference_time:.2f} s inference, model {goal.model_id}",
            flush=True,
        )
        if "tiny-random" in goal.model_id:
            print("NOTE: no trained model is installed: these are a tiny RANDOM model's outputs")

        def on_feedback(feedback: object) -> bool:
            print(
                f"  rollout step {feedback.step}/{feedback.total_steps}, "
                f"{feedback.remaining_seconds:.1f} s left",
                flush=True,
            )
            return False

        goal_msg = to_goal(make_request(INSTRUCTION, image=image, header=header, video=True))
        started = time.monotonic()
        status, result = client.rollout(goal_msg, on_feedback, timeout=START_TIMEOUT_S)
        action_s = time.monotonic() - started
        if not succeeded(status) or not result.success:
            raise RuntimeError(f"the rollout failed: {result.message}")
        (rollout,) = result.predictions
        frames = np.stack([image_to_rgb(frame) for frame in rollout.frames])
        writers.write_gif(out / "rollout.gif", frames)
        writers.write_mp4(out / "rollout.mp4", frames)
        strip = writers.make_strip(image, goal_image, frames)
        writers.write_png(out / "strip.png", strip)
        print(
            f"predict_rollout ({len(frames)} frames): {action_s:.2f} s round trip, "
            f"{rollout.inference_time:.2f} s inference",
            flush=True,
        )
        print(f"wrote {', '.join(str(p) for p in sorted(out.iterdir()))}")
    finally:
        client.close()
        rclpy.shutdown()
        node.send_signal(signal.SIGINT)
        try:
            code = node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            code = node.wait()
    if code != 0:
        raise RuntimeError(f"the node exited with status {code}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (``make demo``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--model", default="", help="model folder (default: the shipped model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps (0: the config's)")
    parser.add_argument("--frames", type=int, default=8, help="rollout frames")
    args = parser.parse_args(argv)
    overrides = [f"inference.num_frames:={args.frames}"]
    if args.steps:
        overrides.append(f"inference.num_steps:={args.steps}")
    try:
        run(args.out, {"model_path": args.model, "device": args.device}, overrides)
    except (RuntimeError, TimeoutError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
