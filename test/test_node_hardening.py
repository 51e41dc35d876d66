"""A hostile client against the node started as the launch file starts it: it never dies, never
leaves a request unanswered, refuses bad input early with a machine-readable code."""

import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from showme_ros.client import ShowMeClient, make_request, to_goal
from showme_ros.launch_command import node_command
from showme_ros.msg import ErrorCode

from .node_testing import START_TIMEOUT_S, header, picture, start_node, stop_node
from .ros_testing import DISCOVERY_TIMEOUT_S

IMAGE_TOPIC, TEXT_TOPIC = "/hostile/image_raw", "/hostile/instruction"
COMPRESSED_TOPIC = "/hostile/image_raw/compressed"
NAMESPACE = "/hostile_showme"
PNG16 = cv2.imencode(".png", np.zeros((8, 8), np.uint16))[1].tobytes()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node with the shipped model, two denoising steps and queue_size 1, and a client."""
    rclpy.init()
    tmp = tmp_path_factory.mktemp("hostile")
    args = {
        "namespace": NAMESPACE.strip("/"),
        "image_topic": IMAGE_TOPIC,
        "compressed_image_topic": COMPRESSED_TOPIC,
        "instruction_topic": TEXT_TOPIC,
        "device": "cpu",
    }
    overrides = ["inference.num_steps:=2", "inference.num_frames:=3", "queue_size:=1"]
    process, log = start_node(tmp, args, overrides)
    client = ShowMeClient("hostile_client", NAMESPACE)
    try:
        assert client.wait_until_active(START_TIMEOUT_S), log.read_text()[-3000:]
        yield client, process, log
        assert stop_node(process) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        client.close()
        rclpy.shutdown()


def diagnostics(client: ShowMeClient) -> tuple[bytes, dict[str, str]]:
    """The node's next /diagnostics report: level and values."""
    received: list[DiagnosticArray] = []
    subscription = client.node.create_subscription(
        DiagnosticArray, "/diagnostics", received.append, 10
    )
    try:
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            client.executor.spin_once(timeout_sec=0.1)
            mine = [s for a in received for s in a.status if NAMESPACE in s.name]
            if mine:
                return mine[-1].level, {kv.key: kv.value for kv in mine[-1].values}
        raise TimeoutError("no diagnostics")
    finally:
        client.node.destroy_subscription(subscription)


def served_image_request(client: ShowMeClient) -> None:
    response = client.predict(make_request("push", image=picture(0)))
    assert response.success and response.error_code.value == ErrorCode.OK, response.message


def bilevel_png(side: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``side`` x ``side`` black pixels (a few tens of KB)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes((side + 7) // 8)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    info = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", info) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_launch_command_leaves_no_parameter_file_behind():
    before = set(Path(tempfile.gettempdir()).glob("showme-launch-params-*"))
    node_command({"model_path": "/models/m", "continuous": "true"})
    assert set(Path(tempfile.gettempdir()).glob("showme-launch-params-*")) == before


def test_bad_compressed_frames_in_continuous_mode_do_not_kill_the_node(node):
    client, process, _ = node
    tiff_ok, tiff = cv2.imencode(".tiff", np.full((8, 8), -300, np.int16))
    assert tiff_ok
    bad = CompressedImage(header=header(1, "cam"), format="tiff")
    bad.data = tiff.tobytes()
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    goals: list[Image] = []
    client.node.create_subscription(Image, f"{NAMESPACE}/goal_image", goals.append, latched)
    assert client.set_parameters({"continuous.enabled": True}) == []
    try:
        frames = client.publisher(CompressedImage, COMPRESSED_TOPIC)
        words = client.publisher(String, TEXT_TOPIC)
        for _ in range(5):
            frames.publish(bad)
            time.sleep(0.2)
            words.publish(String(data="open the drawer"))
            time.sleep(0.5)
        assert process.poll() is None
        _, values = diagnostics(client)
        assert int(values["requests_failed_bad_image"]) >= 1
        assert int(values["frames_dropped"]) >= 1
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S + 30
        while not goals and time.monotonic() < deadline:  # a good frame is still served
            client.publish_inputs(picture(2), header(2, "cam"), "open", IMAGE_TOPIC, TEXT_TOPIC)
            end = time.monotonic() + 1.0
            while time.monotonic() < end and not goals:
                client.executor.spin_once(timeout_sec=0.05)
        assert goals and goals[-1].header.frame_id == "cam"
    finally:
        assert client.set_parameters({"continuous.enabled": False}) == []
    assert process.poll() is None


def test_a_malformed_parameter_message_does_not_kill_the_node(node):
    client, process, _ = node
    raw = client.node.create_client(SetParameters, f"{NAMESPACE}/predictor/set_parameters")
    assert raw.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S)
    broken = ParameterMsg(name="inference.num_steps", value=ParameterValue(type=99))
    future = raw.call_async(SetParameters.Request(parameters=[broken]))
    client.executor.spin_until_future_complete(future, timeout_sec=3.0)
    time.sleep(0.5)
    assert process.poll() is None
    served_image_request(client)
    level, values = diagnostics(client)
    assert int(values["callback_errors"]) >= 1
    assert level == DiagnosticStatus.WARN  # a callback raised within the last minute


def _burst(client: ShowMeClient, calls: int, goals: int, timeout: float) -> tuple[list, list]:
    """Send ``calls`` service requests and ``goals`` action goals at once; collect answers."""
    assert client.predict_client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S)
    assert client.action_client.wait_for_server(timeout_sec=DISCOVERY_TIMEOUT_S)
    request = make_request("push", image=picture(3))
    calls_out = [client.predict_client.call_async(request) for _ in range(calls)]
    goals_out = [client.action_client.send_goal_async(to_goal(request)) for _ in range(goals)]
    results = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.executor.spin_once(timeout_sec=0.05)
        for sent in goals_out:
            if sent.done() and sent.result() is not None and sent not in [s for s, _ in results]:
                results.append((sent, sent.result().get_result_async()))
        goals_done = len(results) == goals and all(r.done() for _, r in results)
        if goals_done and all(f.done() for f in calls_out):
            break
    responses = [f.result() for f in calls_out if f.done()]
    outcomes = [r.result() for _, r in results if r.done()]
    return responses, outcomes


