"""``planner_node``: the lifecycle node ``planner``, which picks skills with the world model.

Interfaces (relative names; the closed-loop launch file puts the node in namespace ``planner``):

- subscribes the robot's camera ``<robot.namespace>/camera/image_raw`` (KEEP_LAST 1, reliability
  from ``image_reliability``), keeping only the newest frame;
- offers ``plan_and_execute`` (showme_ros/action/PlanAndExecute).

For a goal image it takes a camera frame newer than the request, asks the world model
(``<world_model.namespace>/predict``) for every candidate skill plus "do nothing" in one batched
call, K samples each (the same instruction repeated; item i of a batch has seed + i), and scores
the previews against the goal (:mod:`showme_ros.planning`). With depth 2 it predicts again from
every predicted state (imagined chaining), one call per first-step preview. It then runs the
chosen sequence through the robot's ``execute_skill`` and reports the real outcome beside the
preview. One goal runs at a time; goals that cannot run are aborted at once with the reason.
Goals are served only while the node is active.

Every ``diagnostics.period`` seconds, in any lifecycle state, it reports on ``/diagnostics``:
goals received, succeeded and failed, the last decision and whether the world model and the
robot are reachable (:func:`planner_status`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import Image

from showme_ros import loop_parameters, parameters, planning
from showme_ros.action import PlanAndExecute
from showme_ros.client import make_request, succeeded
from showme_ros.diagnostics import (
    OutcomeLog,
    Outcomes,
    lifecycle_state,
    process_memory_bytes,
    publish_periodically,
    status,
)
from showme_ros.executor import ResilientExecutor, log_contained_error
from showme_ros.image_conversion import image_to_rgb, is_empty, rgb_to_image
from showme_ros.loop_clients import RobotClient, WorldModelClient
from showme_ros.middleware import free_transport_buffers
from showme_ros.sim_world import NOOP_SKILL

NODE_NAME = "planner"
HARDWARE_ID = "showme_planner"


class PlanningError(ValueError):
    """A goal that cannot be planned; its message goes back in the result."""


@dataclass(frozen=True)
class Peer:
    """An interface the planner needs from another node, and whether the ROS graph offers it."""

    key: str
    name: str
    available: bool


@dataclass(frozen=True)
class Decision:
    """The planner's last choice: the plan and the seconds it took to predict and score."""

    plan: str
    latency_s: float


@dataclass(frozen=True)
class PlannerState:
    """What the planner knows about itself when the report is made."""

    lifecycle: str
    goals: Outcomes
    last_decision: Decision | None
    peers: tuple[Peer, ...]
    memory_bytes: int


def planner_status(name: str, state: PlannerState) -> DiagnosticStatus:
    """Build the planner's diagnostic status.

    WARN when the node is not active or the last goal failed; ERROR when it is active but
    misses a world-model or robot interface it needs to serve a goal; OK otherwise.
    """
    problems = []
    if state.lifecycle != "active":
        problems.append((DiagnosticStatus.WARN, f"not serving goals (lifecycle {state.lifecycle})"))
    missing = [peer.name for peer in state.peers if not peer.available]
    if missing and state.lifecycle == "active":
        problems.append((DiagnosticStatus.ERROR, f"unreachable: {', '.join(missing)}"))
    if state.goals.last_failure:
        problems.append((DiagnosticStatus.WARN, f"last goal failed: {state.goals.last_failure}"))
    decision = state.last_decision
    ok = "active" + (f"; last plan {decision.plan}" if decision else "")
    values = {
        "lifecycle_state": state.lifecycle,
        "goals_received": str(state.goals.received),
        "goals_succeeded": str(state.goals.served),
        "goals_failed": str(state.goals.failed),
        "goals_running": str(state.goals.running),
        "last_failure": state.goals.last_failure,
        "last_plan": decision.plan if decision else "",
        "last_decision_latency_s": f"{decision.latency_s:.3f}" if decision else "",
    }
    for peer in state.peers:
        values[peer.key] = peer.name
        values[f"{peer.key}_available"] = str(peer.available).lower()
    values["process_memory_bytes"] = str(state.memory_bytes)
    return status(name, HARDWARE_ID, problems, ok, values)


