"""An executor that survives its callbacks: no single callback's exception ends the node."""

from __future__ import annotations

from collections.abc import Callable

from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


class ResilientExecutor(MultiThreadedExecutor):
    """A ``MultiThreadedExecutor`` that reports callback exceptions instead of re-raising them.

    rclpy re-raises an exception from any callback (including its own parameter services on a
    malformed request) out of ``spin()``, which ends a node's ``main()``. Here each one goes to
    ``on_error`` and spinning continues; shutdown still ends ``spin()``.
    """

    def __init__(self, num_threads: int, on_error: Callable[[BaseException], None]) -> None:
        super().__init__(num_threads=num_threads)
        self._on_error = on_error

    def spin_once(self, timeout_sec: float | None = None) -> None:
        """Run one ready callback; an exception it raised goes to ``on_error``."""
        try:
            super().spin_once(timeout_sec)
        except ExternalShutdownException:
            raise
        except Exception as error:
            self._on_error(error)


def log_contained_error(node: Node) -> Callable[[BaseException], None]:
    """Return an ``on_error`` that logs a contained callback exception on ``node``'s logger."""

    def log(error: BaseException) -> None:
        node.get_logger().error(f"a callback raised and was contained: {error!r}")

    return log
