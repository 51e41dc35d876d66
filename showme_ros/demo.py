"""``make demo``: the closed loop end to end, on this machine, with a strip a person can open.

Starts the three nodes as ``ros2 launch showme_ros closed_loop.launch.py`` would (the simulated
robot in ``/robot``, the world model in ``/showme``, the planner in ``/planner``). The robot
starts in a scene at a held-out layout; the goal image is what the robot's camera would show
after a skill, rendered in a separate copy of the simulator. The planner takes a fresh frame from
the robot's camera, asks the world model for every skill of the scene plus "do nothing" (K
samples each, one call), picks the preview closest to the goal, runs that skill on the robot and
checks the outcome. The demo prints each step and Meta-World's success, and writes
``demo_out/closed_loop_strip.png``: input | goal | chosen preview | real outcome, and
``demo_out/recording/recording.mcap``, which Foxglove opens: the robot's camera and camera_info,
the goal image (``/demo/goal_image``), and every preview the world model made
(``/showme/predictions/goal_image``, ``/showme/predictions/rollout_frames``, stamped at the times
they predict). The instructions travel inside the planner's requests, not on a topic.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from showme_model import writers
from showme_ros.action import PlanAndExecute
from showme_ros.client import ShowMeClient, make_request, succeeded, to_goal
from showme_ros.image_conversion import image_to_rgb, rgb_to_image
from showme_ros.launch_command import SOURCE_ROOT, launch_commands
from showme_ros.loop_clients import PlannerClient, RobotClient
from showme_ros.middleware import free_transport_buffers
from showme_ros.planning import model_view
from showme_ros.recorder import McapRecorder
from showme_ros.sim_world import SimWorld

START_TIMEOUT_S = 600.0
PANEL = 256
# What the MCAP recording holds; the camera runs at RECORDED_CAMERA_RATE to keep the file small.
RECORDED_TOPICS = {
    "/robot/camera/image_raw": "sensor_msgs/msg/Image",
    "/robot/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/demo/goal_image": "sensor_msgs/msg/Image",
    "/showme/predictions/goal_image": "sensor_msgs/msg/Image",
    "/showme/predictions/rollout_frames": "sensor_msgs/msg/Image",
}
RECORDED_CAMERA_RATE = "5.0"


def goal_image(scene: str, layout: int, skill: str, width: int, height: int) -> np.ndarray:
    """Render what the robot's camera shows after ``skill``, in a copy of the simulator."""
    world = SimWorld(width, height)
    world.reset(scene, layout)
    world.execute(skill)
    return world.render()


def publish_for_recording(node: Node, topic: str, image: np.ndarray) -> None:
    """Publish ``image`` once on ``topic`` after the recorder's subscription has matched."""
    publisher = node.create_publisher(Image, topic, 1)
    deadline = time.monotonic() + 10.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    header = Header(frame_id="sim_camera_optical_frame")
    header.stamp = node.get_clock().now().to_msg()
    publisher.publish(rgb_to_image(image, header))


def strip(result: PlanAndExecute.Result, goal: np.ndarray) -> np.ndarray:
    """Input | goal | chosen preview | real outcome, each as the model sees it (centre crop)."""
    panels = [
        model_view(image_to_rgb(result.start_image), PANEL, PANEL),
        model_view(goal, PANEL, PANEL),
        cv2.resize(image_to_rgb(result.preview), (PANEL, PANEL), interpolation=cv2.INTER_CUBIC),
        model_view(image_to_rgb(result.outcome_image), PANEL, PANEL),
    ]
    return writers.make_strip(panels[0], panels[1], np.stack(panels[2:]))