@pytest.mark.parametrize(("calls", "goals"), [(10, 10), (100, 0)])
def test_every_request_of_a_burst_gets_an_answer(node, calls, goals):
    client, process, _ = node
    responses, outcomes = _burst(client, calls, goals, timeout=120.0)
    assert len(responses) == calls and len(outcomes) == goals
    codes = [r.error_code.value for r in responses] + [o.result.error_code.value for o in outcomes]
    assert set(codes) <= {ErrorCode.OK, ErrorCode.BUSY}, codes
    assert codes.count(ErrorCode.OK) >= 1
    for response in responses:
        assert response.success == (response.error_code.value == ErrorCode.OK)
    assert process.poll() is None


def test_deactivating_during_a_rollout_aborts_it_with_the_reason(node):
    client, _, _ = node
    operator = ShowMeClient("hostile_operator", NAMESPACE)
    started = threading.Event()
    deactivated: list[bool] = []

    def deactivate() -> None:
        started.wait(60)
        deactivated.append(operator.change_state("deactivate"))

    thread = threading.Thread(target=deactivate)
    thread.start()
    try:
        goal = to_goal(make_request("open", image=picture(4), video=True, num_steps=200))
        status, result = client.rollout(goal, lambda _feedback: started.set() or False, 120.0)
        thread.join(60)
        assert deactivated == [True]
        assert status == GoalStatus.STATUS_ABORTED
        assert result.error_code.value == ErrorCode.STOPPED
        assert result.message.startswith("stopped by deactivation")
    finally:
        assert operator.change_state("activate")
        operator.close()
    served_image_request(client)


@pytest.mark.parametrize("scale", [float(np.finfo(np.float32).max), 1e6, 100.5, -1.0])
def test_guidance_beyond_the_parameter_bounds_is_refused(node, scale):
    client, _, _ = node
    response = client.predict(make_request("push", image=picture(5), guidance_scale=scale))
    assert not response.success and response.error_code.value == ErrorCode.INVALID_REQUEST
    assert "guidance_scale" in response.message and response.predictions == []


def test_a_huge_png_is_refused_from_its_header_without_decoding(node):
    client, process, _ = node
    request = make_request("push")
    msg = CompressedImage(header=header(1, "cam"), format="png")
    msg.data = bilevel_png(16384)
    publisher = client.publisher(CompressedImage, COMPRESSED_TOPIC)
    rss_before = psutil.Process(process.pid).memory_info().rss
    for _ in range(3):
        publisher.publish(msg)
        time.sleep(0.3)
        response = client.predict(request)
        assert not response.success
        if response.error_code.value == ErrorCode.BAD_IMAGE:
            break
    assert response.error_code.value == ErrorCode.BAD_IMAGE, response.message
    assert "16384x16384" in response.message and COMPRESSED_TOPIC in response.message
    growth = psutil.Process(process.pid).memory_info().rss - rss_before
    assert growth < 100 * 2**20, growth  # decoding would take 268 MB, its RGB copy 805 MB


