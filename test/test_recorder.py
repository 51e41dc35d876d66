"""McapRecorder: live rclpy topics (camera, instruction, goal image, rollout frames and the
package's PredictedRollout) go into an MCAP file that rosbags reads back, schemas included."""

import threading
import time

import numpy as np
import pytest
import rclpy
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.executors import SingleThreadedExecutor
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image
from std_msgs.msg import String

from showme_ros.image_conversion import rgb_to_image
from showme_ros.msg import PredictedRollout
from showme_ros.recorder import McapRecorder, record

from .ros_testing import DISCOVERY_TIMEOUT_S

TOPICS = {
    "/cam/image_raw": "sensor_msgs/msg/Image",
    "/cam/instruction": "std_msgs/msg/String",
    "/showme/goal_image": "sensor_msgs/msg/Image",
    "/showme/rollout_frames": "sensor_msgs/msg/Image",
    "/showme/rollout": "showme_ros/msg/PredictedRollout",
}


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def picture(value, size=(6, 8)):
    return np.full((*size, 3), value, np.uint8)


def publish_until_matched(node, publishers, timeout=DISCOVERY_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while any(p.get_subscription_count() == 0 for p in publishers.values()):
        assert time.monotonic() < deadline, "the recorder's subscriptions never matched"
        time.sleep(0.05)


def publish_all(publishers):
    publishers["/cam/image_raw"].publish(rgb_to_image(picture(10)))
    publishers["/cam/instruction"].publish(String(data="open the drawer"))
    publishers["/showme/goal_image"].publish(rgb_to_image(picture(20)))
    for k in range(3):
        publishers["/showme/rollout_frames"].publish(rgb_to_image(picture(30 + k)))
    rollout = PredictedRollout(instruction="open the drawer", mode=PredictedRollout.MODE_ROLLOUT)
    rollout.frames = [rgb_to_image(picture(30 + k)) for k in range(3)]
    publishers["/showme/rollout"].publish(rollout)


def read_back(path):
    with AnyReader([path]) as reader:
        messages = {}
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            messages.setdefault(connection.topic, []).append(msg)
        types = {c.topic: c.msgtype for c in reader.connections}
    return types, messages


def make_publishers(node):
    classes = {"sensor_msgs/msg/Image": Image, "std_msgs/msg/String": String}
    classes["showme_ros/msg/PredictedRollout"] = PredictedRollout
    return {topic: node.create_publisher(classes[t], topic, 10) for topic, t in TOPICS.items()}


def test_recorded_topics_read_back_with_their_types(ros, tmp_path):
    source, sink = rclpy.create_node("source"), rclpy.create_node("recorder")
    executor = SingleThreadedExecutor()
    executor.add_node(sink)
    publishers = make_publishers(source)
    path = tmp_path / "recording"
    try:
        with McapRecorder(sink, path, TOPICS) as recorder:
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            publish_until_matched(source, publishers)
            publish_all(publishers)
            deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
            while sum(recorder.counts.values()) < 7 and time.monotonic() < deadline:
                time.sleep(0.05)
        counts = recorder.counts
    finally:
        executor.shutdown()
        source.destroy_node()
        sink.destroy_node()
    assert counts == {t: 3 if t == "/showme/rollout_frames" else 1 for t in TOPICS}
    assert recorder.mcap_file.is_file()

    types, messages = read_back(path)
    assert types == TOPICS
    assert messages["/cam/instruction"][0].data == "open the drawer"
    frames = messages["/showme/rollout_frames"]
    assert [bytes(f.data)[0] for f in frames] == [30, 31, 32]
    assert (frames[0].height, frames[0].width, frames[0].encoding) == (6, 8, "rgb8")
    rollout = messages["/showme/rollout"][0]
    assert rollout.instruction == "open the drawer" and rollout.mode == 1
    assert [bytes(f.data)[0] for f in rollout.frames] == [30, 31, 32]

    # The MCAP reader and ros2msg decoder of the MCAP project (the format Foxglove reads).
    with recorder.mcap_file.open("rb") as f:
        decoded = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages())
    by_topic = {channel.topic: (schema, msg) for schema, channel, _, msg in decoded}
    assert {t: s.encoding for t, (s, _) in by_topic.items()} == dict.fromkeys(TOPICS, "ros2msg")
    schema, rollout = by_topic["/showme/rollout"]
    assert schema.name == "showme_ros/msg/PredictedRollout"
    assert rollout.instruction == "open the drawer" and len(rollout.frames) == 3


def test_record_spins_for_a_duration(ros, tmp_path):
    source, sink = rclpy.create_node("source2"), rclpy.create_node("recorder2")
    topic = {"/cam/instruction": "std_msgs/msg/String"}
    publisher = source.create_publisher(String, "/cam/instruction", 10)

    def publish():
        publish_until_matched(source, {"x": publisher})
        for text in ("a", "b"):
            publisher.publish(String(data=text))

    thread = threading.Thread(target=publish)
    try:
        thread.start()
        counts = record(sink, topic, tmp_path / "rec", duration=3.0)
        thread.join()
    finally:
        source.destroy_node()
        sink.destroy_node()
    assert counts == {"/cam/instruction": 2}
    _, messages = read_back(tmp_path / "rec")
    assert [m.data for m in messages["/cam/instruction"]] == ["a", "b"]


def test_refuses_an_existing_folder_and_no_topics(ros, tmp_path):
    node = rclpy.create_node("recorder3")
    try:
        with pytest.raises(ValueError, match="no topics"):
            McapRecorder(node, tmp_path / "x", {})
        (tmp_path / "exists").mkdir()
        with pytest.raises(Exception, match="exists"):
            McapRecorder(node, tmp_path / "exists", {"/a": "std_msgs/msg/String"}).start()
    finally:
        node.destroy_node()


def test_a_recording_converts_to_training_clips(ros, tmp_path):
    """A robot without ros2 bag records with McapRecorder; showme-data rosbag reads the result."""
    from training.data.manifest import read_manifest
    from training.data.rosbag import convert_rosbags

    source, sink = rclpy.create_node("camera"), rclpy.create_node("recorder4")
    executor = SingleThreadedExecutor()
    executor.add_node(sink)
    publishers = make_publishers(source)
    topics = {t: TOPICS[t] for t in ("/cam/image_raw", "/cam/instruction")}
    try:
        with McapRecorder(sink, tmp_path / "episode", topics) as recorder:
            threading.Thread(target=executor.spin, daemon=True).start()
            publish_until_matched(source, {t: publishers[t] for t in topics})
            publishers["/cam/instruction"].publish(String(data="open the drawer"))
            time.sleep(0.2)  # the instruction's receive time comes before the frames'
            for k in range(20):
                publishers["/cam/image_raw"].publish(rgb_to_image(picture(k)))
                time.sleep(0.02)
            deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
            while sum(recorder.counts.values()) < 21 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        executor.shutdown()
        source.destroy_node()
        sink.destroy_node()
    report = convert_rosbags(
        [tmp_path / "episode"], tmp_path / "data", "/cam/image_raw", "/cam/instruction"
    )
    assert (report.camera_messages, report.clips) == (20, 1)
    clip = read_manifest(tmp_path / "data" / "manifest.jsonl")[0]
    frames = np.load(tmp_path / "data" / clip.path)["frames"]
    assert clip.instruction == "open the drawer" and frames.shape == (16, 6, 8, 3)
    assert frames[0, 0, 0, 0] == 0 and frames[-1, 0, 0, 0] == 19
