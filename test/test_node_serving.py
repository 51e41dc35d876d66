"""The node, started as the launch file starts it, serves real rclpy clients in this process."""

import math
import threading
import time

import cv2
import psutil
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from showme_ros.client import ShowMeClient, make_request, to_goal
from showme_ros.image_conversion import image_to_rgb
from showme_ros.msg import ErrorCode, PredictedRollout

from .node_testing import START_TIMEOUT_S, header, picture, start_node, stop_node
from .ros_testing import DISCOVERY_TIMEOUT_S

IMAGE_TOPIC, TEXT_TOPIC = "/cam/image_raw", "/cam/instruction"
STEPS, FRAMES = 2, 3
# Test overrides on top of the launch file's command line (a user's -p works the same way).
OVERRIDES = [f"inference.num_steps:={STEPS}", f"inference.num_frames:={FRAMES}", "queue_size:=1"]


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="module")
def served(ros, tmp_path_factory):
    """A running node with its default model (the shipped one) and a client."""
    tmp = tmp_path_factory.mktemp("node")
    args = {"image_topic": IMAGE_TOPIC, "instruction_topic": TEXT_TOPIC, "device": "cpu"}
    process, log = start_node(tmp, args, OVERRIDES)
    client = ShowMeClient("test_client")
    try:
        assert client.wait_until_active(START_TIMEOUT_S), log.read_text()[-3000:]
        yield client, process, log
        assert stop_node(process) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        client.close()


def with_raw_image(image: Image):
    request = make_request("push")
    request.image = image
    return request


def expect_failure(client: ShowMeClient, request, words: str) -> None:
    response = client.predict(request)
    assert not response.success and words in response.message, response.message
    assert response.predictions == []


def test_node_serves_the_shipped_model_by_default(served):
    _, _, log = served
    text = log.read_text()
    assert "showme-metaworld-64" in text
    assert "tiny RANDOM model" not in text


def test_bad_requests_fail_clearly_and_the_node_keeps_serving(served):
    client, process, _ = served
    good = picture(0)
    too_long = Image(height=8, width=8, encoding="rgb8", step=24)
    too_long.data = bytes(8 * 24 + 1)
    odd_encoding = Image(height=8, width=8, encoding="yuv9", step=24)
    odd_encoding.data = bytes(8 * 24)
    empty_data = Image(height=8, width=8, encoding="rgb8", step=24)
    zero = Image(height=0, width=0, encoding="rgb8", step=0)
    zero.data = bytes(3)
    huge = Image(height=20000, width=20000, encoding="rgb8", step=60000)
    cases = [
        (make_request("push"), "no image"),  # nothing in the request, nothing on the topic
        (with_raw_image(empty_data), "0 bytes"),
        (with_raw_image(too_long), "height x step"),
        (with_raw_image(odd_encoding), "unsupported encoding"),
        (with_raw_image(zero), "zero size"),
        (with_raw_image(huge), "largest accepted side"),
        (make_request("", image=good), "no instruction"),
        (make_request("x" * 100_000, image=good), "100000 characters"),
        (make_request("push", image=good, video=True, num_frames=99), "num_frames=99 exceeds"),
        (make_request("push", image=good, num_steps=10000), "num_inference_steps must be"),
        (make_request("push", image=good, guidance_scale=math.nan), "finite"),
        (make_request("push", image=good, candidates=["pull"] * 64), "64 candidates"),
        (make_request("push", image=good, candidates=[" "]), "candidate 0 is empty"),
        (make_request("push", image=good, mode=7), "unknown mode"),
    ]
    for request, words in cases:
        expect_failure(client, request, words)
        assert process.poll() is None
    assert client.predict(make_request("push", image=good)).success


