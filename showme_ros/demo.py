"""``make demo``: the closed loop end to end, on this machine, with a strip a person can open.

Starts the three nodes as ``ros2 launch showme_ros closed_loop.launch.py`` would (the simulated
robot in ``/robot``, the world model in ``/showme``, the planner in ``/planner``). The robot
starts in a scene at a held-out layout; the goal image is what the robot's camera would show
after a skill, rendered in a separate copy of the simulator. The planner takes a fresh frame from
the robot's camera, asks the world model for every skill of the scene plus "do nothing" (K
samples each, one call), picks the preview closest to the goal, runs that skill on the robot and
checks the outcome. The demo prints each step and Meta-World's success, and writes
``demo_out/closed_loop_strip.png``: input | goal | chosen preview | real outcome.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import rclpy

from showme_model import writers
from showme_ros.action import PlanAndExecute
from showme_ros.client import ShowMeClient, succeeded
from showme_ros.image_conversion import image_to_rgb, rgb_to_image
from showme_ros.launch_command import SOURCE_ROOT, launch_commands
from showme_ros.loop_clients import PlannerClient, RobotClient
from showme_ros.planning import model_view
from showme_ros.sim_world import SimWorld

START_TIMEOUT_S = 600.0
PANEL = 256


def goal_image(scene: str, layout: int, skill: str, width: int, height: int) -> np.ndarray:
    """Render what the robot's camera shows after ``skill``, in a copy of the simulator."""
    world = SimWorld(width, height)
    world.reset(scene, layout)
    world.execute(skill)
    return world.render()


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
    }
    path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    nodes = []
    for name, command in launch_commands("closed_loop.launch.py", overrides).items():
        print(f"starting {name}:", " ".join(command[1:]), flush=True)
        nodes.append(subprocess.Popen(command, env=env))
    rclpy.init()
    world_model = ShowMeClient("showme_demo")
    robot, planner = RobotClient("demo_robot"), PlannerClient("demo_planner")
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
        writers.write_png(out / "closed_loop_strip.png", strip(result, goal))
        print(f"wrote {out / 'closed_loop_strip.png'} (input | goal | chosen preview | outcome)")
        return reached
    finally:
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
