"""A small rclpy client of the showme node: inputs, service, action, lifecycle and parameters.

Used by the demo, the planner node, the tests and the load test; each ``ShowMeClient`` owns a
node and a single-threaded executor, so several clients can run in parallel threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from showme_ros.action import PredictRollout
from showme_ros.image_conversion import rgb_to_image
from showme_ros.msg import PredictedRollout
from showme_ros.srv import Predict

# Calls one client may have in flight without losing an answer (its response queue depth).
IN_FLIGHT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE
)
TRANSITIONS = {
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
}


def make_request(
    instruction: str = "",
    image: np.ndarray | None = None,
    header: Header | None = None,
    video: bool = False,
    **fields: object,
) -> Predict.Request:
    """Build a ``Predict`` request (also valid as a ``PredictRollout`` goal's fields)."""
    mode = PredictedRollout.MODE_ROLLOUT if video else PredictedRollout.MODE_GOAL_IMAGE
    request = Predict.Request(instruction=instruction, **{"mode": mode, **fields})
    if image is not None:
        request.image = rgb_to_image(image, header)
    return request


def to_goal(request: Predict.Request) -> PredictRollout.Goal:
    """Return the action goal with the same fields as ``request``."""
    goal = PredictRollout.Goal()
    for name in Predict.Request.get_fields_and_field_types():
        setattr(goal, name, getattr(request, name))
    return goal


class ShowMeClient:
    """Talks to the node ``<namespace>/predictor``."""

    def __init__(self, name: str = "showme_client", namespace: str = "/showme") -> None:
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        base = namespace.rstrip("/")
        # Deep queues: answers to many calls in flight at once must not overwrite each other.
        self.predict_client = self.node.create_client(
            Predict, f"{base}/predict", qos_profile=IN_FLIGHT_QOS
        )
        self.action_client = ActionClient(
            self.node,
            PredictRollout,
            f"{base}/predict_rollout",
            goal_service_qos_profile=IN_FLIGHT_QOS,
            result_service_qos_profile=IN_FLIGHT_QOS,
            cancel_service_qos_profile=IN_FLIGHT_QOS,
        )
        self._change_state = self.node.create_client(ChangeState, f"{base}/predictor/change_state")
        self._get_state = self.node.create_client(GetState, f"{base}/predictor/get_state")
        self._set_parameters = self.node.create_client(
            SetParameters, f"{base}/predictor/set_parameters"
        )
        self._publishers: dict[str, object] = {}

    def close(self) -> None:
        """Destroy the client's node."""
        self.executor.shutdown()
        self.node.destroy_node()

    def wait_until_active(self, timeout: float) -> bool:
        """Wait until the node reports the lifecycle state ``active``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._get_state.wait_for_service(timeout_sec=1.0):
                state = self._call(self._get_state, GetState.Request(), 10.0)
                if state is not None and state.current_state.label == "active":
                    return True
            time.sleep(0.2)
        return False

    def predict(self, request: Predict.Request, timeout: float = 120.0) -> Predict.Response:
        """Call the ``predict`` service; raises ``TimeoutError`` without an answer."""
        if not self.predict_client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("the predict service is not available")
        response = self._call(self.predict_client, request, timeout)
        if response is None:
            raise TimeoutError(f"no answer from predict within {timeout} s")
        return response

    def rollout(
        self,
        goal: PredictRollout.Goal,
        on_feedback: Callable[[PredictRollout.Feedback], bool] | None = None,
        timeout: float = 120.0,
    ) -> tuple[int, PredictRollout.Result]:
        """Run the action; ``on_feedback`` returning True requests cancellation.

        Returns:
            The goal's final status (``action_msgs/GoalStatus``) and its result.

        """
        if not self.action_client.wait_for_server(timeout_sec=timeout):
            raise TimeoutError("the predict_rollout action is not available")
        cancel: list[Future] = []
        handles: list[object] = []

        def feedback(message: object) -> None:
            wants_cancel = on_feedback is not None and on_feedback(message.feedback)
            if wants_cancel and handles and not cancel:
                cancel.append(handles[0].cancel_goal_async())

        sent = self.action_client.send_goal_async(goal, feedback_callback=feedback)
        self.executor.spin_until_future_complete(sent, timeout_sec=timeout)
        handle = sent.result()
        handles.append(handle)
        if handle is None or not handle.accepted:
            raise RuntimeError("goal was not accepted")
        result = handle.get_result_async()
        self.executor.spin_until_future_complete(result, timeout_sec=timeout)
        if not result.done():
            raise TimeoutError(f"no result within {timeout} s")
        return result.result().status, result.result().result

    def change_state(self, transition: str, timeout: float = 120.0) -> bool:
        """Request a lifecycle transition (``activate`` / ``deactivate``); True on success."""
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        response = self._call(self._change_state, request, timeout)
        return bool(response and response.success)

    def set_parameters(self, values: dict[str, object], timeout: float = 10.0) -> list[str]:
        """Set node parameters; returns the reasons of refused ones."""
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        response = self._call(self._set_parameters, request, timeout)
        if response is None:
            raise TimeoutError("no answer from set_parameters")
        return [r.reason for r in response.results if not r.successful]

    def publisher(self, msg_type: type, topic: str, timeout: float = 15.0) -> object:
        """Return a publisher on ``topic`` once the node's subscription has matched it."""
        if topic in self._publishers:
            return self._publishers[topic]
        publisher = self.node.create_publisher(msg_type, topic, 1)
        self._publishers[topic] = publisher
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        if publisher.get_subscription_count() == 0:
            raise TimeoutError(f"nobody subscribes to {topic}")
        return publisher

    def publish_inputs(
        self, image: np.ndarray, header: Header, instruction: str, image_topic: str, text_topic: str
    ) -> None:
        """Publish a camera frame and an instruction on the node's input topics."""
        self.publisher(Image, image_topic).publish(rgb_to_image(image, header))
        self.publisher(String, text_topic).publish(String(data=instruction))

    def _call(self, client: object, request: object, timeout: float) -> object | None:
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        return future.result() if future.done() else None


def succeeded(status: int) -> bool:
    """Whether an action status is SUCCEEDED."""
    return status == GoalStatus.STATUS_SUCCEEDED
