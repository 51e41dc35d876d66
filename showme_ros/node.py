"""``showme_node``: the lifecycle node ``predictor`` that serves the world model.

Interfaces (relative names; the launch file puts the node in namespace ``showme``):

- subscribes ``image`` (sensor_msgs/Image), ``image/compressed`` (sensor_msgs/CompressedImage)
  and ``instruction`` (std_msgs/String); KEEP_LAST 1, reliability from ``image_reliability``;
- serves ``predict`` (showme_ros/srv/Predict) and ``predict_rollout``
  (showme_ros/action/PredictRollout);
- publishes ``goal_image`` (sensor_msgs/Image) and ``rollout`` (showme_ros/msg/PredictedRollout)
  in continuous mode, and ``/diagnostics``.

Action goals are always accepted; one that cannot run (node inactive, busy, invalid request) is
aborted at once with success=false and the reason in its result, since a rejected goal cannot
carry a reason. The model is loaded on activate and freed on deactivate. Inference runs in a
reentrant callback group under a multi-threaded executor, one job at a time; up to
``queue_size`` requests wait, later ones are answered at once with a 'busy' message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from showme_ros import parameters
from showme_ros.action import PredictRollout
from showme_ros.diagnostics import ModelState, ServingStats, report
from showme_ros.engine import Engine, JobCancelledError, Progress, choose_model
from showme_ros.image_conversion import ImageConversionError, rgb_to_image
from showme_ros.jobs import (
    MODES,
    Job,
    LatestInputs,
    RequestError,
    build_job,
    continuous_job,
    decode_frame,
)
from showme_ros.msg import PredictedRollout
from showme_ros.srv import Predict

NODE_NAME = "predictor"
# Executor threads beyond the queued requests: the running job, cheap callbacks, lifecycle and
# parameter services, and continuous mode.
SPARE_THREADS = 4


class PredictorNode(LifecycleNode):
    """Lifecycle node serving goal images and rollouts from camera frames and instructions."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(NODE_NAME, **kwargs)
        parameters.declare(self)
        self.settings = parameters.read(self)
        self._inputs = LatestInputs()
        self._stats = ServingStats()
        self._engine: Engine | None = None
        self._load_error = ""
        self._engine_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.settings.queue_size + 1)
        self._stopping = threading.Event()
        self._inference_group = ReentrantCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._goal_publisher = None
        self._rollout_publisher = None

        camera_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE
            if self.settings.image_reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self._image_topic = self.resolve_topic_name("image")
        self.create_subscription(
            Image, "image", self._inputs.set_frame, camera_qos, callback_group=self._input_group
        )
        self.create_subscription(
            CompressedImage,
            "image/compressed",
            self._inputs.set_frame,
            camera_qos,
            callback_group=self._input_group,
        )
        self.create_subscription(
            String,
            "instruction",
            self._on_instruction,
            QoSProfile(depth=1, reliability=camera_qos.reliability),
            callback_group=self._inference_group,
        )
        self.create_service(
            Predict, "predict", self._on_predict, callback_group=self._inference_group
        )
        self._action_server = ActionServer(
            self,
            PredictRollout,
            "predict_rollout",
            execute_callback=self._on_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=self._inference_group,
        )
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(
            self.settings.diagnostics_period,
            self._publish_diagnostics,
            callback_group=self._input_group,
        )

    # Lifecycle -----------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Create the continuous-mode publishers."""
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._goal_publisher = self.create_lifecycle_publisher(Image, "goal_image", latched)
        self._rollout_publisher = self.create_lifecycle_publisher(
            PredictedRollout, "rollout", latched
        )
        return super().on_configure(state)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Load the model; fail the transition with the reason when it cannot be loaded."""
        self.settings = parameters.read(self)
        try:
            choice = choose_model(self.settings.model_path)
            if choice.warning:
                self.get_logger().warning(choice.warning)
            engine = Engine.load(
                choice.path, self.settings.adapters, self.settings.device, self.settings.dtype
            )
            engine.warm_up()
        except (RuntimeError, ValueError, OSError) as error:  # ModelLoadError is a RuntimeError
            self._load_error = str(error)
            self.get_logger().error(f"activation failed: {error}")
            return TransitionCallbackReturn.FAILURE
        with self._engine_lock:
            self._engine, self._load_error = engine, ""
        self._stopping.clear()
        self.get_logger().info(
            f"model {engine.model_id} loaded on {engine.device} ({engine.dtype}) from "
            f"{choice.path}; serving {self.resolve_service_name('predict')}"
        )
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop the running job (within one denoising step) and free the model."""
        self.free_model()
        self.get_logger().info("model freed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Destroy the continuous-mode publishers."""
        for publisher in (self._goal_publisher, self._rollout_publisher):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._goal_publisher = self._rollout_publisher = None
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Free the model."""
        self.free_model()
        return super().on_shutdown(state)

    def free_model(self) -> None:
        """Stop the running job (within one denoising step) and free the model."""
        self._stopping.set()
        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
            self._engine = None

    # Requests ------------------------------------------------------------------------------

    def _on_predict(self, request: Predict.Request, response: Predict.Response) -> object:
        try:
            response.predictions = self._serve(request, progress=None, cancelled=lambda: False)
            response.success = True
            response.message = f"{len(response.predictions)} prediction(s)"
        except (RequestError, ValueError) as error:
            response.success, response.message = False, str(error)
        except JobCancelledError as error:
            response.success, response.message = False, f"stopped by deactivation: {error}"
        return response

    def _on_goal(self, goal_handle: ServerGoalHandle) -> PredictRollout.Result:
        result = PredictRollout.Result()
        started = time.monotonic()

        def progress(step: int, total: int) -> None:
            elapsed = time.monotonic() - started
            feedback = PredictRollout.Feedback(
                step=step,
                total_steps=total,
                elapsed_seconds=elapsed,
                remaining_seconds=elapsed / max(step, 1) * (total - step),
            )
            goal_handle.publish_feedback(feedback)

        try:
            result.predictions = self._serve(
                goal_handle.request, progress, lambda: goal_handle.is_cancel_requested
            )
            result.success, result.message = True, f"{len(result.predictions)} prediction(s)"
            goal_handle.succeed()
        except JobCancelledError as error:
            result.message = f"cancelled: {error}"
            goal_handle.canceled()
        except (RequestError, ValueError) as error:
            result.message = str(error)
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        return result

    def _serve(
        self, request: object, progress: Progress | None, cancelled: Callable[[], bool]
    ) -> list[PredictedRollout]:
        """Validate and run one request; every failure raises with the caller's message."""
        try:
            engine = self._check_active()
            settings = parameters.read(self)
            settings = replace(
                settings, max_num_frames=min(settings.max_num_frames, engine.max_frames)
            )
            job = build_job(request, self._inputs, settings, self._image_topic)
            return self._run(job, settings, progress, cancelled)
        except JobCancelledError:
            self._stats.record_failure()
            raise
        except (RequestError, ValueError) as error:
            self._stats.record_failure(busy=str(error).startswith("busy"))
            self.get_logger().warning(f"request refused: {str(error)[:300]}")
            raise
        except Exception as error:  # a fault in the model must not take the node down
            self._stats.record_failure()
            self.get_logger().error(f"prediction failed: {error!r}")
            raise RequestError(f"internal error: {error}") from error

    def _check_active(self) -> Engine:
        engine = self._engine
        if engine is None:
            reason = f": {self._load_error}" if self._load_error else ""
            raise RequestError(f"node is not active, no model is loaded{reason}")
        return engine

    def _run(
        self,
        job: Job,
        settings: parameters.Settings,
        progress: Progress | None,
        cancelled: Callable[[], bool],
    ) -> list[PredictedRollout]:
        if not self._slots.acquire(blocking=False):
            raise RequestError(
                f"busy: a prediction is running and {settings.queue_size} more wait "
                "(queue_size); try again later"
            )
        try:
            with self._engine_lock:
                engine = self._engine
                if engine is None:
                    raise RequestError("node was deactivated; no model is loaded")
                started = time.monotonic()
                frames = engine.run(job, progress, lambda: cancelled() or self._stopping.is_set())
                latency = time.monotonic() - started
        finally:
            self._slots.release()
        self._stats.record_success(latency)
        return [
            self._to_message(job, index, rollout, engine.model_id, latency, settings)
            for index, rollout in enumerate(frames)
        ]

    @staticmethod
    def _to_message(
        job: Job,
        index: int,
        rollout: np.ndarray,
        model_id: str,
        latency: float,
        settings: parameters.Settings,
    ) -> PredictedRollout:
        video = job.mode == "video"
        steps = range(len(rollout)) if video else [settings.num_frames - 1]
        mode_code = {name: code for code, name in MODES.items()}[job.mode]
        return PredictedRollout(
            header=job.header,
            instruction=job.instructions[index],
            mode=mode_code,
            frames=[rgb_to_image(frame, job.header) for frame in rollout],
            frame_offsets=[_duration(k * settings.frame_period) for k in steps],
            model_id=model_id,
            seed=job.seed + index,
            inference_time=latency,
        )

    # Continuous mode -----------------------------------------------------------------------

    def _on_instruction(self, msg: String) -> None:
        self._inputs.set_instruction(msg.data)
        settings = parameters.read(self)
        if not settings.continuous or self._engine is None or not msg.data.strip():
            return
        frame, _ = self._inputs.take()
        if frame is None:
            self.get_logger().warning(f"continuous mode: no frame yet on {self._image_topic}")
            return
        try:
            job = continuous_job(
                decode_frame(frame, settings.max_image_side), frame.header, msg.data, settings
            )
            prediction = self._run(job, settings, None, lambda: False)[0]
        except (RequestError, ValueError, ImageConversionError, JobCancelledError) as error:
            self.get_logger().warning(f"continuous prediction skipped: {error}")
            return
        self._goal_publisher.publish(prediction.frames[-1])
        self._rollout_publisher.publish(prediction)

    # Diagnostics ---------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        engine = self._engine
        model = ModelState(
            loaded=engine is not None,
            model_id=engine.model_id if engine else "",
            device=engine.device if engine else self.settings.device,
            dtype=engine.dtype if engine else self.settings.dtype,
            error=self._load_error,
            gpu_memory_bytes=engine.gpu_memory_bytes() if engine else 0,
        )
        status = report(
            f"{self.get_fully_qualified_name()}: world model",
            "showme",
            model,
            self._stats,
            self._inputs.frames_received,
            self._inputs.frames_dropped,
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def _duration(seconds: float) -> Duration:
    nanoseconds = round(seconds * 1e9)
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; activates it at start unless told to wait."""
    rclpy.init(args=args)
    node = PredictorNode()
    executor = MultiThreadedExecutor(num_threads=node.settings.queue_size + 1 + SPARE_THREADS)
    executor.add_node(node)
    try:
        if not node.settings.wait_for_lifecycle_manager:
            node.trigger_configure()
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error(
                    "the node stays inactive; requests are answered with the reason above"
                )
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.free_model()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
