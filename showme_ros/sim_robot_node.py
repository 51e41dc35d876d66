"""``sim_robot_node``: the lifecycle node ``sim_robot``, a simulated Meta-World robot with a camera.

Interfaces (relative names; the closed-loop launch file puts the node in namespace ``robot``):

- publishes ``camera/image_raw`` (sensor_msgs/Image, rgb8) and ``camera/camera_info`` at
  ``camera.rate``, stamped with the node clock and ``camera.frame_id``, KEEP_LAST 1;
- serves ``reset_scene`` (showme_ros/srv/ResetScene) and ``get_scene`` (showme_ros/srv/GetScene);
- offers ``execute_skill`` (showme_ros/action/ExecuteSkill): a scripted expert runs with feedback,
  its success taken from Meta-World's ``info["success"]``.

One simulator thread owns the simulator and its OpenGL context: it renders and publishes camera
frames, and runs resets and skills handed to it by the service and action callbacks. While a
skill runs, frames keep coming at the camera rate; other skill goals are aborted as busy. The
simulator is created on configure, reset to ``scene.name`` / ``scene.layout_seed`` on activate,
and freed on cleanup; an inactive node answers requests with the reason.

Every ``diagnostics.period`` seconds, in any lifecycle state, it reports on ``/diagnostics``: the
scene, skills executed and succeeded, and the camera's frames and the rate it achieves
(:func:`robot_status`).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from showme_ros import loop_parameters, parameters
from showme_ros.action import ExecuteSkill
from showme_ros.diagnostics import (
    OutcomeLog,
    Outcomes,
    RateMeter,
    lifecycle_state,
    process_memory_bytes,
    publish_periodically,
    status,
)
from showme_ros.executor import ResilientExecutor, log_contained_error
from showme_ros.image_conversion import rgb_to_image
from showme_ros.middleware import free_transport_buffers
from showme_ros.responses import deliver_patiently
from showme_ros.sim_world import NOOP_SKILL, SimWorld, SkillOutcome, scene_names
from showme_ros.srv import GetScene, ResetScene

NODE_NAME = "sim_robot"
# Meta-World's control period: 5 MuJoCo steps of 2.5 ms per env.step.
CONTROL_PERIOD_S = 0.0125
HARDWARE_ID = "metaworld_sim"
# The camera rate is measured over this window; below this share of camera.rate it is a WARN.
CAMERA_RATE_WINDOW_S = 5.0
CAMERA_RATE_WARN_SHARE = 0.5


@dataclass(frozen=True)
class CameraState:
    """Frames the camera published and the rate it achieved over the last measuring window."""

    frames: int
    rate_hz: float
    target_hz: float
    settled: bool  # a whole measuring window has passed since the camera started


@dataclass(frozen=True)
class RobotState:
    """What the robot knows about itself when the report is made."""

    lifecycle: str
    activation_error: str
    scene: str
    layout_seed: int | None
    skills: Outcomes
    skills_succeeded: int
    last_skill: str
    camera: CameraState
    memory_bytes: int


def robot_status(name: str, state: RobotState) -> DiagnosticStatus:
    """Build the simulated robot's diagnostic status.

    ERROR when the last activation failed; WARN when the node is not active, the camera runs
    below ``CAMERA_RATE_WARN_SHARE`` of its rate, or the last skill request failed; OK otherwise.
    """
    active = state.lifecycle == "active"
    camera = state.camera
    problems = []
    if state.activation_error and not active:
        problems.append((DiagnosticStatus.ERROR, f"activation failed: {state.activation_error}"))
    elif not active:
        problems.append((DiagnosticStatus.WARN, f"not serving (lifecycle {state.lifecycle})"))
    if active and camera.settled and camera.rate_hz < CAMERA_RATE_WARN_SHARE * camera.target_hz:
        problems.append(
            (DiagnosticStatus.WARN, f"camera at {camera.rate_hz:.1f} Hz of {camera.target_hz:g} Hz")
        )
    if state.skills.last_failure:
        problems.append(
            (DiagnosticStatus.WARN, f"last skill request failed: {state.skills.last_failure}")
        )
    seed = "" if state.layout_seed is None else str(state.layout_seed)
    ok = f"active: scene {state.scene} (layout seed {seed}), camera {camera.rate_hz:.1f} Hz"
    values = {
        "lifecycle_state": state.lifecycle,
        "scene": state.scene,
        "layout_seed": seed,
        "skills_received": str(state.skills.received),
        "skills_executed": str(state.skills.served),
        "skills_succeeded": str(state.skills_succeeded),
        "skill_requests_failed": str(state.skills.failed),
        "skills_running": str(state.skills.running),
        "last_skill": state.last_skill,
        "last_failure": state.skills.last_failure,
        "camera_frames_published": str(camera.frames),
        "camera_rate_hz": f"{camera.rate_hz:.2f}",
        "camera_rate_target_hz": f"{camera.target_hz:g}",
        "process_memory_bytes": str(state.memory_bytes),
    }
    return status(name, HARDWARE_ID, problems, ok, values)


class SimulatorThread:
    """The thread that owns a :class:`SimWorld`: camera frames, resets and skills, in order."""

    def __init__(
        self,
        world: SimWorld,
        rate: float,
        publish: Callable[[np.ndarray], None],
        log_error: Callable[[str], None],
    ) -> None:
        self.world = world
        self._log_error = log_error
        self._period = 1.0 / rate
        self._publish = publish
        self._commands: queue.Queue[tuple[Callable[[SimWorld], Any], Future] | None] = queue.Queue()
        self._next_frame = time.monotonic()
        self._frame: np.ndarray | None = None
        self._dirty = True
        self.streaming = False
        self._thread = threading.Thread(target=self._loop, name="simulator", daemon=True)
        self._thread.start()

    def submit(self, command: Callable[[SimWorld], Any]) -> Future:
        """Run ``command(world)`` on the simulator thread; its result or error lands in a future."""
        future: Future = Future()
        self._commands.put((command, future))
        return future

    def stop(self) -> None:
        """Finish the running command and end the thread."""
        self._commands.put(None)
        self._thread.join(timeout=30)

    def changed(self) -> None:
        """Mark the scene as moved: the next frame is rendered, not repeated."""
        self._dirty = True

    def frame_if_due(self) -> None:
        """Publish a camera frame when one is due (called between simulator steps too)."""
        now = time.monotonic()
        if not self.streaming or now < self._next_frame or self.world.scene is None:
            return
        self._next_frame = max(self._next_frame + self._period, now)
        self._publish(self.render())

    def render(self) -> np.ndarray:
        """Return the current view (rendered again only if the scene moved)."""
        if self._dirty or self._frame is None:
            self._frame, self._dirty = self.world.render(), False
        return self._frame

    def _loop(self) -> None:
        while True:
            timeout = max(0.0, self._next_frame - time.monotonic())
            try:
                item = self._commands.get(timeout=timeout)
            except queue.Empty:
                self._frame_or_log()
                continue
            if item is None:
                return
            command, future = item
            try:
                future.set_result(command(self.world))
            except Exception as error:  # reported to the caller, the thread keeps serving
                future.set_exception(error)
            finally:
                self._dirty = True
            self._frame_or_log()

    def _frame_or_log(self) -> None:
        """Publish a due frame; a failure is logged and the thread keeps serving."""
        try:
            self.frame_if_due()
        except Exception as error:  # a lost frame must not stop resets and skills
            self._log_error(f"camera frame failed: {error!r}")


class SimRobotNode(LifecycleNode):
    """Lifecycle node: a Meta-World scene with expert skills and a camera."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(NODE_NAME, **kwargs)
        parameters.declare(self, loop_parameters.SIM_ROBOT)
        self.settings = loop_parameters.values(self, loop_parameters.SIM_ROBOT)
        self._sim: SimulatorThread | None = None
        self._fovy = 45.0
        self._busy = threading.Lock()
        self._image_publisher = None
        self._info_publisher = None
        self._scene: tuple[str, int] | None = None
        self._activation_error = ""
        self._skills = OutcomeLog()
        self._skills_succeeded = 0
        self._last_skill = ""
        self._account_lock = threading.Lock()
        self._camera = RateMeter(CAMERA_RATE_WINDOW_S)
        group = ReentrantCallbackGroup()
        deliver_patiently(
            self.create_service(ResetScene, "reset_scene", self._on_reset, callback_group=group)
        )
        deliver_patiently(
            self.create_service(GetScene, "get_scene", self._on_get_scene, callback_group=group)
        )
        self._action_server = ActionServer(
            self,
            ExecuteSkill,
            "execute_skill",
            execute_callback=self._on_execute,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=group,
        )
        publish_periodically(self, self.settings["diagnostics.period"], self._report)

    # Lifecycle -------------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Create the camera publishers and the simulator thread."""
        settings = self.settings
        reliability = (
            ReliabilityPolicy.RELIABLE
            if settings["camera.reliability"] == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
        self._image_publisher = self.create_lifecycle_publisher(Image, "camera/image_raw", qos)
        self._info_publisher = self.create_lifecycle_publisher(
            CameraInfo, "camera/camera_info", qos
        )
        world = SimWorld(settings["camera.width"], settings["camera.height"])
        self._sim = SimulatorThread(
            world, settings["camera.rate"], self._publish_frame, self.get_logger().error
        )
        return super().on_configure(state)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Reset to the configured scene and start the camera."""
        scene, seed = self.settings["scene.name"], self.settings["scene.layout_seed"]
        try:
            self._sim.submit(lambda world: world.reset(scene, seed)).result(timeout=300)
        except Exception as error:  # any fault of the simulator: say why, stay inactive
            self._activation_error = f"cannot reset to {scene!r}: {error!r}"
            self.get_logger().error(f"activation failed: {self._activation_error}")
            return TransitionCallbackReturn.FAILURE
        self._activation_error = ""
        self._scene = (scene, seed)
        self._fovy = self._sim.submit(lambda world: world.vertical_fov()).result(timeout=60)
        self.get_logger().info(
            f"scene {scene} (layout seed {seed}); camera "
            f"{self.settings['camera.width']}x{self.settings['camera.height']} at "
            f"{self.settings['camera.rate']:g} Hz on {self.resolve_topic_name('camera/image_raw')}"
        )
        activated = super().on_activate(state)
        self._camera.restart()
        self._sim.streaming = True
        return activated

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop the camera; requests are refused until the next activation."""
        self._sim.streaming = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Free the simulator and the publishers."""
        self._free()
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Free the simulator."""
        self._free()
        return super().on_shutdown(state)

    def _free(self) -> None:
        if self._sim is not None:
            self._sim.streaming = False
            self._sim.stop()
            self._sim = None
        self._scene = None
        for publisher in (self._image_publisher, self._info_publisher):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._image_publisher = self._info_publisher = None

    # Camera ----------------------------------------------------------------------------------

    def _header(self) -> Header:
        header = Header(frame_id=self.settings["camera.frame_id"])
        header.stamp = self.get_clock().now().to_msg()
        return header

    def _publish_frame(self, rgb: np.ndarray) -> None:
        header = self._header()
        self._image_publisher.publish(rgb_to_image(rgb, header))
        self._info_publisher.publish(camera_info(header, rgb.shape[1], rgb.shape[0], self._fovy))
        self._camera.tick()

    # Requests --------------------------------------------------------------------------------

    def _active_simulator(self) -> SimulatorThread:
        if self._sim is None or not self._sim.streaming:
            raise ValueError("the robot is not active (lifecycle state); activate it first")
        return self._sim

    def _on_reset(self, request: ResetScene.Request, response: ResetScene.Response) -> object:
        try:
            sim = self._active_simulator()
            if not self._busy.acquire(blocking=False):
                raise ValueError("busy: a skill is running; reset after it ends")
            try:
                scene, seed = request.scene, request.layout_seed
                skills = sim.submit(lambda world: world.reset(scene, seed)).result(timeout=300)
            finally:
                self._busy.release()
        except Exception as error:  # bad request (ValueError) or a stuck or failing simulator
            response.success = False
            response.message = str(error) if isinstance(error, ValueError) else repr(error)
            return response
        self._scene = (request.scene, request.layout_seed)
        response.skills = [s.name for s in skills]
        response.instructions = [s.instruction for s in skills]
        response.success = True
        response.message = f"scene {request.scene}, layout seed {request.layout_seed}"
        return response

    def _on_get_scene(self, _request: GetScene.Request, response: GetScene.Response) -> object:
        response.scenes = scene_names()
        if self._sim is None:
            return response

        def describe(world: SimWorld) -> None:
            if world.scene is None:
                return
            response.scene, response.layout_seed = world.scene.name, world.layout_seed
            skills = world.skills()
            response.skills = [s.name for s in skills]
            response.instructions = [s.instruction for s in skills]
            response.achieved = list(world.achieved())
            response.unchanged = world.unchanged()

        try:
            self._sim.submit(describe).result(timeout=60)
        except TimeoutError:
            self.get_logger().error("get_scene: the simulator did not answer within 60 s")
        return response

    def _on_execute(self, goal_handle: ServerGoalHandle) -> ExecuteSkill.Result:
        result = ExecuteSkill.Result()
        request = goal_handle.request
        self._skills.received()
        try:
            sim = self._active_simulator()
        except ValueError as error:
            result.message = str(error)
            self._skills.failed(result.message)
            goal_handle.abort()
            return result
        if not self._busy.acquire(blocking=False):
            result.message = "busy: another skill is running"
            self._skills.failed(result.message)
            goal_handle.abort()
            return result
        try:
            outcome = sim.submit(self._skill_command(goal_handle, request)).result()
            result.final_image = rgb_to_image(
                sim.submit(lambda _world: sim.render()).result(timeout=60), self._header()
            )
        except Exception as error:  # a bad skill name, or a fault of the simulator: say which
            result.message = str(error) if isinstance(error, ValueError) else repr(error)
            self._skills.failed(result.message)
            goal_handle.abort()
            return result
        finally:
            self._busy.release()
        result.success, result.steps = outcome.success, outcome.steps
        result.achieved = list(outcome.achieved)
        verdict = "succeeded" if outcome.success else "did not succeed"
        result.message = f"{outcome.skill} {verdict} after {outcome.steps} steps"
        if outcome.cancelled:
            result.message += " (cancelled)"
            goal_handle.canceled()
        else:
            goal_handle.succeed()
        self._account(result)
        return result

    def _account(self, result: ExecuteSkill.Result) -> None:
        """Count a skill that ran to its end, for the diagnostics."""
        with self._account_lock:
            self._skills_succeeded += int(result.success)
            self._last_skill = result.message
        self._skills.served()

    def _skill_command(
        self, goal_handle: ServerGoalHandle, request: ExecuteSkill.Goal
    ) -> Callable[[SimWorld], SkillOutcome]:
        max_steps = request.max_steps or self.get_parameter("robot.max_steps").value
        realtime = self.get_parameter("robot.realtime_factor").value
        every = self.get_parameter("robot.feedback_every").value
        sim = self._sim

        def run(world: SimWorld) -> SkillOutcome:
            started = time.monotonic()

            def on_step(step: int, success: bool) -> bool:
                sim.changed()
                if realtime > 0:
                    delay = started + step * CONTROL_PERIOD_S / realtime - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sim.frame_if_due()
                if step % every == 0:
                    goal_handle.publish_feedback(
                        ExecuteSkill.Feedback(
                            step=step, max_steps=max_steps, success_so_far=success
                        )
                    )
                return not goal_handle.is_cancel_requested

            if request.skill != NOOP_SKILL:
                world.skill(request.skill)  # refuse an unknown skill before anything moves
            return world.execute(request.skill, max_steps, on_step)

        return run

    # Diagnostics -----------------------------------------------------------------------------

    def _report(self) -> DiagnosticStatus:
        scene, seed = self._scene or ("", None)
        camera = CameraState(
            frames=self._camera.total,
            rate_hz=self._camera.per_second(),
            target_hz=self.settings["camera.rate"],
            settled=self._camera.settled(),
        )
        state = RobotState(
            lifecycle=lifecycle_state(self),
            activation_error=self._activation_error,
            scene=scene,
            layout_seed=seed,
            skills=self._skills.snapshot(),
            skills_succeeded=self._skills_succeeded,
            last_skill=self._last_skill,
            camera=camera,
            memory_bytes=process_memory_bytes(),
        )
        return robot_status(f"{self.get_fully_qualified_name()}: simulated robot", state)


def camera_info(header: Header, width: int, height: int, fovy_deg: float) -> CameraInfo:
    """Pinhole intrinsics (no distortion) of a camera with vertical field of view ``fovy_deg``."""
    focal = (height / 2.0) / math.tan(math.radians(fovy_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; configures and activates it unless told to wait."""
    middleware_warning = free_transport_buffers()
    rclpy.init(args=args)
    node = SimRobotNode()
    if middleware_warning:
        node.get_logger().warning(middleware_warning)
    executor = ResilientExecutor(4, log_contained_error(node))
    executor.add_node(node)
    try:
        if not node.settings["wait_for_lifecycle_manager"]:
            node.trigger_configure()
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("the robot stays inactive; see the reason above")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._free()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
