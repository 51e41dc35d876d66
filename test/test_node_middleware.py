"""With the shipped Fast DDS profile a service carrying large images keeps its memory flat."""

import os
import sys
import time

import numpy as np
import psutil
import pytest
import rclpy
from rclpy.qos import QoSProfile

from showme_ros.client import make_request
from showme_ros.middleware import (
    PROFILE,
    PROFILE_VARIABLES,
    USE_XML_VARIABLE,
    free_transport_buffers,
)
from showme_ros.srv import Predict
from test.ros_testing import DISCOVERY_TIMEOUT_S

# A service like the node's (deep queue, images in and out), applying the node's middleware
# settings before rclpy.init, with the allocator setting of the node.
ECHO_SERVER = """
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import QoSProfile
from showme_ros.allocator import keep_memory_flat
from showme_ros.middleware import free_transport_buffers
from showme_ros.msg import PredictedRollout
from showme_ros.srv import Predict

keep_memory_flat()
free_transport_buffers()
rclpy.init()
node = rclpy.create_node("echo_server")

def echo(request, response):
    response.predictions = [PredictedRollout(frames=[request.image])]
    response.success = True
    return response

node.create_service(Predict, "echo_images", echo, qos_profile=QoSProfile(depth=1000))
executor = MultiThreadedExecutor(4)
executor.add_node(node)
executor.spin()
"""

REQUESTS = 100  # one in five with a 36 MiB frame, answered with it
LARGE_MESSAGE_BYTES = 3072 * 4096 * 3


def settled_rss(process: psutil.Process, seconds: float = 3.0) -> int:
    """The process's smallest RSS over a few seconds: a message still in flight is not growth."""
    samples = []
    for _ in range(int(seconds / 0.25)):
        time.sleep(0.25)
        samples.append(process.memory_info().rss)
    return min(samples)


def test_the_profile_is_applied_to_an_unconfigured_environment():
    environ: dict[str, str] = {}
    assert free_transport_buffers(environ) is None
    assert environ == {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), USE_XML_VARIABLE: "1"}
    assert PROFILE.is_file() and "<historyMemoryPolicy>DYNAMIC<" in PROFILE.read_text()


def test_an_environment_set_by_a_showme_process_is_kept_without_a_warning():
    environ: dict[str, str] = {}
    free_transport_buffers(environ)
    inherited = dict(environ)
    assert free_transport_buffers(environ) is None
    assert environ == inherited


@pytest.mark.parametrize(
    "variable",
    [*PROFILE_VARIABLES, USE_XML_VARIABLE],
)
def test_a_users_own_fast_dds_configuration_is_kept_with_a_warning(variable):
    environ = {variable: "mine"}
    warning = free_transport_buffers(environ)
    assert environ == {variable: "mine"}
    assert warning is not None and variable in warning and "DYNAMIC" in warning


def test_a_service_answering_large_images_keeps_its_memory_flat():
    configured = (*PROFILE_VARIABLES, USE_XML_VARIABLE)
    env = {name: value for name, value in os.environ.items() if name not in configured}
    server = psutil.Popen([sys.executable, "-c", ECHO_SERVER], env=env)
    rclpy.init()
    node = rclpy.create_node("echo_images_client")
    try:
        client = node.create_client(Predict, "echo_images", qos_profile=QoSProfile(depth=1000))
        assert client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S)
        rng = np.random.default_rng(0)
        big = make_request("x", image=rng.integers(0, 256, (3072, 4096, 3), dtype=np.uint8))
        small = make_request("x", image=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        rss: list[int] = []
        for index in range(REQUESTS):
            future = client.call_async(big if index % 5 == 0 else small)
            rclpy.spin_until_future_complete(node, future, timeout_sec=60)
            assert future.done() and future.result().success
            if index in (9, REQUESTS - 1):
                rss.append(settled_rss(server))
        # rmw_fastrtps's default history memory grew this server by 108 MiB from request 10
        # to 100; with the profile it grew by under 1 MiB.
        growth = rss[1] - rss[0]
        assert growth < LARGE_MESSAGE_BYTES, f"grew {growth / 2**20:.0f} MiB"
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        server.terminate()
        try:
            server.wait(30)
        except psutil.TimeoutExpired:  # the echo server is only a harness: do not wait on it
            server.kill()
            server.wait(30)