class PlannerNode(LifecycleNode):
    """Lifecycle node: plans skills against a goal image with the world model and runs them."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(NODE_NAME, **kwargs)
        parameters.declare(self, loop_parameters.PLANNER)
        self.settings = loop_parameters.values(self, loop_parameters.PLANNER)
        self._frame: Image | None = None
        self._frame_lock = threading.Lock()
        self._busy = threading.Lock()
        self._active = False
        self._goals = OutcomeLog()
        self._last_decision: Decision | None = None
        self._world_model = WorldModelClient(
            namespace=self.settings["world_model.namespace"], node=self
        )
        self._robot = RobotClient(namespace=self.settings["robot.namespace"], node=self)
        reliability = (
            ReliabilityPolicy.RELIABLE
            if self.settings["image_reliability"] == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        camera = self.settings["robot.namespace"].rstrip("/") + "/camera/image_raw"
        self.create_subscription(
            Image,
            camera,
            self._on_frame,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self._camera_topic = self.resolve_topic_name(camera)
        self._action_server = ActionServer(
            self,
            PlanAndExecute,
            "plan_and_execute",
            execute_callback=self._on_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        publish_periodically(self, self.settings["diagnostics.period"], self._report)

    # Lifecycle -------------------------------------------------------------------------------

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start accepting goals."""
        self._active = True
        self.get_logger().info(
            f"planning with {self.settings['world_model.namespace']}/predict for the robot "
            f"{self.settings['robot.namespace']} (camera {self._camera_topic})"
        )
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop accepting goals (after the running one, if any)."""
        with self._busy:
            self._active = False
        return super().on_deactivate(state)

    # Camera ----------------------------------------------------------------------------------

    def _on_frame(self, msg: Image) -> None:
        with self._frame_lock:
            self._frame = msg

    def _fresh_frame(self, after: Time, timeout: float) -> Image:
        """Return the first camera frame stamped at or after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._frame_lock:
                frame = self._frame
            if frame is not None and Time.from_msg(frame.header.stamp) >= after:
                return frame
            time.sleep(0.01)
        raise PlanningError(f"no camera frame newer than the request on {self._camera_topic}")

    # Goals -----------------------------------------------------------------------------------

    def _on_goal(self, goal_handle: ServerGoalHandle) -> PlanAndExecute.Result:
        result = PlanAndExecute.Result()
        received = self.get_clock().now()
        self._goals.received()
        if not self._busy.acquire(blocking=False):
            result.message = "busy: another goal is being planned or executed"
            self._goals.failed(result.message)
            goal_handle.abort()
            return result
        failure = "an unexpected error (see the log)"
        try:
            if not self._active:
                raise PlanningError("the planner is not active (lifecycle state); activate it")
            self._plan(goal_handle, received, result)
            result.success = True
            goal_handle.succeed()
            failure = ""
        except (ValueError, TimeoutError, RuntimeError) as error:  # bad goal or a peer's failure
            result.success, result.message = False, str(error)
            failure = str(error) or repr(error)
            self.get_logger().warning(f"goal failed: {error}")
            goal_handle.abort()
        finally:
            self._busy.release()
            self._account(result, failure)
        return result

    def _account(self, result: PlanAndExecute.Result, failure: str) -> None:
        """Count a finished goal, and its decision if it got that far, for the diagnostics."""
        if result.plan:
            self._last_decision = Decision(planning.join(result.plan), result.planning_seconds)
        if failure:
            self._goals.failed(failure)
        else:
            self._goals.served()

    def _plan(
        self, goal_handle: ServerGoalHandle, received: Time, result: PlanAndExecute.Result
    ) -> None:
        request: PlanAndExecute.Goal = goal_handle.request
        settings = loop_parameters.values(self, loop_parameters.PLANNER)
        if is_empty(request.goal_image):
            raise PlanningError("no goal image")
        goal = image_to_rgb(request.goal_image)
        if request.prediction not in (request.PREDICT_GOAL_IMAGE, request.PREDICT_ROLLOUT):
            raise PlanningError(
                f"unknown prediction {request.prediction}; use PREDICT_GOAL_IMAGE (0) or "
                "PREDICT_ROLLOUT (1)"
            )
        depth = request.depth or 1
        samples = request.samples or settings["planning.samples"]
        seed = request.seed or settings["planning.seed"]
        if seed < 0:
            raise PlanningError(f"seed must be > 0 (0 = planning.seed), got {seed}")
        instructions = self._instructions(request.skills, settings["planning.noop_instruction"])
        candidates = planning.sequences(list(instructions), depth)
        started = time.monotonic()
        frame = self._fresh_frame(received, settings["timeouts.camera"])
        start = image_to_rgb(frame)
        predictor = Predictor(
            self._world_model,
            instructions,
            video=request.prediction == request.PREDICT_ROLLOUT,
            num_frames=settings["planning.rollout_frames"],
            timeout=settings["timeouts.predict"],
            on_progress=lambda done, total: goal_handle.publish_feedback(
                PlanAndExecute.Feedback(
                    stage="predicting", predictions_done=done, predictions_total=total
                )
            ),
        )
        previews = predictor.previews(start, frame.header, candidates, samples, seed)
        size = settings["planning.compare_size"]
        scores = planning.score_candidates(previews, goal, size)
        metric = settings["planning.metric"]
        chosen = planning.choose(scores, metric)
        result.candidates = [planning.join(s.candidate) for s in scores]
        result.psnr = [s.psnr for s in scores]
        result.edge_f1 = [s.edge_f1 for s in scores]
        result.choice_by_psnr = planning.join(planning.choose(scores, "psnr"))
        result.choice_by_edges = planning.join(planning.choose(scores, "edges"))
        result.metric, result.plan = metric, list(chosen)
        result.start_image = frame
        result.preview = rgb_to_image(previews[chosen][0], frame.header)
        result.planning_seconds = time.monotonic() - started
        summary = f"chose {planning.join(chosen)} by {metric} among {len(candidates)} candidates"
        result.message = summary
        if not request.execute:
            return
        started = time.monotonic()
        outcome = None
        for skill in chosen:
            status, step = self._robot.execute(
                skill,
                lambda feedback, name=skill: goal_handle.publish_feedback(
                    PlanAndExecute.Feedback(stage=f"executing {name}", skill_step=feedback.step)
                ),
                timeout=settings["timeouts.execute"],
            )
            if not succeeded(status):
                raise PlanningError(f"the robot could not run {skill}: {step.message}")
            result.step_success.append(step.success)
            outcome = step
        result.executed = True
        result.achieved = list(outcome.achieved)
        result.outcome_image = outcome.final_image
        result.execution_seconds = time.monotonic() - started
        real = image_to_rgb(outcome.final_image)
        result.outcome_psnr, result.outcome_edge_f1 = planning.score([real], goal, size)
        result.message = f"{summary}; executed, skill success {list(result.step_success)}"

    def _instructions(self, requested: list[str], noop: str) -> dict[str, str]:
        """Candidate skills -> instruction text: the robot's skills (or those asked for) + noop."""
        scene = self._robot.scene()
        offered = dict(zip(scene.skills, scene.instructions, strict=True))
        if not offered:
            raise PlanningError("the robot has no scene yet; reset it to a scene first")
        unknown = [s for s in requested if s not in offered and s != NOOP_SKILL]
        if unknown:
            raise PlanningError(
                f"skills {unknown} are not offered in scene {scene.scene!r}; offered: "
                f"{', '.join(offered)}"
            )
        names = [s for s in requested if s != NOOP_SKILL] or list(offered)
        return {**{name: offered[name] for name in names}, NOOP_SKILL: noop}

    # Diagnostics -----------------------------------------------------------------------------

    def _report(self) -> DiagnosticStatus:
        state = PlannerState(
            lifecycle=lifecycle_state(self),
            goals=self._goals.snapshot(),
            last_decision=self._last_decision,
            peers=self._peers(),
            memory_bytes=process_memory_bytes(),
        )
        return planner_status(f"{self.get_fully_qualified_name()}: planner", state)

    def _peers(self) -> tuple[Peer, ...]:
        """Return the world model's and the robot's interfaces a goal needs, and if they exist."""
        predict = self.settings["world_model.namespace"].rstrip("/") + "/predict"
        robot = self.settings["robot.namespace"].rstrip("/")
        get_scene, execute = f"{robot}/get_scene", f"{robot}/execute_skill"
        return (
            Peer("world_model_predict", predict, self.count_services(predict) > 0),
            Peer("robot_get_scene", get_scene, self.count_services(get_scene) > 0),
            Peer(
                "robot_execute_skill",
                execute,
                self.count_services(f"{execute}/_action/send_goal") > 0,
            ),
            Peer("robot_camera", self._camera_topic, self.count_publishers(self._camera_topic) > 0),
        )


