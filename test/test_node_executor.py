"""No callback's exception ends the node: the executor reports it and keeps spinning."""

import threading
import time

import pytest
import rclpy
from rclpy.node import Node

from showme_ros.executor import ResilientExecutor


@pytest.fixture
def context():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.mark.parametrize("error", [ValueError("bad"), RuntimeError("boom"), KeyError("k")])
def test_a_raising_callback_is_reported_and_the_others_keep_running(context, error):
    node = Node("raising_node")
    errors: list[BaseException] = []
    ticks: list[float] = []

    def raise_once() -> None:
        if not errors:
            raise error

    node.create_timer(0.01, raise_once)
    node.create_timer(0.01, lambda: ticks.append(time.monotonic()))
    executor = ResilientExecutor(2, errors.append)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    time.sleep(0.5)
    raised_at = time.monotonic()
    time.sleep(0.3)
    executor.shutdown()
    spinner.join(10)
    node.destroy_node()
    assert not spinner.is_alive()
    assert errors == [error]
    assert any(tick > raised_at for tick in ticks)  # still spinning after the exception
