"""rclpy clients of the world model, the simulated robot and the planner.

Standalone, like :class:`showme_ros.client.ShowMeClient`, a client owns a node and a
single-threaded executor that it spins only while it waits for an answer. Given a node that an
executor already spins in other threads (the planner node's own), it creates its clients on that
node and waits on events instead: one node per process, callable from any callback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future

from showme_ros.action import ExecuteSkill, PlanAndExecute
from showme_ros.srv import GetScene, Predict, ResetScene


class _Client:
    """Clients on a node: their own (spun while waiting) or one spun elsewhere."""

    def __init__(self, name: str, node: Node | None = None) -> None:
        self._owns_node = node is None
        self.node = node or Node(name)
        self.executor = None
        if self._owns_node:
            self.executor = SingleThreadedExecutor()
            self.executor.add_node(self.node)

    def close(self) -> None:
        """Destroy the client's own node (a borrowed node stays)."""
        if self._owns_node:
            self.executor.shutdown()
            self.node.destroy_node()

    def _wait(self, future: Future, timeout: float, what: str) -> object:
        if self.executor is not None:
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        else:
            done = threading.Event()
            future.add_done_callback(lambda _future: done.set())
            deadline = time.monotonic() + timeout
            # Short waits, so that a shutdown of the node's context ends the wait too.
            while not future.done() and self.node.context.ok() and time.monotonic() < deadline:
                done.wait(0.1)
        if not future.done():
            raise TimeoutError(f"no answer from {what} within {timeout} s")
        return future.result()

    def _call(self, client: object, request: object, timeout: float) -> object:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} is not available")
        return self._wait(client.call_async(request), timeout, client.srv_name)

    def _run_action(
        self,
        client: ActionClient,
        goal: object,
        on_feedback: Callable[[object], None] | None,
        timeout: float,
    ) -> tuple[int, object]:
        if not client.wait_for_server(timeout_sec=timeout):
            raise TimeoutError(f"the action server is not available within {timeout} s")

        def feedback(message: object) -> None:
            if on_feedback is not None:
                on_feedback(message.feedback)

        handle = self._wait(client.send_goal_async(goal, feedback), timeout, "the action server")
        if handle is None or not handle.accepted:
            raise RuntimeError("goal was not accepted")
        answer = self._wait(handle.get_result_async(), timeout, "the action's result")
        return answer.status, answer.result


class WorldModelClient(_Client):
    """Calls ``<namespace>/predict`` of the world-model node."""

    def __init__(
        self, name: str = "world_model_client", namespace: str = "/showme", node: Node | None = None
    ) -> None:
        super().__init__(name, node)
        self._predict = self.node.create_client(Predict, f"{namespace.rstrip('/')}/predict")

    def predict(self, request: Predict.Request, timeout: float = 300.0) -> Predict.Response:
        """Call the ``predict`` service; raises ``TimeoutError`` without an answer."""
        return self._call(self._predict, request, timeout)


class RobotClient(_Client):
    """Talks to the simulated robot ``<namespace>/sim_robot``."""

    def __init__(
        self, name: str = "robot_client", namespace: str = "/robot", node: Node | None = None
    ) -> None:
        super().__init__(name, node)
        base = namespace.rstrip("/")
        self._reset = self.node.create_client(ResetScene, f"{base}/reset_scene")
        self._get_scene = self.node.create_client(GetScene, f"{base}/get_scene")
        self._execute = ActionClient(self.node, ExecuteSkill, f"{base}/execute_skill")

    def reset(self, scene: str, layout_seed: int, timeout: float = 300.0) -> ResetScene.Response:
        """Reset the robot to ``scene`` at ``layout_seed``; raises ``RuntimeError`` if refused."""
        response = self._call(
            self._reset, ResetScene.Request(scene=scene, layout_seed=layout_seed), timeout
        )
        if not response.success:
            raise RuntimeError(f"reset refused: {response.message}")
        return response

    def scene(self, timeout: float = 60.0) -> GetScene.Response:
        """Return the robot's scene, skills and the state of their success criteria."""
        return self._call(self._get_scene, GetScene.Request(), timeout)

    def wait_until_ready(self, timeout: float) -> bool:
        """Wait until the robot reports a scene (it is active and has reset)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.scene(timeout=5.0).scene:
                    return True
            except TimeoutError:
                pass
            time.sleep(0.2)
        return False

    def execute(
        self,
        skill: str,
        on_feedback: Callable[[ExecuteSkill.Feedback], None] | None = None,
        max_steps: int = 0,
        timeout: float = 300.0,
    ) -> tuple[int, ExecuteSkill.Result]:
        """Run ``skill``; returns the goal's final status and its result."""
        goal = ExecuteSkill.Goal(skill=skill, max_steps=max_steps)
        return self._run_action(self._execute, goal, on_feedback, timeout)


class PlannerClient(_Client):
    """Talks to the planner ``<namespace>/planner``."""

    def __init__(self, name: str = "planner_client", namespace: str = "/planner") -> None:
        super().__init__(name)
        self._plan = ActionClient(
            self.node, PlanAndExecute, f"{namespace.rstrip('/')}/plan_and_execute"
        )

    def plan(
        self,
        goal: PlanAndExecute.Goal,
        on_feedback: Callable[[PlanAndExecute.Feedback], None] | None = None,
        timeout: float = 900.0,
    ) -> tuple[int, PlanAndExecute.Result]:
        """Send a planning goal; returns its final status and result."""
        return self._run_action(self._plan, goal, on_feedback, timeout)

    def wait_for_server(self, timeout: float) -> bool:
        """Whether the planner's action server appeared within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._plan.wait_for_server(timeout_sec=1.0):
                return True
        return False