class Predictor:
    """Asks the world model for previews of candidate sequences, K samples each."""

    def __init__(
        self,
        client: WorldModelClient,
        instructions: dict[str, str],
        video: bool,
        num_frames: int,
        timeout: float,
        on_progress: Callable[[int, int], None],
    ) -> None:
        self.client, self.instructions = client, instructions
        self.video, self.num_frames, self.timeout = video, num_frames, timeout
        self.on_progress = on_progress

    def _predict(
        self, image: np.ndarray, header: object, skills: list[str], seed: int
    ) -> list[np.ndarray]:
        """One batched call; the last frame of each skill's prediction, in order."""
        texts = [self.instructions[s] for s in skills]
        request = make_request(
            texts[0],
            image=image,
            header=header,
            video=self.video,
            candidates=texts[1:],
            seed=seed,
            num_frames=self.num_frames if self.video else 0,
        )
        try:
            response = self.client.predict(request, self.timeout)
        except TimeoutError:
            # A lost answer (seen on a loaded machine) is asked for once more.
            response = self.client.predict(request, self.timeout)
        if not response.success:
            raise PlanningError(f"the world model refused the request: {response.message}")
        return [image_to_rgb(p.frames[-1]) for p in response.predictions]

    def previews(
        self,
        image: np.ndarray,
        header: object,
        candidates: list[planning.Candidate],
        samples: int,
        seed: int,
    ) -> dict[planning.Candidate, list[np.ndarray]]:
        """K previews per candidate: first steps in one call, second steps one call per preview."""
        firsts = list(dict.fromkeys(c[0] for c in candidates))
        depth = len(candidates[0])
        total = 1 + (len(firsts) * samples if depth == 2 else 0)
        batch = self._predict(image, header, [s for s in firsts for _ in range(samples)], seed)
        self.on_progress(1, total)
        first = {s: batch[i * samples : (i + 1) * samples] for i, s in enumerate(firsts)}
        if depth == 1:
            return {c: first[c[0]] for c in candidates}
        seconds = list(dict.fromkeys(c[1] for c in candidates))
        chained: dict[planning.Candidate, list[np.ndarray]] = {c: [] for c in candidates}
        done = 1
        for a in firsts:
            for state in first[a]:
                call_seed = seed + len(batch) + (done - 1) * len(seconds)
                outcomes = self._predict(state, header, seconds, call_seed)
                for b, outcome in zip(seconds, outcomes, strict=True):
                    if (a, b) in chained:
                        chained[(a, b)].append(outcome)
                done += 1
                self.on_progress(done, total)
        return chained


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; configures and activates it unless told to wait."""
    middleware_warning = free_transport_buffers()
    rclpy.init(args=args)
    node = PlannerNode()
    if middleware_warning:
        node.get_logger().warning(middleware_warning)
    executor = ResilientExecutor(4, log_contained_error(node))
    executor.add_node(node)
    try:
        if not node.settings["wait_for_lifecycle_manager"]:
            node.trigger_configure()
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