def test_service_image_and_video_modes_copy_the_conditioning_header(served):
    client, _, _ = served
    stamp = header(1700, "camera_optical")
    client.publish_inputs(picture(1), stamp, "open the drawer", IMAGE_TOPIC, TEXT_TOPIC)
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while True:  # the frame and instruction travel best-effort: wait until the node has them
        response = client.predict(make_request(num_steps=0))
        if response.success or time.monotonic() > deadline:
            break
        client.publish_inputs(picture(1), stamp, "open the drawer", IMAGE_TOPIC, TEXT_TOPIC)
        time.sleep(0.2)
    assert response.success, response.message
    (goal,) = response.predictions
    assert (goal.header.stamp.sec, goal.header.stamp.nanosec) == (1700, 123)
    assert goal.header.frame_id == "camera_optical" == goal.frames[0].header.frame_id
    assert goal.instruction == "open the drawer" and goal.mode == PredictedRollout.MODE_GOAL_IMAGE
    assert len(goal.frames) == 1 and goal.frames[0].encoding == "rgb8"
    assert len(goal.frames[0].data) == goal.frames[0].height * goal.frames[0].step > 0

    request = make_request(
        "lift the cup", image=picture(2), header=header(5, "wrist"), video=True, seed=7
    )
    request.candidates = ["push the cup", "do nothing"]
    response = client.predict(request)
    assert response.success, response.message
    assert [p.instruction for p in response.predictions] == [
        "lift the cup",
        "push the cup",
        "do nothing",
    ]
    for index, rollout in enumerate(response.predictions):
        assert rollout.header.frame_id == "wrist" and rollout.header.stamp.sec == 5
        assert rollout.mode == PredictedRollout.MODE_ROLLOUT and rollout.seed == 7 + index
        assert len(rollout.frames) == len(rollout.frame_offsets) == FRAMES
        offsets = [d.sec + d.nanosec * 1e-9 for d in rollout.frame_offsets]
        assert offsets == sorted(offsets) and offsets[1] > 0
    first = [bytes(f.data) for f in response.predictions[0].frames]
    assert first != [bytes(f.data) for f in response.predictions[1].frames]


def test_compressed_camera_frames_are_used_too(served):
    client, _, _ = served
    _, png = cv2.imencode(".png", picture(9))
    frame = CompressedImage(header=header(4242, "compressed_cam"), format="png")
    frame.data = png.tobytes()
    publisher = client.publisher(CompressedImage, "/showme/image/compressed")
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while True:
        publisher.publish(frame)
        time.sleep(0.2)
        response = client.predict(make_request("open"))
        stamp = response.predictions[0].header.stamp.sec if response.success else None
        if stamp == 4242 or time.monotonic() > deadline:
            break
    assert response.success and stamp == 4242, response.message
    assert response.predictions[0].header.frame_id == "compressed_cam"


def test_action_sends_feedback_every_step_and_copies_the_header(served):
    client, _, _ = served
    steps = []

    def on_feedback(feedback) -> bool:
        steps.append((feedback.step, feedback.total_steps))
        return False

    goal = to_goal(make_request("open", image=picture(3), header=header(9, "cam"), video=True))
    goal.num_steps = 3
    status, result = client.rollout(goal, on_feedback)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.success, result.message
    assert steps == [(1, 3), (2, 3), (3, 3)]
    (rollout,) = result.predictions
    assert rollout.header.frame_id == "cam" and len(rollout.frames) == FRAMES


def test_cancel_stops_the_rollout_within_one_denoising_step(served):
    client, _, _ = served
    seen: list[tuple[int, float]] = []

    def on_feedback(feedback) -> bool:
        seen.append((feedback.step, feedback.elapsed_seconds))
        return feedback.step >= 2

    goal = to_goal(make_request("open", image=picture(4), video=True, num_steps=200))
    started = time.monotonic()
    status, result = client.rollout(goal, on_feedback)
    assert status == GoalStatus.STATUS_CANCELED, result.message
    assert not result.success and "cancelled after step" in result.message
    stopped_at = int(result.message.split("after step ")[1].split()[0])
    # Cancel was requested when step 2's feedback arrived; the sampler checks after each step.
    assert stopped_at <= 4, (stopped_at, seen)
    assert time.monotonic() - started < 60


def test_concurrent_clients_all_get_answers(served):
    _, process, _ = served
    answers: list[tuple[bool, str]] = []
    errors: list[BaseException] = []
    rss_start = psutil.Process(process.pid).memory_info().rss

    def worker(index: int) -> None:
        client = ShowMeClient(f"load_client_{index}")
        try:
            end = time.monotonic() + 6.0
            while time.monotonic() < end:
                response = client.predict(make_request("push", image=picture(index)), 60.0)
                answers.append((response.success, response.error_code.value))
        except BaseException as error:
            errors.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert process.poll() is None
    assert any(ok for ok, _ in answers)
    assert all(ok or code == ErrorCode.BUSY for ok, code in answers), answers
    rss_end = psutil.Process(process.pid).memory_info().rss
    assert rss_end < rss_start + 300 * 2**20, (rss_start, rss_end)


def test_continuous_mode_publishes_goal_image_and_rollout(served):
    client, _, _ = served
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    goals, rollouts = [], []
    client.node.create_subscription(Image, "/showme/goal_image", goals.append, latched)
    client.node.create_subscription(PredictedRollout, "/showme/rollout", rollouts.append, latched)
    assert client.set_parameters({"continuous.enabled": True}) == []
    try:
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S + 30
        while not (goals and rollouts) and time.monotonic() < deadline:
            client.publish_inputs(picture(5), header(77, "head"), "wave", IMAGE_TOPIC, TEXT_TOPIC)
            end = time.monotonic() + 1.0
            while time.monotonic() < end and not (goals and rollouts):
                client.executor.spin_once(timeout_sec=0.05)
    finally:
        assert client.set_parameters({"continuous.enabled": False}) == []
    assert goals and rollouts
    assert goals[-1].header.frame_id == "head" and goals[-1].header.stamp.sec == 77
    assert rollouts[-1].instruction == "wave" and len(rollouts[-1].frames) == 1
    assert client.set_parameters({"continuous.mode": "sideways"})  # refused, with a reason