def run(out: Path, args: argparse.Namespace) -> bool:
    """Start the loop, plan and execute one goal, write the strip; True when the goal was met."""
    out.mkdir(parents=True, exist_ok=True)
    overrides = {
        "model_path": args.model,
        "device": args.device,
        "scene": args.scene,
        "layout_seed": str(args.layout),
        "samples": str(args.samples),
        "num_steps": str(args.steps),
        "guidance_scale": str(args.guidance),
        "camera_rate": RECORDED_CAMERA_RATE,
    }
    path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    nodes = []
    for name, command in launch_commands("closed_loop.launch.py", overrides).items():
        print(f"starting {name}:", " ".join(command[1:]), flush=True)
        nodes.append(subprocess.Popen(command, env=env))
    free_transport_buffers()
    rclpy.init()
    world_model = ShowMeClient("showme_demo")
    robot, planner = RobotClient("demo_robot"), PlannerClient("demo_planner")
    recording_node = rclpy.create_node("demo_recorder")
    recording_executor = SingleThreadedExecutor()
    recording_executor.add_node(recording_node)
    threading.Thread(target=recording_executor.spin, daemon=True).start()
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    recorder = McapRecorder(
        recording_node,
        out / "recording",
        RECORDED_TOPICS,
        {topic: reliable for topic in RECORDED_TOPICS if not topic.startswith("/robot/")},
    )
    shutil.rmtree(recorder.path, ignore_errors=True)
    recorder.start()
    try:
        if not world_model.wait_until_active(START_TIMEOUT_S):
            raise RuntimeError("the world-model node did not become active; see its log above")
        if not robot.wait_until_ready(START_TIMEOUT_S) or not planner.wait_for_server(60):
            raise RuntimeError("the robot or the planner did not come up; see the logs above")
        scene = robot.scene()
        print(
            f"robot: scene {scene.scene}, layout {scene.layout_seed}, skills {list(scene.skills)}"
        )
        goal = goal_image(args.scene, args.layout, args.goal_skill, args.width, args.height)
        writers.write_png(out / "goal.png", goal)
        publish_for_recording(recording_node, "/demo/goal_image", goal)
        print(f"goal image: the outcome of {args.goal_skill!r}, rendered in a simulator copy")

        def on_feedback(feedback: PlanAndExecute.Feedback) -> None:
            if feedback.stage == "predicting":
                print(
                    f"  planner: predicted {feedback.predictions_done}/"
                    f"{feedback.predictions_total} batches",
                    flush=True,
                )
            elif feedback.skill_step % 40 == 0:
                print(f"  robot: {feedback.stage}, step {feedback.skill_step}", flush=True)

        request = PlanAndExecute.Goal(goal_image=rgb_to_image(goal), execute=True, seed=1)
        status, result = planner.plan(request, on_feedback, timeout=START_TIMEOUT_S)
        if not succeeded(status):
            raise RuntimeError(f"planning failed: {result.message}")
        print("candidates (PSNR dB / edge F1 against the goal, mean of K samples):")
        for name, psnr, edges in zip(result.candidates, result.psnr, result.edge_f1, strict=True):
            mark = "  <- chosen" if name == ",".join(result.plan) else ""
            print(f"  {name:24s} {psnr:6.2f} dB  {edges:.3f}{mark}")
        print(
            f"planning {result.planning_seconds:.2f} s, execution {result.execution_seconds:.2f} s"
        )
        reached = args.goal_skill in result.achieved
        print(
            f"executed {list(result.plan)}: skill success {list(result.step_success)}; "
            f"goal {args.goal_skill!r} reached (Meta-World): {reached}"
        )
        chosen = result.plan[0] if result.plan else args.goal_skill
        if chosen in scene.skills:  # a rollout of the chosen skill, for the recording
            request = make_request(
                dict(zip(scene.skills, scene.instructions, strict=True))[chosen], video=True
            )
            request.image = result.start_image
            _, rollout = world_model.rollout(to_goal(request), timeout=START_TIMEOUT_S)
            frames = len(rollout.predictions[0].frames) if rollout.success else 0
            print(f"rollout of {chosen!r}: {frames} frames {rollout.message}")
            deadline = time.monotonic() + 10.0  # the stream may trail the action's result
            topic = "/showme/predictions/rollout_frames"
            while recorder.counts[topic] < frames and time.monotonic() < deadline:
                time.sleep(0.1)
        writers.write_png(out / "closed_loop_strip.png", strip(result, goal))
        print(f"wrote {out / 'closed_loop_strip.png'} (input | goal | chosen preview | outcome)")
        return reached
    finally:
        counts = recorder.stop()
        print(
            f"wrote {recorder.mcap_file} (Foxglove): "
            + ", ".join(f"{topic} {count}" for topic, count in counts.items())
        )
        recording_executor.shutdown()
        recording_node.destroy_node()
        for client in (world_model, robot, planner):
            client.close()
        rclpy.shutdown()
        for node in nodes:
            node.send_signal(signal.SIGINT)
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (``make demo``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--model", default="", help="model folder (default: the shipped model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--scene", default="drawer", help="scene of the robot")
    parser.add_argument("--layout", type=int, default=2040, help="layout seed (held out)")
    parser.add_argument(
        "--goal-skill", default="drawer-open", help="skill whose outcome is the goal"
    )
    parser.add_argument("--samples", type=int, default=4, help="samples per candidate (K)")
    parser.add_argument("--steps", type=int, default=0, help="denoising steps (0: the model's)")
    parser.add_argument("--guidance", type=float, default=0.0, help="guidance (0: the model's)")
    parser.add_argument("--width", type=int, default=320, help="camera width (sim_robot.yaml)")
    parser.add_argument("--height", type=int, default=240, help="camera height (sim_robot.yaml)")
    args = parser.parse_args(argv)
    try:
        reached = run(args.out, args)
    except (RuntimeError, TimeoutError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    print("goal reached" if reached else "goal NOT reached: the planner chose a wrong skill")
    return 0


if __name__ == "__main__":
    sys.exit(main())