@pytest.mark.parametrize(
    ("data", "fmt", "words"),
    [
        (cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "", "TIFF"),
        (cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "tiff", "JPEG or PNG"),
        (cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "png", "says PNG"),
        (PNG16, "16UC1; compressedDepth", "JPEG or PNG"),
    ],
)
def test_undeclared_or_mismatched_formats_are_refused(node, data, fmt, words):
    client, _, _ = node
    publisher = client.publisher(CompressedImage, COMPRESSED_TOPIC)
    msg = CompressedImage(header=header(1, "cam"), format=fmt)
    msg.data = data
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while True:
        publisher.publish(msg)
        time.sleep(0.2)
        response = client.predict(make_request("push"))
        if response.error_code.value == ErrorCode.BAD_IMAGE or time.monotonic() > deadline:
            break
    assert response.error_code.value == ErrorCode.BAD_IMAGE, response.message
    assert words in response.message and f"bad image on {COMPRESSED_TOPIC}" in response.message


def test_a_huge_frame_id_is_refused(node):
    client, _, _ = node
    request = make_request("push", image=picture(6), header=header(1, "x" * 1_000_000))
    response = client.predict(request)
    assert response.error_code.value == ErrorCode.INVALID_REQUEST
    assert "limits.max_frame_id_length" in response.message and len(response.message) < 500


def test_a_stale_camera_frame_is_refused_and_reported(node):
    client, _, _ = node
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while True:  # a fresh frame first
        client.publish_inputs(picture(7), header(1, "cam"), "push", IMAGE_TOPIC, TEXT_TOPIC)
        time.sleep(0.2)
        response = client.predict(make_request("push"))
        if response.success or time.monotonic() > deadline:
            break
    assert response.success, response.message
    assert client.set_parameters({"limits.max_frame_age": 0.5}) == []
    try:
        time.sleep(1.0)
        response = client.predict(make_request("push"))
        assert response.error_code.value == ErrorCode.STALE_FRAME
        assert IMAGE_TOPIC in response.message and "limits.max_frame_age" in response.message
        _, values = diagnostics(client)
        assert values["frames_stale"] == "true" and float(values["newest_frame_age_s"]) > 0.5
    finally:
        assert client.set_parameters({"limits.max_frame_age": 5.0}) == []


def test_an_unset_seed_means_a_random_one(node):
    client, _, _ = node
    seeds = set()
    for _ in range(2):
        response = client.predict(make_request("push", image=picture(8)))
        assert response.success, response.message
        seeds.add(response.predictions[0].seed)
    assert len(seeds) == 2 and 0 not in seeds
    fixed = client.predict(make_request("push", image=picture(8), seed=5))
    assert fixed.predictions[0].seed == 5


def test_instructions_are_subscribed_reliably(node):
    client, _, _ = node
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    infos = []
    while not infos and time.monotonic() < deadline:
        infos = client.node.get_subscriptions_info_by_topic(TEXT_TOPIC)
        time.sleep(0.1)
    assert infos and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)


def test_action_results_outlive_ten_seconds(node):
    client, _, _ = node
    goal = to_goal(make_request("open", image=picture(9)))
    sent = client.action_client.send_goal_async(goal)
    client.executor.spin_until_future_complete(sent, timeout_sec=60)
    handle = sent.result()
    first = handle.get_result_async()
    client.executor.spin_until_future_complete(first, timeout_sec=60)
    assert first.result().status == GoalStatus.STATUS_SUCCEEDED
    time.sleep(11.0)
    again = handle.get_result_async()
    client.executor.spin_until_future_complete(again, timeout_sec=30)
    assert again.done() and again.result().status == GoalStatus.STATUS_SUCCEEDED


def test_diagnostics_warn_when_failures_climb(node):
    client, _, _ = node
    for _ in range(3):
        served_image_request(client)
    level, _ = diagnostics(client)
    for _ in range(8):
        response = client.predict(make_request("push", image=picture(1), mode=9))
        assert response.error_code.value == ErrorCode.INVALID_REQUEST
    level, values = diagnostics(client)
    assert level == DiagnosticStatus.WARN
    assert int(values["requests_failed_invalid_request"]) >= 8
