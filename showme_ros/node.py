"""``showme_node``: the lifecycle node ``predictor`` that serves the world model.

Interfaces (relative names; the launch file puts the node in namespace ``showme``):

- subscribes ``image`` (sensor_msgs/Image) and ``image/compressed`` (sensor_msgs/CompressedImage),
  KEEP_LAST 1 with reliability from ``image_reliability``, and ``instruction`` (std_msgs/String,
  reliable);
- serves ``predict`` (showme_ros/srv/Predict) and ``predict_rollout``
  (showme_ros/action/PredictRollout);
- publishes ``goal_image`` (sensor_msgs/Image) and ``rollout`` (showme_ros/msg/PredictedRollout)
  in continuous mode, and ``/diagnostics``.

Every answer carries an ``ErrorCode`` (OK or why it failed) and a message. Action goals are
always accepted; one that cannot run (node inactive, busy, invalid request) is aborted at once
with the reason in its result, since a rejected goal cannot carry one. Service calls, action
goals and continuous-mode predictions share one path: the same validation, limits, statistics
and error handling. The model is loaded on activate and freed on deactivate. Inference runs in a
reentrant callback group under a multi-threaded executor, one job at a time; up to
``queue_size`` requests wait, later ones are answered at once with BUSY. The transport queues
hold ``max_pending_requests`` requests, so a burst gets answers instead of silence, and a
response to a client still being discovered is resent (:mod:`showme_ros.responses`). No
callback's exception ends the process (:class:`~showme_ros.executor.ResilientExecutor`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from showme_ros import outputs, parameters
from showme_ros.action import PredictRollout
from showme_ros.allocator import keep_memory_flat
from showme_ros.diagnostics import FrameState, ModelState, ServingStats, report
from showme_ros.engine import Engine, JobCancelledError, Progress, choose_model
from showme_ros.errors import (
    BusyError,
    CancelledError,
    InternalError,
    NotActiveError,
    RequestError,
    StoppedError,
)
from showme_ros.executor import ResilientExecutor
from showme_ros.jobs import MODE_CODES, CameraTopics, Job, LatestInputs, build_job
from showme_ros.middleware import free_transport_buffers
from showme_ros.msg import ErrorCode, PredictedRollout
from showme_ros.responses import deliver_patiently
from showme_ros.srv import Predict

NODE_NAME = "predictor"
# Executor threads beyond the queued requests: the running job, cheap callbacks, lifecycle and
# parameter services, and continuous mode.
SPARE_THREADS = 4
# Depth of the debug image streams: a whole rollout fits.
PREDICTION_STREAM_DEPTH = 32
# Longest part of an internal error's text sent to a client; the full text goes to the log.
MAX_INTERNAL_DETAIL = 200


class PredictorNode(LifecycleNode):
    """Lifecycle node serving goal images and rollouts from camera frames and instructions."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(NODE_NAME, **kwargs)
        parameters.declare(self)
        self.settings = parameters.read(self)
        self._inputs = LatestInputs()
        self.stats = ServingStats()
        self._engine: Engine | None = None
        self._load_error = ""
        self._engine_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.settings.queue_size + 1)
        self._stopping = threading.Event()
        self._inference_group = ReentrantCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._goal_publisher = None
        self._rollout_publisher = None
        self._goal_debug_publisher = None
        self._rollout_frames_publisher = None

        camera_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE
            if self.settings.image_reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self._topics = CameraTopics(
            self.resolve_topic_name("image"), self.resolve_topic_name("image/compressed")
        )
        self.create_subscription(
            Image, "image", self._on_frame, camera_qos, callback_group=self._input_group
        )
        self.create_subscription(
            CompressedImage,
            "image/compressed",
            self._on_frame,
            camera_qos,
            callback_group=self._input_group,
        )
        self.create_subscription(
            String,
            "instruction",
            self._on_instruction,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
            callback_group=self._inference_group,
        )
        requests_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.settings.max_pending_requests,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        deliver_patiently(
            self.create_service(
                Predict,
                "predict",
                self._on_predict,
                qos_profile=requests_qos,
                callback_group=self._inference_group,
            ),
            self._report_late_delivery,
        )
        self._action_server = ActionServer(
            self,
            PredictRollout,
            "predict_rollout",
            execute_callback=self._on_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=self._inference_group,
            goal_service_qos_profile=requests_qos,
            result_service_qos_profile=requests_qos,
            cancel_service_qos_profile=requests_qos,
            result_timeout=self.settings.result_timeout,
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
        stream = QoSProfile(depth=PREDICTION_STREAM_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        self._goal_debug_publisher = self.create_lifecycle_publisher(
            Image, "predictions/goal_image", stream
        )
        self._rollout_frames_publisher = self.create_lifecycle_publisher(
            Image, "predictions/rollout_frames", stream
        )
        return super().on_configure(state)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Load the model and warm up both modes; fail the transition with the reason."""
        self.settings = parameters.read(self)
        try:
            choice = choose_model(self.settings.model_path)
            if choice.warning:
                self.get_logger().warning(choice.warning)
            engine = Engine.load(
                choice.path,
                self.settings.adapters,
                self.settings.device,
                self.settings.dtype,
                self.settings.onnx_path,
                self.settings.compile_unet,
            )
            served = engine.resolve(self.settings)
            if warning := engine.fallback_warning(served):
                self.get_logger().warning(warning)
            engine.warm_up(served)
        except (RuntimeError, ValueError, OSError) as error:  # ModelLoadError is a RuntimeError
            self._load_error = str(error)
            self.get_logger().error(f"activation failed: {error}")
            return TransitionCallbackReturn.FAILURE
        with self._engine_lock:
            self._engine, self._load_error = engine, ""
        self._stopping.clear()
        self.get_logger().info(
            f"model {engine.model_id} loaded on {engine.device} ({engine.dtype}) from "
            f"{choice.path}, UNet in {engine.runtime}; serving "
            f"{self.resolve_service_name('predict')}"
        )
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop the running job (within one denoising step) and free the model."""
        self.free_model()
        self.get_logger().info("model freed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Destroy the continuous-mode publishers."""
        for publisher in (
            self._goal_publisher,
            self._rollout_publisher,
            self._goal_debug_publisher,
            self._rollout_frames_publisher,
        ):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._goal_publisher = self._rollout_publisher = None
        self._goal_debug_publisher = self._rollout_frames_publisher = None
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

    def _report_late_delivery(self, retries: int) -> None:
        self.get_logger().info(
            f"a response was resent {retries} time(s) while its client was being discovered"
        )

    def report_callback_error(self, error: BaseException) -> None:
        """Log and count an exception that escaped a callback; the node keeps serving."""
        self.stats.record_callback_error()
        self.get_logger().error(f"a callback raised and was contained: {error!r}")

    # Inputs --------------------------------------------------------------------------------

    def _on_frame(self, msg: Image | CompressedImage) -> None:
        self._inputs.set_frame(msg, self.get_clock().now().nanoseconds)

    def _on_instruction(self, msg: String) -> None:
        """Keep the instruction; in continuous mode, predict from it and the newest frame."""
        self._inputs.set_instruction(msg.data)
        settings = parameters.read(self)
        if not settings.continuous or self._engine is None or not msg.data.strip():
            return
        request = Predict.Request(
            instruction=msg.data, mode=MODE_CODES[settings.continuous_mode], seed=settings.seed
        )
        try:
            (prediction,) = self._serve(request, progress=None, cancelled=lambda: False)
        except RequestError as error:
            if isinstance(error, BusyError):
                frame, _ = self._inputs.take()
                if frame is not None:
                    self._inputs.drop(frame)
            self.get_logger().warning(f"continuous prediction skipped: {error}")
            return
        self._goal_publisher.publish(prediction.frames[-1])
        self._rollout_publisher.publish(prediction)

    # Requests ------------------------------------------------------------------------------

    def _on_predict(self, request: Predict.Request, response: Predict.Response) -> object:
        try:
            response.predictions = self._serve(request, progress=None, cancelled=lambda: False)
            response.success = True
            response.message = f"{len(response.predictions)} prediction(s)"
        except RequestError as error:
            response.success, response.message = False, str(error)
            response.error_code.value = error.code
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
        except RequestError as error:
            result.message, result.error_code.value = str(error), error.code
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        return result

    def _serve(
        self, request: object, progress: Progress | None, cancelled: Callable[[], bool]
    ) -> list[PredictedRollout]:
        """Validate and run one request; every failure raises a :class:`RequestError`."""
        try:
            engine = self._check_active()
            settings = engine.resolve(parameters.read(self))
            now = self.get_clock().now().nanoseconds
            job = build_job(request, self._inputs, settings, self._topics, now)
            return self._run(job, settings, progress, cancelled)
        except RequestError as error:
            self.stats.record_failure(error.code)
            self.get_logger().warning(f"request refused: {str(error)[:300]}")
            raise
        except Exception as error:  # a fault in the model must not take the node down
            self.stats.record_failure(ErrorCode.INTERNAL)
            self.get_logger().error(f"prediction failed: {error!r}")
            detail = str(error).splitlines()[0][:MAX_INTERNAL_DETAIL] if str(error) else ""
            raise InternalError(
                f"internal error ({type(error).__name__}: {detail}); the node's log has details"
            ) from error

    def _check_active(self) -> Engine:
        engine = self._engine
        if engine is None:
            reason = f": {self._load_error}" if self._load_error else ""
            raise NotActiveError(f"node is not active, no model is loaded{reason}")
        return engine

    def _run(
        self,
        job: Job,
        settings: parameters.Settings,
        progress: Progress | None,
        cancelled: Callable[[], bool],
    ) -> list[PredictedRollout]:
        if not self._slots.acquire(blocking=False):
            raise BusyError(
                f"busy: a prediction is running and {settings.queue_size} more wait "
                "(queue_size); try again later"
            )
        try:
            with self._engine_lock:
                engine = self._engine
                if engine is None or self._stopping.is_set():
                    raise StoppedError("stopped by deactivation: no model is loaded")
                started = time.monotonic()
                try:
                    frames, region = engine.run(
                        job,
                        progress,
                        lambda: cancelled() or self._stopping.is_set(),
                        region_size=settings.camera_resolution,
                    )
                except JobCancelledError as error:
                    if cancelled():
                        raise CancelledError(f"cancelled: {error}") from error
                    raise StoppedError(f"stopped by deactivation: {error}") from error
                latency = time.monotonic() - started
        finally:
            self._slots.release()
        self.stats.record_success(latency)
        default_frames = settings.num_frames
        predictions = [
            outputs.to_message(
                job,
                index,
                rollout,
                region,
                settings.camera_resolution,
                outputs.frame_offsets(job, len(rollout), settings.frame_period, default_frames),
                engine.model_id,
                latency,
            )
            for index, rollout in enumerate(frames)
        ]
        if settings.publish_predictions:
            self._publish_predictions(predictions)
        return predictions

    def _publish_predictions(self, predictions: list[PredictedRollout]) -> None:
        """Show every prediction on the debug image topics (RViz, Foxglove, bags)."""
        for prediction in predictions:
            video = prediction.mode == PredictedRollout.MODE_ROLLOUT
            publisher = self._rollout_frames_publisher if video else self._goal_debug_publisher
            if publisher is None or publisher.get_subscription_count() == 0:
                continue  # nobody watches: skip serialising camera-sized frames
            for frame in prediction.frames:
                publisher.publish(frame)

    # Diagnostics ---------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        engine = self._engine
        settings = parameters.read(self)
        model = ModelState(
            loaded=engine is not None,
            model_id=engine.model_id if engine else "",
            device=engine.device if engine else self.settings.device,
            dtype=engine.dtype if engine else self.settings.dtype,
            error=self._load_error,
            gpu_memory_bytes=engine.gpu_memory_bytes() if engine else 0,
        )
        frames = FrameState(
            received=self._inputs.frames_received,
            superseded=self._inputs.frames_superseded,
            dropped=self._inputs.frames_dropped,
            newest_age_s=self._inputs.newest_age(self.get_clock().now().nanoseconds),
            max_age_s=settings.max_frame_age,
        )
        status = report(
            f"{self.get_fully_qualified_name()}: world model", "showme", model, self.stats, frames
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown; activates it at start unless told to wait."""
    flat_memory = keep_memory_flat()
    middleware_warning = free_transport_buffers()
    rclpy.init(args=args)
    node = PredictorNode()
    if middleware_warning:
        node.get_logger().warning(middleware_warning)
    if not flat_memory:
        node.get_logger().warning(
            "cannot limit the C library's malloc arenas (not glibc?): freed camera-frame "
            "buffers may stay resident"
        )
    executor = ResilientExecutor(
        node.settings.queue_size + 1 + SPARE_THREADS, node.report_callback_error
    )
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