def test_diagnostics_report_model_and_counters(served):
    client, _, _ = served
    # Its own traffic, so the counts hold whichever tests ran before.
    client.publish_inputs(picture(7), header(3, "cam"), "push", IMAGE_TOPIC, TEXT_TOPIC)
    assert client.predict(make_request("push", image=picture(7))).success
    assert not client.predict(make_request("push", image=picture(7), mode=9)).success
    received: list[DiagnosticArray] = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", received.append, 10)
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while not received and time.monotonic() < deadline:
        client.executor.spin_once(timeout_sec=0.1)
    assert received
    (status,) = received[-1].status
    values = {kv.key: kv.value for kv in status.values}
    assert "predictor" in status.name and values["model_loaded"] == "true"
    assert values["device"] == "cpu" and values["dtype"] == "float32"
    assert int(values["requests_served"]) >= 1 and int(values["requests_failed"]) >= 1
    assert int(values["requests_failed_invalid_request"]) >= 1
    assert int(values["frames_received"]) >= 1 and int(values["process_memory_bytes"]) > 0
    assert float(values["mean_latency_s"]) > 0


def test_deactivate_frees_and_activate_reloads(served):
    client, process, _ = served
    request = make_request("push", image=picture(6))
    for _ in range(2):
        assert client.change_state("deactivate")
        response = client.predict(request)
        assert not response.success and "not active" in response.message
        assert client.change_state("activate")
        assert client.predict(request).success
    assert process.poll() is None


@pytest.mark.parametrize("broken", ["missing", "not_a_model"])
def test_a_missing_or_broken_model_fails_activation_with_the_reason(ros, tmp_path, broken):
    folder = tmp_path / "model"
    if broken == "not_a_model":
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"junk")
    namespace = f"showme_{broken}"
    process, log = start_node(tmp_path, {"model_path": str(folder), "namespace": namespace}, [])
    client = ShowMeClient(f"test_client_{broken}", f"/{namespace}")
    try:
        response = client.predict(make_request("push", image=picture(0)), START_TIMEOUT_S)
        assert not response.success and "not active" in response.message
        reason = "model folder not found" if broken == "missing" else "no model_index.json"
        assert reason in response.message and str(folder) in response.message
        assert process.poll() is None
        assert reason in log.read_text()
    finally:
        client.close()
        stop_node(process)


def test_predictions_overlay_the_camera_image_and_show_on_the_debug_topics(served):
    client, _, _ = served
    stream = QoSProfile(depth=32, reliability=ReliabilityPolicy.RELIABLE)
    shown: list[Image] = []
    goals: list[Image] = []
    client.node.create_subscription(
        Image, "/showme/predictions/rollout_frames", shown.append, stream
    )
    client.node.create_subscription(Image, "/showme/predictions/goal_image", goals.append, stream)
    image = picture(11)  # 48x64: the model (square) sees the centred 48x48 region
    request = make_request("open", image=image, header=header(20, "cam"), video=True, seed=3)
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    while len(shown) < FRAMES and time.monotonic() < deadline:
        shown.clear()
        response = client.predict(request)
        end = time.monotonic() + 1.0
        while time.monotonic() < end and len(shown) < FRAMES:
            client.executor.spin_once(timeout_sec=0.05)
    assert response.success, response.message
    (rollout,) = response.predictions
    crop = rollout.crop
    assert (crop.x_offset, crop.y_offset, crop.width, crop.height) == (8, 0, 48, 48)
    for frame in rollout.frames:
        rgb = image_to_rgb(frame)
        assert rgb.shape == image.shape
        assert (rgb[:, :8] == image[:, :8]).all() and (rgb[:, 56:] == image[:, 56:]).all()
    stamps = [f.header.stamp.sec + f.header.stamp.nanosec * 1e-9 for f in rollout.frames]
    assert stamps == pytest.approx([20.000000123 + 0.1 * k for k in range(FRAMES)])
    assert [bytes(f.data) for f in shown[-FRAMES:]] == [bytes(f.data) for f in rollout.frames]
    assert client.predict(make_request("open", image=image)).success
    end = time.monotonic() + DISCOVERY_TIMEOUT_S
    while not goals and time.monotonic() < end:
        client.executor.spin_once(timeout_sec=0.05)
    assert goals and goals[-1].height == 48 and goals[-1].width == 64
